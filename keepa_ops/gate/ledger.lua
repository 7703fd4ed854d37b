-- The shared bucket's rules for Redis: a line-by-line mirror of ledger.py, run as one script.
-- KEYS[1] holds the state (MessagePack, so integers stay exact). ARGV[1] is the operation,
-- ARGV[2] the state to create if the key is missing (JSON, from ledger.new_state; "" to be told
-- "missing" instead, so the state goes over the wire only after a flush or restart), the rest its arguments.
-- Time is Redis TIME only: client clocks never enter.
local MINUTE_US = 60000000

local function fdiv(a, b) return math.floor(a / b) end

local function refill(s, now)
  local dt = now - s.at
  if dt <= 0 then return end
  if s.step == 1 then
    local steps = fdiv(now - s.phase, MINUTE_US) - fdiv(s.at - s.phase, MINUTE_US)
    s.at = now
    if steps > 0 and s.bal < s.cap then s.bal = math.min(s.cap, s.bal + steps * s.rate) end
    return
  end
  s.at = now
  if s.bal >= s.cap then s.rem = 0; return end
  local need_us = fdiv((s.cap - s.bal) * MINUTE_US, s.rate) + 1
  if dt >= need_us then s.bal = s.cap; s.rem = 0; return end
  local num = dt * s.rate + s.rem
  s.bal = math.min(s.cap, s.bal + fdiv(num, MINUTE_US))
  s.rem = num % MINUTE_US
end

local function until_(s, target, now)
  if s.bal >= target then return 0 end
  if target > s.cap then return -1 end
  if s.step == 1 then
    local steps = -fdiv(-(target - s.bal), s.rate)
    local first = s.phase + (fdiv(now - s.phase, MINUTE_US) + 1) * MINUTE_US
    return first + (steps - 1) * MINUTE_US - now
  end
  local num = (target - s.bal) * MINUTE_US - s.rem
  return -fdiv(-num, s.rate)
end

local function expire(s, now)
  for lid, v in pairs(s.leases) do if v[3] <= now then s.leases[lid] = nil end end
  for wid, w in pairs(s.waiters) do if w[9] <= now then s.waiters[wid] = nil end end
end

local function less(a, b)  -- lexicographic order of two rank lists
  for i = 1, #a do
    if a[i] ~= b[i] then return a[i] < b[i] end
  end
  return false
end

local function rank(s, w, now, bal)
  local p = s.policy
  if p == "priority" then
    if now >= w[7] then return {0, w[4] + s.bound, w[5], w[10]} end
    return {1, w[5], w[4], w[10]}
  elseif p == "threshold" then
    return {bal >= w[3] and 0 or 1, w[3], w[5], w[10]}
  elseif p == "fair" then
    return {w[8], w[5], w[10]}
  end
  return {w[10]}
end

local function head(s, now)
  local best, best_rank = nil, nil
  for wid, w in pairs(s.waiters) do
    local r = rank(s, w, now, s.bal)
    if best == nil or less(r, best_rank) then best, best_rank = wid, r end
  end
  return best
end

local function next_change(s, now)
  if next(s.waiters) == nil then return -1 end
  if s.policy == "threshold" then
    local best = -1
    for _, w in pairs(s.waiters) do
      local t = until_(s, w[3], now)
      if t >= 0 and (best < 0 or t < best) then best = t end
    end
    return best
  end
  local t = until_(s, s.waiters[head(s, now)][3], now)
  if s.policy == "priority" then
    for _, w in pairs(s.waiters) do
      local d = w[7] - now
      if 0 < d and (t < 0 or d < t) then t = d end
    end
  end
  return t
end

local function now_us(s)
  local t = redis.call("TIME")
  return math.floor(((tonumber(t[1]) - s.epoch_s) * 1000000 + tonumber(t[2])) * s.scale)
end

local raw = redis.call("GET", KEYS[1])
local s
local fresh = 0
if raw then
  s = cmsgpack.unpack(raw)
elseif ARGV[2] == "" then  -- the caller sends the state to start from only when asked for it
  return {"missing", "", "", "1", ""}
else  -- a new (or flushed, or restarted) Redis: the state the caller would start from
  s = cjson.decode(ARGV[2])
  s.waiters, s.leases, s.tags = {}, {}, {}
  s.epoch_s = tonumber(redis.call("TIME")[1])
  s.at = now_us(s)
  fresh = 1
