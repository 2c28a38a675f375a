-- common.lua: the prelude of the credits library (``gateway.credits.scripts``): run once, when
-- Redis loads the library, and so free of anything but definitions (a library's top level
-- cannot reach Lua's `string`, `math` or `struct`). Each script's file is one function's body.
--
-- Account state is one string: STATE's 13 integers (signed, 64-bit, little-endian), then the
-- tier's name. Packed, not a hash: reading a hash's fields and parsing each one's digits was
-- a third of a charged request's work in Redis. The integers, in order:
--   plan   plan credits          bonus  bonus credits (never reset)
--   sub    1 when subscribed     se     subscription end, ms since the epoch, 0: none
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
-- ``gateway.credits.packed`` reads and writes the same form in Python. An account still held
-- as a hash of these fields (``tier`` one of them: the form before) is read as it is and
-- written packed by the next script that changes it.
-- A key's own limits keep their state in the account's key hash (``<account>:k``), in fields
-- named by the key id: <id>|s credits the key has held or been charged in the period ending
-- at <id>|p (an older <id>|p: nothing yet), and its own GCRA <id>|l <id>|n <id>|r.
-- Tiers arrive in ARGV as "name=credits/rpm;name=credits/rpm".

local MONTH_MS = 2592000000  -- one monthly period and one subscription month: 30 days

local STATE = '<i8i8i8i8i8i8i8i8i8i8i8i8i8'
-- Packing as STATE (and hold.lua's HOLD) says: Redis's Lua 5.1 has the struct library, a
-- Lua 5.3 or later string.pack. Without either (fakeredis's Lua 5.1), the same bytes made in
-- Lua: signed little-endian integers of the sizes `i<n>` names, exact to 2^53. Chosen by
-- packers() on a function's first call (``scripts.library``).
local bpack, bunpack

local function pack_in_lua(fmt, ...)
  local out, values = {}, { ... }
  local i = 0
  for size in string.gmatch(fmt, 'i(%d+)') do
    i = i + 1
    local n = values[i]
    local neg = n < 0
    if neg then
      n = -n - 1  -- two's complement: the bytes of -n - 1, each inverted
    end
    for _ = 1, size + 0 do
      local byte = n % 256
      n = (n - byte) / 256
      out[#out + 1] = string.char(neg and 255 - byte or byte)
    end
  end
  return table.concat(out)
end

local function unpack_in_lua(fmt, s, at)
  local values = {}
  at = at or 1
  for size in string.gmatch(fmt, 'i(%d+)') do
    size = size + 0
    local neg = string.byte(s, at + size - 1) >= 128
    local n, scale = 0, 1
    for k = at, at + size - 1 do
      local byte = string.byte(s, k)
      n = n + (neg and 255 - byte or byte) * scale
      scale = scale * 256
    end
    values[#values + 1] = neg and -n - 1 or n
    at = at + size
  end
  values[#values + 1] = at
  return unpack(values)
end

local function packers()
  -- `struct` read under pcall: where it is not defined, reading it is an error
  local has_struct, lib = pcall(function() return struct end)
  if string.pack then
    bpack, bunpack = string.pack, string.unpack
  elseif has_struct and lib then
    bpack, bunpack = lib.pack, lib.unpack
  else
    bpack, bunpack = pack_in_lua, unpack_in_lua
  end
end

-- The script's clock in us, set by now_ms: what versions are made of.
local now_us = 0
-- Within one call of the batch function (batch.lua): the clock its first script read, for
-- the others (they run in the same atomic call: one TIME serves them all). Nil outside a
-- batch, which forgets it at its end.
local batch_us = nil
local in_batch = false

local function now_ms(override)
  if override ~= nil and override ~= '' then
    local ms = override + 0
    now_us = ms * 1000
    return ms
  end
  if batch_us then
    now_us = batch_us
  else
    -- Each number converted once, by arithmetic: `tonumber` parses a string twice.
    local t = redis.call('TIME')
    now_us = t[1] * 1000000 + (t[2] + 0)
    if in_batch then
      batch_us = now_us
    end
  end
  return (now_us - now_us % 1000) / 1000
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

-- The account's state, nil when Redis does not have it.
local function load(key)
  local s = redis.pcall('GET', key)
  if type(s) == 'string' then
    local plan, bonus, sub, se, pe, tt, mt, v, hp, hb, rl, rn, rr, at = bunpack(STATE, s)
    return {
      plan = plan, bonus = bonus, tier = string.sub(s, at), sub = sub, se = se, pe = pe,
      tt = tt, mt = mt, v = v, hp = hp, hb = hb, rl = rl, rn = rn, rr = rr,
    }
  end
  if not s then
    return nil
  end
  -- GET failed: the account is a hash, as the form before kept it
  local f = redis.call('HMGET', key, 'plan', 'bonus', 'tier', 'sub', 'se', 'pe', 'tt', 'mt', 'v',
    'hp', 'hb', 'rl', 'rn', 'rr')
  local function n(i)
    return math.floor((f[i] or 0) + 0)
  end
  return {
    plan = n(1), bonus = n(2), tier = f[3], sub = n(4), se = n(5), pe = n(6), tt = n(7),
    mt = n(8), v = n(9), hp = n(10), hb = n(11), rl = n(12), rn = n(13), rr = n(14),
  }
end

-- One SET of the whole state: packing it costs less than an HSET of two numbers, which Redis
-- formats as text.
local function save(key, a)
  redis.call('SET', key, bpack(STATE, a.plan, a.bonus, a.sub, a.se, a.pe, a.tt, a.mt, a.v, a.hp,
    a.hb, a.rl, a.rn, a.rr) .. a.tier)
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
