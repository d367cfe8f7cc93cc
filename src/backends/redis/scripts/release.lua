-- release: remove a candidate's grant, only if it has the given token (or, without one,
-- whatever it has: its grant and its place in the line).
--
-- KEYS[1] holders: sorted set, candidate -> expiry (ms since epoch, server TIME)
-- KEYS[2] grants:  hash, candidate -> "<token>:<metadata JSON>"; " tickets" -> the live grants'
--                  tickets (removed with the last grant)
-- KEYS[3] guard:   string that expires with the holders key; removed with the last grant, but
--                  only by a release that found the holders key (it guards keys deleted by hand)
-- KEYS[4] line:    sorted set, candidate -> order of its place (lib/line.lua)
-- KEYS[5] places:  sorted set, candidate -> its place's expiry (ms, server TIME)
-- ARGV[1] candidate
-- ARGV[2] token of the grant to remove, or '' for whatever this candidate has
-- ARGV[3] channel to PUBLISH on when the holders or the line change: the payload names the
--         waiters the freed ticket goes to (lib/line.lua)
--
-- Returns 1 when a grant was removed, 0 when there was none to remove (idempotent).
--@include "lib/grants.lua"
--@include "lib/line.lua"

local holders, grants, guard, line, places = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local candidate, token, channel = ARGV[1], ARGV[2], ARGV[3]
-- Effects replication, before any write (lib/grants.lua's serverTime); TIME itself is read
-- only when there is a line to look at.
if redis.replicate_commands then redis.replicate_commands() end
-- Keys deleted by hand: a withdrawal then must not lift the guard. The count also tells, after
-- the ZREM below, whether the last grant went (no second read of the holders key).
local size = redis.call('ZCARD', holders)
local keepGuard = size == 0
-- The tickets are read before the last grant takes them along: whom the freed ticket goes to
-- depends on them.
local found = redis.call('HMGET', grants, candidate, TICKETS)
local value, tickets = found[1], tonumber(found[2] or '')

-- Who is woken: the first waiters in line among the live places, with the live grants.
local function published()
  if redis.call('EXISTS', line) == 0 then
    publishChange(channel, line, places, 0, tickets, true)
    return
  end
  local now = serverTime()
  prunePlaces(line, places, now)
  publishChange(channel, line, places, redis.call('ZCOUNT', holders, '(' .. now, '+inf'), tickets)
end

if not value then
  redis.call('ZREM', holders, candidate)
  forgetWhenEmpty(holders, grants, guard, keepGuard)
  -- A withdrawal from the line moves up the waiters behind it.
  if token == '' and leaveLine(line, places, candidate) then published() end
  return 0
end
if token ~= '' and splitGrant(value) ~= token then return 0 end

local left = size - redis.call('ZREM', holders, candidate)
if token == '' then leaveLine(line, places, candidate) end
-- forgetWhenEmpty's work, with the grant's own HDEL in the same call.
if left == 0 then
  redis.call('HDEL', grants, candidate, TICKETS)
  if not keepGuard then redis.call('DEL', guard) end
else
  redis.call('HDEL', grants, candidate)
end
published()
return 1
