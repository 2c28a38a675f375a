-- once.lua: a part of the library's prelude (common.lua, ``scripts.PRELUDE``).

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
