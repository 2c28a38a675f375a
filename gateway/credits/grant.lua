-- grant: add bonus credits (they do not reset monthly and are spent after plan credits).
-- KEYS[1] account state   KEYS[2] bucket outbox   KEYS[3] the request id's marker (once())
-- ARGV[1] account  ARGV[2] credits (> 0)  ARGV[3] reason  ARGV[4] request id (may be '')
-- ARGV[5] now ms or ''  ARGV[6] tiers
-- Returns {'missing'} or describe() with status 'granted' (a request id seen before: with
-- nothing granted again).
local account, credits = ARGV[1], tonumber(ARGV[2])
local now = now_ms(ARGV[5])
local tiers = parse_tiers(ARGV[6])
local a = load(KEYS[1])
if not a then
  return { 'missing' }
end
local changed = apply_due(KEYS[2], account, a, now, tiers)
if once(KEYS[3], ARGV[4]) then
  a.bonus = a.bonus + credits
  emit(KEYS[2], account, a, now, 'grant', 0, credits, 0, ARGV[4], ARGV[3])
  changed = true
end
if changed then
  save(KEYS[1], a)
end
return describe('granted', a, now, tiers)
