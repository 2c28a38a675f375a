-- settle: charge a held reservation (the backend answered 2xx) and count its tokens.
-- A due expiry and rollover apply first, so the tokens count in the period now running.
-- A metered request charges part of its hold (ARGV[7]) and gets the rest back in the same
-- call: bonus credits first (the hold took plan credits first), plan credits up to the
-- tier's allowance, as a refund does.
-- Emits the request's one event, 'charge': the credits it held by plan and bonus (rp / rb),
-- what the account lost by it as the deltas (the hold, less what came back), its tokens and
-- its request id.
-- A hold that counted against its key's credit limit gives what was not charged back to the
-- key's spend too. The event names the request's key and route prefix, as its reserve kept them.
-- KEYS[1] account state   KEYS[2] reservation   KEYS[3] bucket deadlines   KEYS[4] bucket outbox
-- KEYS[5] the account's key hash
-- ARGV[1] account  ARGV[2] request id  ARGV[3] tokens  ARGV[4] tiers
-- ARGV[5] ms the settled reservation is remembered, unless its reserve fixed that ('ret')
-- ARGV[6] '1': answer without the account (a caller that does not read it: the proxy's)
-- From ARGV[7] on, each may be left out when it and all after it are '':
-- ARGV[7] the credits to charge, at most the hold ('': the whole hold)  ARGV[8] now ms or ''
-- Returns {'unknown'} when there is no such reservation, {'missing'} when the account is not
-- in Redis (the reservation stays as it is), else describe() with
-- status 'charged', or 'charged_before' / 'refunded_before' when it was settled already
-- (nothing changes), followed by [14] the credits charged (of a settle before: as it charged)
-- [15] the credits given back now (0 unless 'charged'); with ARGV[6], only
-- { status, credits charged, credits given back }: describing the account was a tenth of a
-- settle (its tier's rules found, an answer of 15 values).
local account, rid, tokens = ARGV[1], ARGV[2], ARGV[3] + 0
local now = now_ms(ARGV[8])
local tiers = parse_tiers(ARGV[4])
local r = read_hold(KEYS[2])
local a = load(KEYS[1])
if not r then
  return { 'unknown' }
end
if not a then
  return { 'missing' }  -- Redis lost the account: restore it, then settle again
end
local pp, bp = r.pp, r.bp
local cost = r.cost or pp + bp
local status = r.st .. '_before'
local charged = r.chg or cost
local back = 0
if r.st == 'held' then
  status = 'charged'
  apply_due(KEYS[4], account, a, now, tiers)  -- the state is saved whole below either way
  a.tt = a.tt + tokens
  a.mt = a.mt + tokens
  if r.cost then  -- layout 1: the hold is in the ledger already, charged whole
    charged = cost
    emit(KEYS[4], account, a, now, 'charge', 0, 0, tokens, rid, '')
  else
    if ARGV[7] ~= nil and ARGV[7] ~= '' then
      charged = math.max(0, math.min(cost, tonumber(ARGV[7])))
    end
    local to_bonus = math.min(bp, cost - charged)
    local to_plan = 0
    if cost - charged - to_bonus > 0 then  -- the tier's rules found only when they matter
      to_plan = math.min(cost - charged - to_bonus,
        math.max(0, rules(tiers, a.tier).credits - a.plan))
    end
    back = to_plan + to_bonus
    a.plan = a.plan + to_plan
    a.bonus = a.bonus + to_bonus
    a.hp = a.hp - pp
    a.hb = a.hb - bp
    emit(KEYS[4], account, a, now, 'charge', to_plan - pp, to_bonus - bp, tokens, rid, '', pp, bp,
      r.k, r.rt)
    if r.kc then
      unspend(KEYS[5], r.k, r.kp, cost - charged)
    end
  end
  if charged ~= cost then
    r.chg = charged
  end
  redis.call('SET', KEYS[2], pack_hold(r, 'c'), 'PX', r.ret or ARGV[5])
  redis.call('ZREM', KEYS[3], account .. '|' .. rid)
  save(KEYS[1], a)
end
if ARGV[6] == '1' then
  return { status, charged, back }
end
return describe(status, a, now, tiers, charged, back)
