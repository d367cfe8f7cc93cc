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
--@include "lib/grants.lua"

local holders, grants, guard = KEYS[1], KEYS[2], KEYS[3]
local candidate, token, channel = ARGV[1], ARGV[2], ARGV[3]
-- Keys deleted by hand: a withdrawal then must not lift the guard.
local keepGuard = redis.call('EXISTS', holders) == 0

local value = redis.call('HGET', grants, candidate)
if not value then
  redis.call('ZREM', holders, candidate)
  forgetWhenEmpty(holders, grants, guard, keepGuard)
  return 0
end
if token ~= '' and splitGrant(value) ~= token then return 0 end

redis.call('HDEL', grants, candidate)
redis.call('ZREM', holders, candidate)
forgetWhenEmpty(holders, grants, guard, keepGuard)
redis.call('PUBLISH', channel, '1')
return 1
