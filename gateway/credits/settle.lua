-- settle: charge a held reservation (the backend answered 2xx) and count its tokens.
-- A due expiry and rollover apply first, so the tokens count in the period now running.
-- A metered request charges part of its hold (ARGV[7]) and gets the rest back in the same
-- call, as a 'refund' event before the 'charge': bonus credits first (the hold took plan
-- credits first), plan credits up to the tier's allowance, as a refund does.
-- KEYS[1] account state   KEYS[2] reservation   KEYS[3] bucket deadlines   KEYS[4] bucket outbox
-- ARGV[1] account  ARGV[2] request id  ARGV[3] tokens  ARGV[4] now ms or ''  ARGV[5] tiers
-- ARGV[6] ms the settled reservation is remembered, unless its reserve fixed that ('ret')
-- ARGV[7] the credits to charge, at most the hold ('': the whole hold)
-- Returns {'unknown'} when there is no such reservation, {'missing'} when the account is not
-- in Redis (the reservation stays as it is), else describe() with
-- status 'charged', or 'charged_before' / 'refunded_before' when it was settled already
-- (nothing changes), followed by [14] the credits charged (of a settle before: as it charged)
-- [15] the credits given back now (0 unless 'charged').
local account, rid, tokens = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms(ARGV[4])
local tiers = parse_tiers(ARGV[5])
local r = redis.call('HMGET', KEYS[2], 'st', 'cost', 'ret', 'pp', 'bp', 'chg')
local a = load(KEYS[1])
if not r[1] then
  return { 'unknown' }
end
if not a then
  return { 'missing' }  -- Redis lost the account: restore it, then settle again
end
local status = r[1] .. '_before'
local charged = tonumber(r[6] or r[2])
local back = 0
if r[1] == 'held' then
  status = 'charged'
  apply_due(KEYS[4], account, a, now, tiers)
  local cost = tonumber(r[2])
  charged = cost
  if ARGV[7] ~= nil and ARGV[7] ~= '' then
    charged = math.max(0, math.min(cost, tonumber(ARGV[7])))
  end
  if charged < cost then
    local to_bonus = math.min(tonumber(r[5]), cost - charged)
    local to_plan = math.min(cost - charged - to_bonus,
      math.max(0, rules(tiers, a.tier).credits - a.plan))
    a.plan = a.plan + to_plan
    a.bonus = a.bonus + to_bonus
    back = to_plan + to_bonus
    emit(KEYS[4], account, a, now, 'refund', to_plan, to_bonus, 0, rid, 'metered: unused hold')
  end
  a.tt = a.tt + tokens
  a.mt = a.mt + tokens
  redis.call('HSET', KEYS[2], 'st', 'charged', 'tok', tokens, 'chg', charged)
  redis.call('PEXPIRE', KEYS[2], tonumber(r[3] or ARGV[6]))
  redis.call('ZREM', KEYS[3], account .. '|' .. rid)
  emit(KEYS[4], account, a, now, 'charge', 0, 0, tokens, rid, '')
  save(KEYS[1], a)
end
local out = describe(status, a, now, tiers)
out[14] = charged
out[15] = back
return out
