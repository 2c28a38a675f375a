-- gcra.lua: a part of the library's prelude (common.lua, ``scripts.PRELUDE``).

-- GCRA: a burst of up to `rpm` calls, refilled at one per 60000/rpm ms, counted exactly in
-- integer units of 1/rpm ms. A limiter's state is its theoretical arrival time tms + tn/rr ms;
-- `debt` is how far it is ahead of now. A fraction kept under another rpm (the rpm changed)
-- rounds up to the next whole ms.
local function gcra_debt(tms, tn, rr, rpm, now)
  if rpm <= 0 then
    return 0
  end
  if rr ~= rpm then
    if tn > 0 then
      tms = tms + 1
    end
    tn = 0
  end
  if tms >= now then
    return (tms - now) * rpm + tn
  end
  return 0
end

-- Would one more call pass? (A limiter with rpm 0 has no limit.)
local function gcra_admits(debt, rpm)
  return rpm <= 0 or debt + 60000 <= 60000 * rpm
end

-- The limiter's state after one more call: tms, tn (count it in `rpm`).
local function gcra_take(debt, rpm, now)
  debt = debt + 60000
  return now + math.floor(debt / rpm), debt % rpm
end

-- Calls left in the quota at `debt` (-1: no limit).
local function gcra_left(debt, rpm)
  if rpm <= 0 then
    return -1
  end
  return math.max(0, math.floor((60000 * rpm - debt) / 60000))
end

-- Ms until `debt` is paid off (0 with no limit).
local function gcra_ms(debt, rpm)
  if rpm <= 0 then
    return 0
  end
  return math.ceil(debt / rpm)
end
