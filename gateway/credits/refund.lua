-- refund: give a held reservation's credits back (the backend failed, or the reservation
-- passed its deadline). Plan credits return up to the tier's allowance; bonus credits in full.
-- A due expiry and rollover apply first, so the allowance is the one of the tier now in force.
-- KEYS[1] account state   KEYS[2] reservation   KEYS[3] bucket deadlines   KEYS[4] bucket outbox
-- ARGV[1] account  ARGV[2] request id  ARGV[3] reason  ARGV[4] now ms or ''  ARGV[5] tiers
-- ARGV[6] ms the settled reservation is remembered, unless its reserve fixed that ('ret')
-- Returns {'unknown'} when there is no such reservation, {'missing'} when the account is not
-- in Redis (nothing changes), else describe() with
-- status 'refunded', or 'charged_before' / 'refunded_before' (nothing changes), followed by
-- [14] the credits given back.
local account, rid = ARGV[1], ARGV[2]
local now = now_ms(ARGV[4])
local tiers = parse_tiers(ARGV[5])
local r = redis.call('HMGET', KEYS[2], 'st', 'pp', 'bp', 'ret')
local a = load(KEYS[1])
if not r[1] then
  redis.call('ZREM', KEYS[3], account .. '|' .. rid)
  return { 'unknown' }
end
if not a then
  -- Redis lost the account: the reservation stays held and indexed, for a refund after the
  -- account is restored (the store's snapshot still counts the hold as spent).
  return { 'missing' }
end
local status = r[1] .. '_before'
local back = 0
if r[1] == 'held' then
  status = 'refunded'
  apply_due(KEYS[4], account, a, now, tiers)
  local to_plan = math.min(tonumber(r[2]), math.max(0, rules(tiers, a.tier).credits - a.plan))
  local to_bonus = tonumber(r[3])
  a.plan = a.plan + to_plan
  a.bonus = a.bonus + to_bonus
  back = to_plan + to_bonus
  redis.call('HSET', KEYS[2], 'st', 'refunded')
  redis.call('PEXPIRE', KEYS[2], tonumber(r[4] or ARGV[6]))
  redis.call('ZREM', KEYS[3], account .. '|' .. rid)
  emit(KEYS[4], account, a, now, 'refund', to_plan, to_bonus, 0, rid, ARGV[3])
  save(KEYS[1], a)
end
local out = describe(status, a, now, tiers)
out[14] = back
return out
