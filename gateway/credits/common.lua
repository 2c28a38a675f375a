-- common.lua: the prelude prepended to every credit script (not a script itself).
--
-- Account state is one hash with these fields (integers unless said):
--   plan   plan credits          bonus  bonus credits (never reset)
--   tier   tier name (string)    sub    1 when subscribed
--   se     subscription end, ms since the epoch, 0: none
--   pe     end of the current monthly period, ms
--   tt     lifetime tokens       mt     tokens of the current period
--   v      version: with every event max(v + 1, now in us), so the store can tell newer from
--          older even after a failover lost the last writes (which sets v back): the next
--          event's version is above any it may have seen, on the clock of Redis TIME
--   hp hb  plan and bonus credits held by open reservations (taken from plan and bonus, not
--          yet charged or refunded: the store still counts them as the account's)
--   rl rn rr  the rate limiter's theoretical arrival time (GCRA), exactly rl + rn/rr ms:
--          integers, because a fractional ms in a float drifts and a burst of rpm calls would
--          lose its last call (rr is the rpm the fraction counts in)
-- A key's own limits keep their state in the account's key hash (``<account>:k``), in fields
-- named by the key id: <id>|s credits the key has held or been charged in the period ending
-- at <id>|p (an older <id>|p: nothing yet), and its own GCRA <id>|l <id>|n <id>|r.
-- Tiers arrive in ARGV as "name=credits/rpm;name=credits/rpm".

local MONTH_MS = 2592000000  -- one monthly period and one subscription month: 30 days

-- The script's clock in us, set by now_ms: what versions are made of.
local now_us = 0

local function now_ms(override)
  if override ~= nil and override ~= '' then
    now_us = tonumber(override) * 1000
    return tonumber(override)
  end
  local t = redis.call('TIME')
  now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The tiers, read lazily: a script needs one or two of them, and parsing every tier on every
-- call was a tenth of a reserve's time.
local function parse_tiers(spec)
  return { spec = ';' .. spec, found = {} }
end

-- A tier's rules, or nil when the configuration has no such tier.
local function tier_of(tiers, name)
  if string.find(name, '[;=/]') then
    return nil  -- not a name the spec can hold; it would match across entries
  end
  local r = tiers.found[name]
  if r == nil then
    r = false
    local at = string.find(tiers.spec, ';' .. name .. '=', 1, true)
    if at then
      local credits, rpm = string.match(tiers.spec, '^(%d+)/(%d+)', at + #name + 2)
      r = { credits = tonumber(credits), rpm = tonumber(rpm) }
    end
    tiers.found[name] = r
  end
  return r or nil
end

-- A tier removed from the configuration falls back to the free tier's rules.
local function rules(tiers, name)
  return tier_of(tiers, name) or tier_of(tiers, 'free') or { credits = 0, rpm = 0 }
end

-- `rate`: with the rate limiter's fields (only a reserve uses or changes them: the other
-- scripts read and convert three fields fewer). Without them, a.rl, a.rn and a.rr are nil.
local function load(key, rate)
  local f
  if rate then
    f = redis.call('HMGET', key, 'plan', 'bonus', 'tier', 'sub', 'se', 'pe', 'tt', 'mt', 'v',
      'hp', 'hb', 'rl', 'rn', 'rr')
  else
    f = redis.call('HMGET', key, 'plan', 'bonus', 'tier', 'sub', 'se', 'pe', 'tt', 'mt', 'v',
      'hp', 'hb')
  end
  if not f[1] then
    return nil
  end
  local a = {
    plan = tonumber(f[1]), bonus = tonumber(f[2]), tier = f[3], sub = tonumber(f[4]),
    se = tonumber(f[5]), pe = tonumber(f[6]), tt = tonumber(f[7]), mt = tonumber(f[8]),
    v = tonumber(f[9]), hp = tonumber(f[10] or '0'), hb = tonumber(f[11] or '0'),
  }
  if rate then
    a.rl, a.rn, a.rr = math.floor(tonumber(f[12] or '0')), tonumber(f[13] or '0'),
      tonumber(f[14] or '0')
  end
  return a
end

-- Numbers are passed to redis.call as they are: Redis writes an integral number below 2^53
-- with all its digits (%.17g), which formatting each one here cost a fifth of a script.
-- The rate limiter's fields are the reserve's to write (an account without them has an
-- empty limiter: `load` reads a missing one as 0).
local function save(key, a)
  redis.call('HSET', key, 'plan', a.plan, 'bonus', a.bonus, 'tier', a.tier, 'sub', a.sub,
    'se', a.se, 'pe', a.pe, 'tt', a.tt, 'mt', a.mt, 'v', a.v, 'hp', a.hp, 'hb', a.hb)
end

-- Append one ledger event, carrying the account's state after it, to the bucket's outbox.
-- The state's plan and bonus credits are the ledger's: held credits count as the account's
-- until a settle charges them (a reserve emits nothing; its settle or refund says what the
-- request held, `rp` / `rb`, and what moved).
-- A proxied request's event also names its API key and route prefix (`key`, `route`).
-- The event is one stream field, `e` (``outboxes.event_fields`` reads it): an XADD of 21
-- field / value pairs cost Redis about 7 us, a quarter of a settle; one string, formatted in
-- one call, about half as much. It holds
--   dp db tok rp rb ts v plan bonus sub se pe tt mt   (integers, each followed by a space)
--   then acct kind tier rid note key route, each as <length in bytes>:<text>
-- (a reason may hold any character). %d writes every digit of an integer below 2^63.
local NUMBERS = '%d %d %d %d %d %d %d %d %d %d %d %d %d %d '
-- Each text after its length in bytes, joined with `..`: Lua's %s stops at a NUL byte in a
-- short string, where `#` counts past it.
local function sized(text)
  return #text .. ':' .. text
end
local function emit(outbox, account, a, now, kind, dplan, dbonus, tokens, rid, note, rp, rb,
                    key, route)
  a.v = math.max(a.v + 1, now_us)
  redis.call('XADD', outbox, '*', 'e', string.format(NUMBERS, dplan, dbonus, tokens, rp or 0,
    rb or 0, now, a.v, a.plan + a.hp, a.bonus + a.hb, a.sub, a.se, a.pe, a.tt, a.mt)
    .. sized(account) .. sized(kind) .. sized(a.tier) .. sized(rid) .. sized(note)
    .. sized(key or '') .. sized(route or ''))
end

-- GCRA: a burst of up to `rpm` calls, refilled at one per 60000/rpm ms, counted exactly in
-- integer units of 1/rpm ms. A limiter's state is its theoretical arrival time tms + tn/rr ms;
-- `debt` is how far it is ahead of now. A fraction kept under another rpm (the rpm changed)
-- rounds up to the next whole ms.
local function gcra_debt(tms, tn, rr, rpm, now)
  if rpm <= 0 then
    return 0
  end
  if rr ~= rpm then
    if tn > 0 then
      tms = tms + 1
    end
    tn = 0
  end
  if tms >= now then
    return (tms - now) * rpm + tn
  end
  return 0
end

-- Would one more call pass? (A limiter with rpm 0 has no limit.)
local function gcra_admits(debt, rpm)
  return rpm <= 0 or debt + 60000 <= 60000 * rpm
end

-- The limiter's state after one more call: tms, tn (count it in `rpm`).
local function gcra_take(debt, rpm, now)
  debt = debt + 60000
  return now + math.floor(debt / rpm), debt % rpm
end

-- Calls left in the quota at `debt` (-1: no limit).
local function gcra_left(debt, rpm)
  if rpm <= 0 then
    return -1
  end
  return math.max(0, math.floor((60000 * rpm - debt) / 60000))
end

-- Ms until `debt` is paid off (0 with no limit).
local function gcra_ms(debt, rpm)
  if rpm <= 0 then
    return 0
  end
  return math.ceil(debt / rpm)
end

-- Give `credits` of a closed reservation back to its key's spend, when the reservation counted
-- against a key's credit limit (r_kc credits, in the period ending at r_kp) and that period is
-- still the key's: a new period's spend starts from nothing.
local function unspend(key_hash, kid, r_kp, credits)
  if kid == nil or kid == '' or credits <= 0 then
    return
  end
  local f = redis.call('HMGET', key_hash, kid .. '|s', kid .. '|p')
  if f[2] and tonumber(f[2]) == tonumber(r_kp) then
    redis.call('HSET', key_hash, kid .. '|s', math.max(0, tonumber(f[1]) - credits))
  end
end

local function expire(outbox, account, a, now, tiers)
  local old = a.plan
  a.tier = 'free'
  a.sub = 0
  a.se = 0
  a.plan = math.min(a.plan, rules(tiers, 'free').credits)
  emit(outbox, account, a, now, 'expire', a.plan - old, 0, 0, '', 'subscription ended')
end

-- Refill plan credits and zero the monthly tokens for `periods` period ends at once.
local function rollover(outbox, account, a, now, tiers, periods)
  local old = a.plan
  a.pe = a.pe + periods * MONTH_MS
  a.plan = rules(tiers, a.tier).credits
  a.mt = 0
  emit(outbox, account, a, now, 'reset', a.plan - old, 0, 0, '', 'monthly period')
end

-- Apply a due subscription expiry and due monthly rollovers, in the order they fell due
-- (an expiry and a period end at the same ms: the expiry first). Period ends before the
-- expiry refill at the paid tier, those after it at the free tier.
-- Returns true when anything changed (the caller saves).
local function apply_due(outbox, account, a, now, tiers)
  local changed = false
  if a.se > 0 and now >= a.se then
    if a.pe < a.se then
      rollover(outbox, account, a, now, tiers, math.ceil((a.se - a.pe) / MONTH_MS))
    end
    expire(outbox, account, a, now, tiers)
    changed = true
  end
  if now >= a.pe then
    rollover(outbox, account, a, now, tiers, math.floor((now - a.pe) / MONTH_MS) + 1)
    changed = true
  end
  return changed
end

-- True the first time a request id applies an operation to an account, false for a replay:
-- a client that re-sends a script after a lost reply (redis-py's retries do) must not grant
-- or renew twice. The marker lives a day; an empty request id is never a replay.
local OPERATION_MS = 86400000
local function once(marker, rid)
  if rid == nil or rid == '' then
    return true
  end
  return redis.call('SET', marker, '1', 'NX', 'PX', OPERATION_MS) ~= false
end

-- The common head of every answer that describes an account.
local function describe(status, a, now, tiers)
  local r = rules(tiers, a.tier)
  return { status, a.plan, a.bonus, a.tier, a.sub, a.se, a.pe, a.tt, a.mt, a.v, r.credits, r.rpm, now }
end
