-- reserve: hold `cost` credits for one request, deciding credits and rate together.
-- Appends nothing to the outbox: the held credits move from plan / bonus to hp / hb, and the
-- settle or refund that closes the reservation emits the one event saying what it held.
-- KEYS[1] account state   KEYS[2] reservation   KEYS[3] bucket deadlines   KEYS[4] bucket outbox
-- ARGV[1] account  ARGV[2] request id  ARGV[3] cost  ARGV[4] now ms or ''  ARGV[5] tiers
-- ARGV[6] ms until the reservation's deadline (it lives until settled, refunded or reaped)
-- ARGV[7] ms the request id is remembered once settled ('': the settle's or refund's own)
-- ARGV[8] the least credits to hold ('': exactly `cost`): a metered request holds `cost`, its
--   upper bound, or all the account has when that is less but at least ARGV[8]
-- Returns {'missing'} when the account is not in Redis, else describe() followed by
--   [14] rate remaining  [15] ms until the rate quota is full again, or until a call would pass
--   [16] reservation state ('held', 'charged', 'refunded'; '' when nothing was held)
--   [17] the credits held (0 when nothing was held)
-- with status 'ok', 'duplicate' (the request id was seen: nothing new is held),
-- 'insufficient' or 'rate_limited' (nothing held, no rate used).
local account, rid, cost = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms(ARGV[4])
local tiers = parse_tiers(ARGV[5])
local a = load(KEYS[1])
if not a then
  return { 'missing' }
end
local changed = apply_due(KEYS[4], account, a, now, tiers)
local rpm = rules(tiers, a.tier).rpm

local held = 0
local function answer(status, remaining, wait, state)
  if changed then
    save(KEYS[1], a)
  end
  local out = describe(status, a, now, tiers)
  out[14] = remaining
  out[15] = math.ceil(wait)
  out[16] = state
  out[17] = held
  return out
end

-- GCRA: a burst of up to `rpm` calls, refilled at one per 60000/rpm ms. Counted exactly in
-- integer units of 1/rpm ms: `debt` is how far the theoretical arrival time is ahead of now.
-- A fraction kept under another rpm (the tier changed) rounds up to the next whole ms.
local window = 60000 * rpm
local debt = 0
if rpm > 0 then
  local tms, tn = a.rl, a.rn
  if a.rr ~= rpm then
    if tn > 0 then
      tms = tms + 1
    end
    tn = 0
  end
  if tms >= now then
    debt = (tms - now) * rpm + tn
  end
end
local function quota_left(d)
  if rpm == 0 then
    return -1
  end
  return math.max(0, math.floor((window - d) / 60000))
end
local function ms_of(d)
  if rpm == 0 then
    return 0
  end
  return math.ceil(d / rpm)
end

local prior = redis.call('HGET', KEYS[2], 'st')
if prior then
  return answer('duplicate', quota_left(debt), ms_of(debt), prior)
end

local least = tonumber(ARGV[8] or '')
if least and a.plan + a.bonus < cost and a.plan + a.bonus >= least then
  cost = a.plan + a.bonus  -- metered: hold what the account has; the charge cannot pass it
end
if a.plan + a.bonus < cost then
  return answer('insufficient', quota_left(debt), ms_of(debt), '')
end

if rpm > 0 and debt + 60000 > window then
  return answer('rate_limited', 0, ms_of(debt + 60000 - window), '')
end

local from_plan = math.min(a.plan, cost)
local from_bonus = cost - from_plan
a.plan = a.plan - from_plan
a.bonus = a.bonus - from_bonus
if rpm > 0 then
  debt = debt + 60000
  a.rl = now + math.floor(debt / rpm)
  a.rn = debt % rpm
  a.rr = rpm
end
a.hp = a.hp + from_plan
a.hb = a.hb + from_bonus
local deadline = now + tonumber(ARGV[6])
if ARGV[7] ~= nil and ARGV[7] ~= '' then
  -- Kept with the reservation, so whoever settles it (the proxy, the reaper) keeps the id
  -- as long: an Idempotency-Key must not be reusable a minute after a reaped refund.
  redis.call('HSET', KEYS[2], 'st', 'held', 'pp', from_plan, 'bp', from_bonus, 'dl', deadline,
    'ret', ARGV[7])
else
  redis.call('HSET', KEYS[2], 'st', 'held', 'pp', from_plan, 'bp', from_bonus, 'dl', deadline)
end
redis.call('ZADD', KEYS[3], deadline, account .. '|' .. rid)
if changed then
  save(KEYS[1], a)
  changed = false
else
  redis.call('HSET', KEYS[1], 'plan', a.plan, 'bonus', a.bonus, 'hp', a.hp, 'hb', a.hb,
    'rl', a.rl, 'rn', a.rn, 'rr', a.rr)
end
held = cost
return answer('ok', quota_left(debt), ms_of(debt), 'held')
