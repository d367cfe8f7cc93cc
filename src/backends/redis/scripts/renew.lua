-- renew: give held grants a fresh lease, keeping their tokens, and keep queued candidates'
-- places in their lines. Runs on every renewal tick for many requests at once (one call per
-- batch, not per grant), so it does the least it can: no pruning of other grants, and no
-- publishing but when expired places were pruned from a line.
--
-- The requests follow one another in KEYS and ARGV, from k = 1 and a = 1. A grant's (its token
-- is not 0) takes 3 keys and 3 arguments:
-- KEYS[k]   holders: sorted set, candidate -> expiry (ms since epoch, server TIME)
-- KEYS[k+1] grants:  hash, candidate -> "<token>:<metadata JSON>"; " tickets" -> the live
--                    grants' tickets (removed with the last grant)
-- KEYS[k+2] guard:   string that expires with the holders key; removed with the last grant
-- ARGV[a]   candidate
-- ARGV[a+1] token of the grant to renew
-- ARGV[a+2] leaseMs
-- A queued candidate's (a place in line, token 0) takes 4 keys and 4 arguments:
-- KEYS[k], KEYS[k+1] holders, grants (as above)
-- KEYS[k+2] line:    sorted set, candidate -> order of its place (lib/line.lua)
-- KEYS[k+3] places:  sorted set, candidate -> its place's expiry (ms, server TIME)
-- ARGV[a]   candidate
-- ARGV[a+1] '0'
-- ARGV[a+2] leaseMs
-- ARGV[a+3] channel to PUBLISH on when expired places were pruned
--
-- Returns a list of one number per request: for a grant, 1 when it existed with that token and
-- now runs a fresh lease, 0 when it is gone; for a queued candidate, 1 when its place lives (now
-- for a fresh leaseMs) and no ticket is free for it, 0 when it should ask again (its place is
-- gone, or held + ahead < tickets). The keys of one batch may be in different slots: a
-- standalone server allows that (with a Cluster client the backend sends one slot per call).
--@include "lib/grants.lua"
--@include "lib/line.lua"

local now, nowUs = serverTime()

local function renew(holders, grants, guard, candidate, token, leaseMs)
  local expiry = redis.call('ZSCORE', holders, candidate)
  if not expiry then return 0 end
  if tonumber(expiry) <= now then
    -- Expired: it stays gone (the next acquire or holders call tells the watchers).
    redis.call('ZREM', holders, candidate)
    redis.call('HDEL', grants, candidate)
    forgetWhenEmpty(holders, grants, guard)
    return 0
  end
  local value = redis.call('HGET', grants, candidate)
  if not value or splitGrant(value) ~= token then
    return 0
  end
  redis.call('ZADD', holders, now + leaseMs, candidate)
  -- Keys outlive every grant in them (lib/grants.lua).
  keepKeysAlive(holders, grants, guard, leaseMs)
  return 1
end

-- A queued renew never grants: it keeps the place only while every ticket free is someone's
-- ahead (held + ahead >= tickets); else the candidate asks again, and acquire decides.
local function keepQueued(holders, grants, line, places, candidate, leaseMs, channel)
  local pruned = prunePlaces(line, places, now)
  -- Live grants only: renew prunes no other grant.
  local held = redis.call('ZCOUNT', holders, '(' .. now, '+inf')
  -- The live grants' tickets; without any, the line's (lib/line.lua); unknown: ask again.
  local tickets = nil
  if held > 0 then tickets = tonumber(redis.call('HGET', grants, TICKETS) or '') end
  tickets = tickets or lineTickets(places)
  local result = 0
  local rank = redis.call('ZRANK', line, candidate)
  if rank and tickets and held + rank >= tickets then
    keepPlace(line, places, candidate, now, nowUs, leaseMs, true, nil)
    result = 1
  end
  if pruned then publishChange(channel, line, places, held, tickets) end
  return result
end

local results = {}
local k, a = 1, 1
while a <= #ARGV do
  if ARGV[a + 1] == '0' then
    results[#results + 1] = keepQueued(KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], ARGV[a],
      tonumber(ARGV[a + 2]), ARGV[a + 3])
    k, a = k + 4, a + 4
  else
    results[#results + 1] = renew(KEYS[k], KEYS[k + 1], KEYS[k + 2], ARGV[a], ARGV[a + 1],
      tonumber(ARGV[a + 2]))
    k, a = k + 3, a + 3
  end
end
return results
