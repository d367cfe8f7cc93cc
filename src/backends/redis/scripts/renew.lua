-- renew: give held grants a fresh lease, keeping their tokens. Runs on every renewal tick for
-- many grants at once (one call per batch, not per grant), so it does the least it can: no
-- pruning of others, no publishing.
--
-- For each grant i = 1..n (n = #KEYS / 3):
-- KEYS[3i-2] holders: sorted set, candidate -> expiry (ms since epoch, server TIME)
-- KEYS[3i-1] grants:  hash, candidate -> "<token>:<metadata JSON>"; " tickets" -> the live
--                    grants' tickets (removed with the last grant)
-- KEYS[3i]   guard:   string that expires with the holders key; removed with the last grant
-- ARGV[3i-2] candidate
-- ARGV[3i-1] token of the grant to renew
-- ARGV[3i]   leaseMs
--
-- Returns a list of n numbers: 1 when that grant existed with that token and now runs a fresh
-- lease, 0 when it is gone. The keys of one batch may be in different slots: a standalone
-- server allows that (with a Cluster client the backend sends one slot per call).
--@include "lib/grants.lua"

local now = serverTime()

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

local results = {}
for i = 1, #KEYS / 3 do
  results[i] = renew(KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i], ARGV[3 * i - 2],
    ARGV[3 * i - 1], tonumber(ARGV[3 * i]))
end
return results
