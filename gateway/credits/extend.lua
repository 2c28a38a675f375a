-- extend: push a held reservation's deadline out, while its answer is still streaming, so the
-- reaper does not refund a request that is alive and well.
-- KEYS[1] reservation   KEYS[2] bucket deadlines
-- ARGV[1] account  ARGV[2] request id  ARGV[3] now ms or ''  ARGV[4] ms from now to the new deadline
-- Returns 1 when the deadline moved; 0 when the reservation is not held (settled, refunded,
-- reaped or unknown): nothing changes then.
if redis.call('HGET', KEYS[1], 'st') ~= 'held' then
  return 0
end
local deadline = now_ms(ARGV[3]) + tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'dl', deadline)
redis.call('ZADD', KEYS[2], 'XX', deadline, ARGV[1] .. '|' .. ARGV[2])
return 1
