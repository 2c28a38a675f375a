-- status: an account's state, after applying a due expiry and monthly rollover.
-- KEYS[1] account state   KEYS[2] bucket outbox
-- ARGV[1] account  ARGV[2] now ms or ''  ARGV[3] tiers
-- Returns {'missing'} or describe() with status 'ok'.
local account = ARGV[1]
local now = now_ms(ARGV[2])
local tiers = parse_tiers(ARGV[3])
local a = load(KEYS[1])
if not a then
  return { 'missing' }
end
if apply_due(KEYS[2], account, a, now, tiers) then
  save(KEYS[1], a)
end
return describe('ok', a, now, tiers)
