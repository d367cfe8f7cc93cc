-- waiters: the live places in a resource's line, first first (Backend.waiters, for `conclave
-- status`). Read-only: an expired place is skipped, not removed (pruning it is the writing
-- scripts' business, and they publish when they do), so this never writes nor publishes.
--
-- KEYS[1] line:   sorted set, candidate -> order of its place (lib/line.lua)
-- KEYS[2] places: sorted set, candidate -> its place's expiry (ms, server TIME)
-- ARGV: none
--
-- Returns the flat list candidate, remainingMs of every live place, in line order.

-- The server's clock in ms. A read-only script needs no replicate_commands() (it writes
-- nothing after TIME), unlike lib/grants.lua's serverTime().
local time = redis.call('TIME')
local now = math.floor((tonumber(time[1]) * 1000000 + tonumber(time[2])) / 1000)

local result = {}
-- The line holds only candidates (the " tickets" entry is in places, and not read here).
for _, candidate in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local expiry = tonumber(redis.call('ZSCORE', KEYS[2], candidate) or '')
  -- Expiry `now` or earlier: the place stands nowhere (as prunePlaces has it).
  if expiry and expiry > now then
    result[#result + 1] = candidate
    result[#result + 1] = expiry - now
  end
end
return result
