-- seed_keys: set what keys have spent in the account's current period from the store of
-- record, when Redis cannot know it: the account was restored (Redis lost it, and its keys'
-- spend with it) or a key gained a credit limit (its spend was not counted while it had none).
-- A key's spend only grows by this: what Redis counted in the same period stays when it is
-- more (charges the sync has not copied yet).
-- KEYS[1] account state   KEYS[2] the account's key hash
-- ARGV[1] the period end the spends were summed for (ms); ARGV[2..] key id, credits, ...
-- Returns 'seeded', 'moved' (the account's period is another now: nothing changes) or
-- 'missing'.
local a = load(KEYS[1])
if not a then
  return 'missing'
end
local pe = a.pe
if pe ~= tonumber(ARGV[1]) then
  return 'moved'
end
for i = 2, #ARGV, 2 do
  local kid, credits = ARGV[i], tonumber(ARGV[i + 1])
  local f = redis.call('HMGET', KEYS[2], kid .. '|s', kid .. '|p')
  if f[2] and tonumber(f[2]) == pe then
    credits = math.max(credits, tonumber(f[1]))
  end
  redis.call('HSET', KEYS[2], kid .. '|s', credits, kid .. '|p', pe)
end
return 'seeded'
