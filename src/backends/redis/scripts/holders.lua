-- holders: the unexpired holders of a resource (expired ones are removed on the way).
--
-- KEYS[1] holders: sorted set, candidate -> expiry (ms since epoch, server TIME)
-- KEYS[2] grants:  hash, candidate -> "<token>:<metadata JSON>"; " tickets" -> the live grants'
--                  tickets (removed with the last grant)
-- KEYS[3] guard:   string that expires with the holders key; removed with the last grant
-- ARGV[1] channel to PUBLISH on when the holders change
--
-- Returns the flat list candidate, token, metadata, remainingMs of every unexpired holder.
--@include "lib/grants.lua"

local holders, grants, guard, channel = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local now = serverTime()

if pruneExpired(holders, grants, now) then
  forgetWhenEmpty(holders, grants, guard)
  redis.call('PUBLISH', channel, '1')
end

return listHolders(holders, grants, now, {})
