-- spend.lua: a part of the library's prelude (common.lua, ``scripts.PRELUDE``).

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
