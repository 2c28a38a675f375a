-- open: create an account holding its tier's credits, unless it exists.
-- KEYS[1] account state   KEYS[2] bucket outbox
-- ARGV[1] account  ARGV[2] tier  ARGV[3] subscription months (0: open-ended)  ARGV[4] now ms or ''
-- ARGV[5] tiers  ARGV[6] reason  ARGV[7] request id (may be '')
-- Returns describe() with status 'opened', or 'exists' (nothing changes), or {'unknown_tier'}.
local account, tier, months = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms(ARGV[4])
local tiers = parse_tiers(ARGV[5])
local existing = load(KEYS[1])
if existing then
  return describe('exists', existing, now, tiers)
end
if not tier_of(tiers, tier) then
  return { 'unknown_tier' }
end
local paid = tier ~= 'free'
local a = {
  plan = tier_of(tiers, tier).credits, bonus = 0, tier = tier, sub = paid and 1 or 0,
  se = (paid and months > 0) and now + months * MONTH_MS or 0,
  pe = now + MONTH_MS, tt = 0, mt = 0, v = 0, hp = 0, hb = 0, rl = 0, rn = 0, rr = 0,
}
emit(KEYS[2], account, a, now, 'open', a.plan, 0, 0, ARGV[7] or '', ARGV[6])
save(KEYS[1], a)
return describe('opened', a, now, tiers)
