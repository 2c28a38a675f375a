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
    local ms = override + 0
    now_us = ms * 1000
    return ms
  end
  -- Each number converted once, by arithmetic: `tonumber` parses a string twice.
  local t = redis.call('TIME')
  local us = t[2] + 0
  now_us = t[1] * 1000000 + us
  return (now_us - us % 1000) / 1000
end

-- The tiers, read lazily: a script needs one or two of them, and parsing every tier on every
-- call was a tenth of a reserve's time.
local function parse_tiers(spec)
  return { spec = ';' .. spec, found = {} }
end

-- A tier's rules, or nil when the configuration has no such tier.
local function tier_of(tiers, name)
  local r = tiers.found[name]
  if r == nil then
    r = false
    -- a name with one of ; = / is not one the spec can hold: it would match across entries
    if not string.find(name, '[;=/]') then
      local at = string.find(tiers.spec, ';' .. name .. '=', 1, true)
      if at then
        local credits, rpm = string.match(tiers.spec, '^(%d+)/(%d+)', at + #name + 2)
        r = { credits = credits + 0, rpm = rpm + 0 }
      end
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
-- scripts read and convert three fields fewer). Without them, a.rl, a.rn and a.rr are 0
-- (the table is made at its full size: a field added later would grow it).
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
  -- `+ 0` converts a string once, where `tonumber` parses it twice (lua_isnumber, then
  -- lua_tonumber): some 700 instructions a number.
  local a = {
    plan = f[1] + 0, bonus = f[2] + 0, tier = f[3], sub = f[4] + 0, se = f[5] + 0,
    pe = f[6] + 0, tt = f[7] + 0, mt = f[8] + 0, v = f[9] + 0, hp = (f[10] or 0) + 0,
    hb = (f[11] or 0) + 0, rl = 0, rn = 0, rr = 0,
  }
  if rate then
    a.rl, a.rn, a.rr = math.floor((f[12] or 0) + 0), (f[13] or 0) + 0, (f[14] or 0) + 0
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
-- The event is one stream field, `f` (``outboxes.event_fields`` reads it, and `e`, the form
-- before it): an XADD of 21 field / value pairs cost Redis about 7 us, a quarter of a settle;
-- one string, formatted in one call, about half as much. It holds
--   dp db tok rp rb ts v plan bonus sub se pe tt mt   (integers, each followed by a space)
--   the lengths in bytes of acct kind tier rid note key route   (likewise)
--   then those texts, one after the other (a reason may hold any character).
-- %d writes every digit of an integer below 2^63; a length written apart from the format, as
-- `e` had it, is a number formatted as a float: each cost as much as the format.
local NUMBERS = '%d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d '
-- The texts are joined with `..`: Lua's %s stops at a NUL byte in a short string.
local function emit(outbox, account, a, now, kind, dplan, dbonus, tokens, rid, note, rp, rb,
                    key, route)
  key, route = key or '', route or ''
  a.v = math.max(a.v + 1, now_us)
  redis.call('XADD', outbox, '*', 'f', string.format(NUMBERS, dplan, dbonus, tokens, rp or 0,
    rb or 0, now, a.v, a.plan + a.hp, a.bonus + a.hb, a.sub, a.se, a.pe, a.tt, a.mt, #account,
    #kind, #a.tier, #rid, #note, #key, #route)
    .. account .. kind .. a.tier .. rid .. note .. key .. route)
end

-- Apply a due subscription expiry and due monthly rollovers, in the order they fell due
-- (an expiry and a period end at the same ms: the expiry first). Period ends before the
-- expiry refill at the paid tier, those after it at the free tier.
-- Returns true when anything changed (the caller saves). What applies them is made only when
-- something is due: a function defined is an object made on every call of a script.
local function apply_due(outbox, account, a, now, tiers)
  local expiring = a.se > 0 and now >= a.se
  if not expiring and now < a.pe then
    return false
  end
  -- Refill plan credits and zero the monthly tokens for `periods` period ends at once.
  local function rollover(periods)
    local old = a.plan
    a.pe = a.pe + periods * MONTH_MS
    a.plan = rules(tiers, a.tier).credits
    a.mt = 0
    emit(outbox, account, a, now, 'reset', a.plan - old, 0, 0, '', 'monthly period')
  end
  if expiring then
    if a.pe < a.se then
      rollover(math.ceil((a.se - a.pe) / MONTH_MS))
    end
    local old = a.plan
    a.tier = 'free'
    a.sub = 0
    a.se = 0
    a.plan = math.min(a.plan, rules(tiers, 'free').credits)
    emit(outbox, account, a, now, 'expire', a.plan - old, 0, 0, '', 'subscription ended')
  end
  if now >= a.pe then
    rollover(math.floor((now - a.pe) / MONTH_MS) + 1)
  end
  return true
end

-- The common head of every answer that describes an account, then a script's own values
-- (`...`): one table, made at its size.
local function describe(status, a, now, tiers, ...)
  local r = rules(tiers, a.tier)
  return { status, a.plan, a.bonus, a.tier, a.sub, a.se, a.pe, a.tt, a.mt, a.v, r.credits, r.rpm, now,
    ... }
end
