-- holders: the unexpired holders of a resource (expired ones are removed on the way, and so are
-- expired places in its line).
--
-- KEYS[1] holders: sorted set, candidate -> expiry (ms since epoch, server TIME)
-- KEYS[2] grants:  hash, candidate -> "<token>:<metadata JSON>"; " tickets" -> the live grants'
--                  tickets (removed with the last grant)
-- KEYS[3] guard:   string that expires with the holders key; removed with the last grant
-- KEYS[4] line:    sorted set, candidate -> order of its place (lib/line.lua)
-- KEYS[5] places:  sorted set, candidate -> its place's expiry (ms, server TIME)
-- ARGV[1] channel to PUBLISH on when the holders or the line change
--
-- Returns the flat list candidate, token, metadata, remainingMs of every unexpired holder.
--@include "lib/grants.lua"
--@include "lib/line.lua"

local holders, grants, guard, channel = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local line, places = KEYS[4], KEYS[5]
local now = serverTime()
-- Read before the last grant takes them along: whom a freed ticket goes to depends on them.
local tickets = tonumber(redis.call('HGET', grants, TICKETS) or '')

local pruned = pruneExpired(holders, grants, now)
if pruned then forgetWhenEmpty(holders, grants, guard) end
if prunePlaces(line, places, now) then pruned = true end
if pruned then publishChange(channel, line, places, redis.call('ZCARD', holders), tickets) end

return listHolders(holders, grants, now, {})
