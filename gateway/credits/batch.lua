-- batch: several scripts' calls in one FCALL, in order, each answered as if called alone
-- (``gateway.credits.batching`` sends a loop turn's calls so on a plain Redis). One call per
-- batch, not one per script: Redis's own work for each FCALL (the command, the function's
-- set-up, KEYS and ARGV made anew) and the TIME each script reads were a tenth of a charged
-- request's cost in Redis.
-- ARGV[1] three bytes per call: its script's number in `bodies` (the order of
-- ``scripts.NAMES``), how many keys it has, how many arguments, each as the byte 48 + n
-- ('0' + n). Then every call's keys in KEYS, and its arguments in ARGV from ARGV[2] on.
-- Returns one reply per call: its script's, or the error it raised (an error reply in the
-- array: the other calls are answered all the same, as in a pipeline).
local function run(head)
  local out = {}
  local ki, ai = 1, 2
  for i = 1, #head, 3 do
    local body, nk, na = string.byte(head, i, i + 2)
    nk, na = nk - 48, na - 48
    local ok, reply = pcall(bodies[body - 48], { unpack(KEYS, ki, ki + nk - 1) },
      { unpack(ARGV, ai, ai + na - 1) })
    ki, ai = ki + nk, ai + na
    if not ok then
      -- redis.call raises its error reply as a table; a script's own error is a string
      reply = type(reply) == 'table' and reply.err and reply or { err = 'ERR ' .. tostring(reply) }
    elseif reply == nil then
      reply = false  -- nil would end the array: false is Redis's nil too
    end
    out[(i + 2) / 3] = reply
  end
  return out
end

-- The batch's clock is forgotten whatever happens: a call alone after it reads Redis's own.
in_batch, batch_us = true, nil
local ok, out = pcall(run, ARGV[1])
in_batch, batch_us = false, nil
if not ok then
  error(out)
end
return out
