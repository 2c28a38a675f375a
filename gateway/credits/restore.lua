-- restore: load an account from the store of record, only if Redis does not have it.
-- Several replicas may race to restore the same account: the first wins, the rest see 'exists'.
-- The store counts credits held by open reservations as the account's (a reserve emits
-- nothing); the account's reservations still held in Redis are taken out of them again.
-- KEYS[1] account state   KEYS[2] bucket outbox   KEYS[3] bucket deadlines
-- ARGV[1] account  ARGV[2] now ms or ''  ARGV[3] tiers
-- ARGV[4..12] plan, bonus, tier, sub, se, pe, tt, mt, v (the store's snapshot)
-- ARGV[13] the account's reservation key without its request id
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
  v = tonumber(ARGV[12]), hp = 0, hb = 0, rl = 0, rn = 0, rr = 0,
}
local mine = account .. '|'
for _, member in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  if string.sub(member, 1, #mine) == mine then
    local r = read_hold(ARGV[13] .. string.sub(member, #mine + 1))
    if r and r.st == 'held' and not r.cost then  -- (cost: layout 1's, in the store already)
      a.hp = a.hp + r.pp
      a.hb = a.hb + r.bp
    end
  end
end
a.plan = a.plan - a.hp
a.bonus = a.bonus - a.hb
emit(KEYS[2], account, a, now, 'restore', 0, 0, 0, '', 'restored from the store of record')
save(KEYS[1], a)
return describe('restored', a, now, tiers)
