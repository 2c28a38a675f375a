-- refund: give a held reservation's credits back (the backend failed, or the reservation
-- passed its deadline). Plan credits return up to the tier's allowance; bonus credits in full.
-- A due expiry and rollover apply first, so the allowance is the one of the tier now in force.
-- Emits the request's one event, 'refund': what it held (rp / rb) and, as the deltas, what the
-- account lost by it (held plan credits above the allowance: usually nothing).
-- A hold that counted against its key's credit limit gives it back to the key's spend too. The
-- event names the request's key and route prefix, as its reserve kept them.
-- KEYS[1] account state   KEYS[2] reservation   KEYS[3] bucket deadlines   KEYS[4] bucket outbox
-- KEYS[5] the account's key hash
-- ARGV[1] account  ARGV[2] request id  ARGV[3] reason  ARGV[4] now ms or ''  ARGV[5] tiers
-- ARGV[6] ms the settled reservation is remembered, unless its reserve fixed that ('ret')
-- Returns {'unknown'} when there is no such reservation, {'missing'} when the account is not
-- in Redis (nothing changes), else describe() with
-- status 'refunded', or 'charged_before' / 'refunded_before' (nothing changes), followed by
-- [14] the credits given back.
local account, rid = ARGV[1], ARGV[2]
local now = now_ms(ARGV[4])
local tiers = parse_tiers(ARGV[5])
local r = read_hold(KEYS[2])
local a = load(KEYS[1])
if not r then
  redis.call('ZREM', KEYS[3], account .. '|' .. rid)
  return { 'unknown' }
end
if not a then
  -- Redis lost the account: the reservation stays held and indexed, for a refund after the
  -- account is restored (restore takes the open holds out of the store's balance again).
  return { 'missing' }
end
local status = r.st .. '_before'
local back = 0
if r.st == 'held' then
  status = 'refunded'
  apply_due(KEYS[4], account, a, now, tiers)
  local pp, bp = r.pp, r.bp
  local to_plan = math.min(pp, math.max(0, rules(tiers, a.tier).credits - a.plan))
  a.plan = a.plan + to_plan
  a.bonus = a.bonus + bp
  back = to_plan + bp
  redis.call('SET', KEYS[2], pack_hold(r, 'r'), 'PX', r.ret or ARGV[6])
  redis.call('ZREM', KEYS[3], account .. '|' .. rid)
  if r.cost then  -- layout 1: the hold is in the ledger already
    emit(KEYS[4], account, a, now, 'refund', to_plan, bp, 0, rid, ARGV[3])
  else
    a.hp = a.hp - pp
    a.hb = a.hb - bp
    emit(KEYS[4], account, a, now, 'refund', to_plan - pp, 0, 0, rid, ARGV[3], pp, bp, r.k, r.rt)
    if r.kc then
      unspend(KEYS[5], r.k, r.kp, r.kc)
    end
  end
  save(KEYS[1], a)
end
return describe(status, a, now, tiers, back)