end
local now = now_us(s)
local op = ARGV[1]
local out

local function promote_at(since, target)
  return since + math.max(0, s.bound - fdiv(target * MINUTE_US, s.rate))
end

local function enqueue(task, cost, target, prio, weight)
  refill(s, now); expire(s, now)
  s.seq = s.seq + 1
  local wid = tostring(s.seq)
  local tag = 0
  if s.policy == "fair" then
    tag = math.max(s.virt, s.tags[task] or 0) + cost / 1000.0 / weight
    s.tags[task] = tag
  end
  s.waiters[wid] = {task, cost, math.max(1, target), now, prio, weight, promote_at(now, target), tag, now + s.wttl,
                    s.seq}
  return wid
end

local function poll(wid, lease_us)
  refill(s, now); expire(s, now)
  local w = s.waiters[wid]
  if w == nil then return {"gone", 0, s.bal} end
  w[9] = now + s.wttl
  if head(s, now) == wid and s.bal >= w[3] then
    s.waiters[wid] = nil
    s.bal = s.bal - w[2]
    if s.policy == "fair" then s.virt = w[8] end
    s.seq = s.seq + 1
    local lid = tostring(s.seq)
    s.leases[lid] = {w[1], w[2], now + lease_us}
    return {"granted", lid, s.bal}
  end
  return {"wait", next_change(s, now), s.bal}
end

if op == "enqueue" then
  local wid = enqueue(ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]))
  out = {"queued", wid, s.bal}
elseif op == "poll" then
  out = poll(ARGV[3], tonumber(ARGV[4]))
elseif op == "ask" then
  local task, cost, target, prio, weight = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
  local resume = ARGV[9] or ""
  refill(s, now); expire(s, now)
  local w = nil
  if resume ~= "" then w = s.waiters[resume] end
  local wid
  if w ~= nil and w[1] == task then
    w[2], w[3], w[5], w[6] = cost, math.max(1, target), prio, weight
    w[7] = promote_at(w[4], target)
    wid = resume
  else
    wid = enqueue(task, cost, target, prio, weight)
  end
  out = poll(wid, tonumber(ARGV[8]))
  out[4] = wid
elseif op == "park" then
  refill(s, now); expire(s, now)
  local w = s.waiters[ARGV[3]]
  if w == nil then
    out = {"gone", 0, s.bal}
  else
    w[9] = now + math.max(0, tonumber(ARGV[4])) + s.wttl
    out = {"parked", next_change(s, now), s.bal}
  end
elseif op == "settle" then
  local lid, left, consumed, ts, rate = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
  local refill_in = tonumber(ARGV[8])
  refill(s, now); expire(s, now)
  local lease = nil
  if lid ~= "" then lease = s.leases[lid]; s.leases[lid] = nil end
  if ts >= s.newest then
    s.newest = ts
    local in_flight = 0
    for _, v in pairs(s.leases) do in_flight = in_flight + v[2] end
    s.bal = left - in_flight; s.rem = 0; s.at = now
    if rate > 0 and rate ~= s.rate then s.rate = rate end
    if s.step == 1 and refill_in >= 0 then s.phase = (now + refill_in) % MINUTE_US end
  elseif lease ~= nil then
    s.bal = s.bal + lease[2] - consumed
  end
  out = {"settled", 0, s.bal}
elseif op == "release" then
  refill(s, now)
  s.leases[ARGV[3]] = nil
  out = {"released", 0, s.bal}
elseif op == "withdraw" then
  s.waiters[ARGV[3]] = nil
  out = {"withdrawn", 0, s.bal}
elseif op == "state" then
  refill(s, now); expire(s, now)
  local nw, nl = 0, 0
  for _ in pairs(s.waiters) do nw = nw + 1 end
  for _ in pairs(s.leases) do nl = nl + 1 end
  out = {"state", nw * 1000000 + nl, s.bal}
else
  return redis.error_reply("unknown operation " .. tostring(op))
end

redis.call("SET", KEYS[1], cmsgpack.pack(s))
-- replies are strings: Lua numbers would be truncated to integers anyway, and the balance may be large
return {out[1], tostring(out[2]), tostring(out[3]), tostring(fresh), tostring(out[4] or "")}
