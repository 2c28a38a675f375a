-- restore: load an account from the store of record, only if Redis does not have it.
-- Several replicas may race to restore the same account: the first wins, the rest see 'exists'.
-- KEYS[1] account state   KEYS[2] bucket outbox
-- ARGV[1] account  ARGV[2] now ms or ''  ARGV[3] tiers
-- ARGV[4..12] plan, bonus, tier, sub, se, pe, tt, mt, v (the store's snapshot)
-- Returns describe() with status 'restored' or 'exists' (nothing changes).
local account = ARGV[1]
local now = now_ms(ARGV[2])
local tiers = parse_tiers(ARGV[3])
local existing = load(KEYS[1])
if existing then
  return describe('exists', existing, now, tiers)
end
local a = {
  plan = tonumber(ARGV[4]), bonus = tonumber(ARGV[5]), tier = ARGV[6], sub = tonumber(ARGV[7]),
  se = tonumber(ARGV[8]), pe = tonumber(ARGV[9]), tt = tonumber(ARGV[10]), mt = tonumber(ARGV[11]),
  v = tonumber(ARGV[12]), rl = 0, rn = 0, rr = 0,
}
emit(KEYS[2], account, a, now, 'restore', 0, 0, 0, '', 'restored from the store of record')
save(KEYS[1], a)
return describe('restored', a, now, tiers)
