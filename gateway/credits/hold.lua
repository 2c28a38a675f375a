-- hold.lua: a part of the library's prelude (common.lua, ``scripts.PRELUDE``).
--
-- A reservation is one string: its state's letter (h held, c charged, r refunded), HOLD's
-- integers (signed, little-endian)
--   pp bp  the plan and bonus credits it holds (or held)   dl  its deadline, ms
--   ret    ms its request id is kept once settled (-1: the settle's or refund's own)
--   kc kp  the credits it counted against its key's limit, in the period ending at kp
--          (kc -1: none)
--   chg    the credits charged, when a metered settle charged less than the hold (-1: all)
--   the length in bytes of its key id
-- then its key id and its route prefix (both may be empty). Packed, as the account's state is
-- (common.lua): one GET and one SET where a hash took an HGET, an HMGET of ten fields, an
-- HSET and a PEXPIRE. ``gateway.credits.packed`` reads it in Python. A reservation still held
-- as a hash (the form before) is read as it is and written packed when it next changes.

local HOLD = '<i8i8i8i8i8i8i8i2'
local HOLD_STATES = { h = 'held', c = 'charged', r = 'refunded' }

-- The reservation at `key` as a table (st pp bp dl ret kc kp chg k rt, and cost for a hold of
-- layout 1's scripts, whose hold the ledger has already), or nil when there is none.
local function read_hold(key)
  local s = redis.pcall('GET', key)
  if type(s) == 'string' then
    local pp, bp, dl, ret, kc, kp, chg, klen, at = bunpack(HOLD, s, 2)
    return {
      st = HOLD_STATES[string.sub(s, 1, 1)], pp = pp, bp = bp, dl = dl,
      ret = ret >= 0 and ret or nil, kc = kc >= 0 and kc or nil, kp = kp,
      chg = chg >= 0 and chg or nil, k = string.sub(s, at, at + klen - 1),
      rt = string.sub(s, at + klen),
    }
  end
  if not s then
    return nil
  end
  -- GET failed: a hash, as the form before kept a reservation
  local h = redis.call('HMGET', key, 'st', 'pp', 'bp', 'dl', 'ret', 'kc', 'kp', 'chg', 'k', 'rt',
    'cost')
  local function n(i)
    return h[i] and math.floor(h[i] + 0)
  end
  return {
    st = h[1], pp = n(2) or 0, bp = n(3) or 0, dl = n(4) or 0, ret = n(5), kc = n(6),
    kp = n(7) or 0, chg = n(8), k = h[9] or '', rt = h[10] or '', cost = n(11),
  }
end

-- The reservation `r` packed in state `st` (its letter), for a SET.
local function pack_hold(r, st)
  return st .. bpack(HOLD, r.pp, r.bp, r.dl, r.ret or -1, r.kc or -1, r.kp, r.chg or -1, #r.k)
    .. r.k .. r.rt
end
