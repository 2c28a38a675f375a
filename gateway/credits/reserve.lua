-- reserve: hold `cost` credits for one request, deciding credits and rate together, the
-- account's and its API key's own limits alike: all or nothing, in the account's slot.
-- Appends nothing to the outbox: the held credits move from plan / bonus to hp / hb, and the
-- settle or refund that closes the reservation emits the one event saying what it held.
-- KEYS[1] account state   KEYS[2] reservation   KEYS[3] bucket deadlines   KEYS[4] bucket outbox
-- KEYS[5] the account's key hash (the keys' own spend and rate; common.lua)
-- ARGV[1] account  ARGV[2] request id  ARGV[3] cost  ARGV[4] tiers
-- ARGV[5] ms until the reservation's deadline (it lives until settled, refunded or reaped)
-- ARGV[6] the API key's id ('': none)   ARGV[7] the route prefix (both for the ledger)
-- From ARGV[8] on, each may be left out when it and all after it are '' (every argument
-- costs Redis a little on every call): ARGV[8] now ms or ''
-- ARGV[9] ms the request id is remembered once settled ('': the settle's or refund's own)
-- ARGV[10] the least credits to hold ('': exactly `cost`): a metered request holds `cost`, its
--   upper bound, or all the account (and its key's limit) allows when that is less but at
--   least ARGV[10]
-- ARGV[11] the key's credit limit per period ('': none)   ARGV[12] its requests per minute ('')
-- ARGV[13] when the key expires, ms ('': never)
-- ARGV[14] the request's path   ARGV[15] the path prefixes the key may call, one per line
--   ('': every path)
-- Returns {'missing'} when the account is not in Redis, else describe() followed by
--   [14] rate remaining  [15] ms until the rate quota is full again, or until a call would pass
--   [16] reservation state ('held', 'charged', 'refunded'; '' when nothing was held)
--   [17] the credits held (0 when nothing was held)
--   [18] the key's credits left in the period (-1: no limit)
--   [19] the key's rate remaining (-1: no limit)  [20] ms until the key's quota is full again,
--   or until its next call would pass
-- with status 'ok', 'duplicate' (the request id was seen: nothing new is held),
-- 'insufficient' or 'rate_limited' (the account's), 'key_credit_limit' or 'key_rate_limited'
-- (the key's), 'key_expired' or 'route_not_allowed' (nothing held, no rate used by any).
local account, rid, cost = ARGV[1], ARGV[2], ARGV[3] + 0
local asked = cost
local now = now_ms(ARGV[8])
local tiers = parse_tiers(ARGV[4])
local a = load(KEYS[1])
if not a then
  return { 'missing' }
end
local changed = apply_due(KEYS[4], account, a, now, tiers)
local rpm = rules(tiers, a.tier).rpm
local kid = ARGV[6] or ''
local klimit, krpm = tonumber(ARGV[11] or ''), tonumber(ARGV[12] or '') or 0

local held, debt, kdebt, kspent = 0, 0, 0, 0
local wait, kwait = nil, nil  -- a refusal for rate: ms until a call would pass

debt = gcra_debt(a.rl, a.rn, a.rr, rpm, now)
local k = nil  -- the key's fields, when it has a limit to count against
if kid ~= '' and (klimit or krpm > 0) then
  local f = redis.call('HMGET', KEYS[5], kid .. '|s', kid .. '|p', kid .. '|l', kid .. '|n',
    kid .. '|r')
  k = { p = tonumber(f[2] or ''), l = tonumber(f[3] or '0'), n = tonumber(f[4] or '0'),
        r = tonumber(f[5] or '0') }
  if k.p == a.pe then
    kspent = tonumber(f[1])
  end
  kdebt = gcra_debt(k.l, k.n, k.r, krpm, now)
end

-- One way out (a `break` from this block): the answer is made once, at the end. A function
-- answering from the script's locals was a closure over a dozen of them, made on every call.
local status, state = 'ok', 'held'
repeat
  -- The key's standing rules first: an expired key or a path it may not call holds nothing.
  local expires = tonumber(ARGV[13] or '')
  if expires and now >= expires then
    status, state = 'key_expired', ''
    break
  end
  if ARGV[15] ~= nil and ARGV[15] ~= '' then
    local path, allowed = ARGV[14], false
    for prefix in string.gmatch(ARGV[15], '[^\n]+') do
      local n = #prefix
      if prefix == '/' or path == prefix or (string.sub(path, 1, n) == prefix
          and string.sub(path, n + 1, n + 1) == '/') then
        allowed = true
        break
      end
    end
    if not allowed then
      status, state = 'route_not_allowed', ''
      break
    end
  end

  local can = a.plan + a.bonus
  if klimit then
    can = math.min(can, math.max(0, klimit - kspent))
  end
  local least = tonumber(ARGV[10] or '')
  if least and can < cost and can >= least then
    cost = can  -- metered: hold what the account and key allow; the charge cannot pass it
  end
  if a.plan + a.bonus < cost then
    status, state = 'insufficient', ''
    break
  end
  if klimit and klimit - kspent < cost then
    status, state = 'key_credit_limit', ''
    break
  end
  if not gcra_admits(debt, rpm) then
    wait = gcra_ms(debt + 60000 - 60000 * rpm, rpm)
    status, state = 'rate_limited', ''
    break
  end
  if not gcra_admits(kdebt, krpm) then
    kwait = gcra_ms(kdebt + 60000 - 60000 * krpm, krpm)
    status, state = 'key_rate_limited', ''
    break
  end

  local from_plan = math.min(a.plan, cost)
  local from_bonus = cost - from_plan
  local deadline = now + ARGV[5]
  local r = { pp = from_plan, bp = from_bonus, dl = deadline, k = kid, rt = ARGV[7] or '',
    kp = 0 }
  if ARGV[9] ~= nil and ARGV[9] ~= '' then
    -- Kept with the reservation, so whoever settles it (the proxy, the reaper) keeps the id
    -- as long: an Idempotency-Key must not be reusable a minute after a reaped refund.
    r.ret = ARGV[9] + 0
  end
  if k and klimit then
    -- what the settle or refund gives back to the key's spend, in that period only
    r.kc, r.kp = cost, a.pe
  end
  -- The request id is new, or this is a retry of it: the reservation is written only if
  -- there is none, before anything else is.
  if not redis.call('SET', KEYS[2], pack_hold(r, 'h'), 'NX') then
    status, state = 'duplicate', read_hold(KEYS[2]).st
    break
  end
  a.plan = a.plan - from_plan
  a.bonus = a.bonus - from_bonus
  if rpm > 0 then
    a.rl, a.rn = gcra_take(debt, rpm, now)
    a.rr = rpm
    debt = debt + 60000
  end
  a.hp = a.hp + from_plan
  a.hb = a.hb + from_bonus
  if k then
    local kf = {}
    if klimit then
      kspent = kspent + cost
      kf[#kf + 1], kf[#kf + 2] = kid .. '|s', kspent
      kf[#kf + 1], kf[#kf + 2] = kid .. '|p', a.pe
    end
    if krpm > 0 then
      local l, n = gcra_take(kdebt, krpm, now)
      kdebt = kdebt + 60000
      kf[#kf + 1], kf[#kf + 2] = kid .. '|l', l
      kf[#kf + 1], kf[#kf + 2] = kid .. '|n', n
      kf[#kf + 1], kf[#kf + 2] = kid .. '|r', krpm
    end
    redis.call('HSET', KEYS[5], unpack(kf))
  end
  redis.call('ZADD', KEYS[3], deadline, account .. '|' .. rid)
  changed = true
  held = cost
until true
if state == '' and status ~= 'key_expired' and status ~= 'route_not_allowed' then
  -- Refused for credits or rate: a retry of a request id seen before is told so instead,
  -- with nothing changed (as when its reservation was found in the way above).
  local prior = read_hold(KEYS[2])
  if prior then
    status, state, wait, kwait = 'duplicate', prior.st, nil, nil
  end
end
if changed then
  save(KEYS[1], a)
end
return describe(status, a, now, tiers, wait and 0 or gcra_left(debt, rpm),
  wait or gcra_ms(debt, rpm), state, held, klimit and math.max(0, klimit - kspent) or -1,
  kwait and 0 or gcra_left(kdebt, krpm), kwait or gcra_ms(kdebt, krpm))
