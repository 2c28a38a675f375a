-- extend: push a held reservation's deadline out, while its answer is still streaming, so the
-- reaper does not refund a request that is alive and well.
-- KEYS[1] reservation   KEYS[2] bucket deadlines
-- ARGV[1] account  ARGV[2] request id  ARGV[3] now ms or ''  ARGV[4] ms from now to the new deadline
-- Returns 1 when the deadline moved; 0 when the reservation is not held (settled, refunded,
-- reaped or unknown): nothing changes then.
local r = read_hold(KEYS[1])
if not r or r.st ~= 'held' then
  return 0
end
r.dl = now_ms(ARGV[3]) + tonumber(ARGV[4])
redis.call('SET', KEYS[1], pack_hold(r, 'h'))
redis.call('ZADD', KEYS[2], 'XX', r.dl, ARGV[1] .. '|' .. ARGV[2])
return 1
