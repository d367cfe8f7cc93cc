-- release: remove a candidate's grant, only if it has the given token (or any, without one).
--
-- KEYS[1] holders: sorted set, candidate -> expiry (ms since epoch, server TIME)
-- KEYS[2] grants:  hash, candidate -> "<token>:<metadata JSON>"; " tickets" -> the live grants'
--                  tickets (removed with the last grant)
-- KEYS[3] guard:   string that expires with the holders key; removed with the last grant, but
--                  only by a release that found the holders key (it guards keys deleted by hand)
-- ARGV[1] candidate
-- ARGV[2] token of the grant to remove, or '' for whatever this candidate has
-- ARGV[3] channel to PUBLISH on when the holders change
--
-- Returns 1 when a grant was removed, 0 when there was none to remove (idempotent).
local TICKETS = ' tickets'
local holders, grants, guard = KEYS[1], KEYS[2], KEYS[3]
local candidate, token, channel = ARGV[1], ARGV[2], ARGV[3]
local existed = redis.call('EXISTS', holders) == 1

-- The resource's tickets are remembered only while a grant lives (then the keys go away too).
local function forgetTicketsWhenEmpty()
  if redis.call('ZCARD', holders) == 0 then
    redis.call('HDEL', grants, TICKETS)
    -- A withdrawal after the keys were deleted by hand must not lift the guard.
    if existed then redis.call('DEL', guard) end
  end
end

local value = redis.call('HGET', grants, candidate)
if not value then
  redis.call('ZREM', holders, candidate)
  forgetTicketsWhenEmpty()
  return 0
end
if token ~= '' then
  local sep = string.find(value, ':', 1, true)
  if string.sub(value, 1, sep - 1) ~= token then return 0 end
end

redis.call('HDEL', grants, candidate)
redis.call('ZREM', holders, candidate)
forgetTicketsWhenEmpty()
redis.call('PUBLISH', channel, '1')
return 1
