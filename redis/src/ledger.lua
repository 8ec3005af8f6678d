-- One exchange of an instance with the shared ledger for one counter:
-- the steps of `LeasePool::apply` (rules/src/engine/lease.rs), in the same
-- order, on the counter's hash. One key per call, so it runs on Redis
-- Cluster too.
--
-- KEYS[1]  the counter's hash:
--            s:<bucket>    spend booked in a bucket (0 for calendar windows)
--            h:<instance>  the instance's hold
--            x:<instance>  when that hold expires (Unix ms)
-- ARGV     instance, ttl_ms, now_ms ('' = the server's clock), ends_ms
--          (when the window ends, Unix ms), grace_ms, buckets kept ('' for
--          calendar windows, else how many a rolling window keeps),
--          now_bucket, limit ('' = none), give_back, want,
--          n, then n pairs (bucket, amount) spent from the hold,
--          m, then m pairs (bucket, amount) spent directly.
-- Returns  {granted, hold, spent, held_elsewhere, spent_before}:
--          spent_before is the spend of the window before this exchange
--          added to it (expired holds and reports), so that the exchanges
--          of every instance cover each increase exactly once.
--
-- Lua numbers are doubles: amounts are exact up to 2^53, and sums saturate
-- there (the client clamps larger amounts and limits to 2^53). Numbers are
-- written with %d, never with tostring (which rounds to 14 digits).

local MAX = 9007199254740992

local function add(a, b)
  local s = a + b
  if s > MAX then
    return MAX
  end
  return s
end

local function sub(a, b)
  if b >= a then
    return 0
  end
  return a - b
end

local function int(n)
  return string.format('%d', n)
end

local key = KEYS[1]
local instance = ARGV[1]
local ttl = tonumber(ARGV[2])
local now
if ARGV[3] == '' then
  -- Allowed in a script that writes: Redis >= 5 replicates its effects.
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[3])
end
local ends_ms = tonumber(ARGV[4])
local grace = tonumber(ARGV[5])
local kept = ARGV[6]
local now_bucket = ARGV[7]
local limit = ARGV[8]
local give_back = tonumber(ARGV[9])
local want = tonumber(ARGV[10])

local spent, holds, expiry = {}, {}, {}
local flat = redis.call('HGETALL', key)
for i = 1, #flat, 2 do
  local field, value = flat[i], tonumber(flat[i + 1]) or 0
  local kind, name = string.sub(field, 1, 2), string.sub(field, 3)
  if kind == 's:' then
    spent[name] = value
  elseif kind == 'h:' then
    holds[name] = value
  elseif kind == 'x:' then
    expiry[name] = value
  end
end

local del = {}
local dirty = {}

-- 1. Expired holds (any instance's, this one's too) count as spent.
local expired = 0
local gone = {}
for inst, amount in pairs(holds) do
  if not ((expiry[inst] or 0) > now) then
    expired = add(expired, amount)
    gone[#gone + 1] = inst
  end
end
for _, inst in ipairs(gone) do
  holds[inst] = nil
  del[#del + 1] = 'h:' .. inst
  del[#del + 1] = 'x:' .. inst
end
if expired > 0 then
  spent[now_bucket] = add(spent[now_bucket] or 0, expired)
  dirty[now_bucket] = true
end

-- 2. Buckets that left a rolling window.
if kept ~= '' then
  local oldest = tonumber(now_bucket) - (tonumber(kept) - 1)
  local old = {}
  for bucket, _ in pairs(spent) do
    if tonumber(bucket) < oldest then
      old[#old + 1] = bucket
    end
  end
  for _, bucket in ipairs(old) do
    spent[bucket] = nil
    dirty[bucket] = nil
    del[#del + 1] = 's:' .. bucket
  end
end

-- 3. Spend reported.
local own = holds[instance] or 0
local reported = 0
local i = 12
for _ = 1, tonumber(ARGV[11]) do
  local bucket, amount = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  spent[bucket] = add(spent[bucket] or 0, amount)
  dirty[bucket] = true
  own = sub(own, amount)
  reported = add(reported, amount)
end
local direct = tonumber(ARGV[i])
i = i + 1
for _ = 1, direct do
  local bucket, amount = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  spent[bucket] = add(spent[bucket] or 0, amount)
  dirty[bucket] = true
  reported = add(reported, amount)
end

-- 4. Capacity returned.
own = sub(own, give_back)

-- 5. Capacity granted.
local total = 0
for _, amount in pairs(spent) do
  total = add(total, amount)
end
local elsewhere = 0
for inst, amount in pairs(holds) do
  if inst ~= instance then
    elsewhere = add(elsewhere, amount)
  end
end
local room = 0
if limit ~= '' then
  room = sub(tonumber(limit), add(add(total, elsewhere), own))
end
local granted = math.min(want, room)
own = add(own, granted)

-- Writes: deletions first (a bucket dropped in step 2 may be booked again
-- in step 3, an expired hold granted again in step 5).
local set = {}
for bucket, _ in pairs(dirty) do
  set[#set + 1] = 's:' .. bucket
  set[#set + 1] = int(spent[bucket])
end
if own > 0 then
  set[#set + 1] = 'h:' .. instance
  set[#set + 1] = int(own)
  set[#set + 1] = 'x:' .. instance
  set[#set + 1] = int(now + ttl)
else
  del[#del + 1] = 'h:' .. instance
  del[#del + 1] = 'x:' .. instance
end
if #del > 0 then
  redis.call('HDEL', key, unpack(del))
end
if #set > 0 then
  redis.call('HSET', key, unpack(set))
end
-- Kept while its window lasts and its holds live, plus a grace; rolling
-- windows move it forward at every exchange.
redis.call('PEXPIREAT', key, int(math.max(ends_ms, now + ttl) + grace))

return {granted, own, total, elsewhere, sub(total, add(expired, reported))}
