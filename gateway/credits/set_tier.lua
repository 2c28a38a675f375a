-- set_tier: upgrade, renew or downgrade a subscription; bonus credits survive all three.
--   upgrade:   tier set, subscribed, ends now + months, plan credits = the tier's allowance
--   renew:     the end moves out by months from max(now, current end); needs a subscription;
--              an open-ended subscription (no end) stays open-ended
--   downgrade: tier free, not subscribed, plan credits = min(current, free allowance)
-- KEYS[1] account state   KEYS[2] bucket outbox   KEYS[3] the request id's marker (once())
-- ARGV[1] account  ARGV[2] action  ARGV[3] tier (upgrade only)  ARGV[4] months
-- ARGV[5] reason  ARGV[6] now ms or ''  ARGV[7] tiers  ARGV[8] request id (may be '')
-- Returns {'missing'}, {'unknown_tier'}, or describe() with status 'upgraded', 'renewed',
-- 'downgraded' or 'not_subscribed' (renew of an account without a subscription: no change).
-- A request id seen before answers the action's status with nothing changed (a replay).
local account, action, tier, months, reason = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local now = now_ms(ARGV[6])
local tiers = parse_tiers(ARGV[7])
local a = load(KEYS[1])
if not a then
  return { 'missing' }
end
if action == 'upgrade' and (not tier_of(tiers, tier) or tier == 'free') then
  return { 'unknown_tier' }
end
local changed = apply_due(KEYS[2], account, a, now, tiers)
local function unchanged(status)
  if changed then
    save(KEYS[1], a)
  end
  return describe(status, a, now, tiers)
end
if action == 'renew' and a.sub ~= 1 then
  return unchanged('not_subscribed')
end
local done = { upgrade = 'upgraded', renew = 'renewed', downgrade = 'downgraded' }
if not once(KEYS[3], ARGV[8]) then
  return unchanged(done[action])
end
local old = a.plan
if action == 'upgrade' then
  a.tier = tier
  a.sub = 1
  a.se = now + months * MONTH_MS
  a.plan = tier_of(tiers, tier).credits
elseif action == 'renew' then
  if a.se > 0 then
    a.se = math.max(now, a.se) + months * MONTH_MS
  end
else
  a.tier = 'free'
  a.sub = 0
  a.se = 0
  a.plan = math.min(a.plan, rules(tiers, 'free').credits)
end
emit(KEYS[2], account, a, now, action, a.plan - old, 0, 0, ARGV[8] or '', reason)
save(KEYS[1], a)
return describe(done[action], a, now, tiers)
