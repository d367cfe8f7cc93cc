-- renew: give a held grant a fresh lease, keeping its token. Runs once per grant on every
-- renewal tick, so it does the least it can: no pruning of others, no publishing.
--
-- KEYS[1] holders: sorted set, candidate -> expiry (ms since epoch, server TIME)
-- KEYS[2] grants:  hash, candidate -> "<token>:<metadata JSON>"
-- ARGV[1] candidate
-- ARGV[2] token of the grant to renew
-- ARGV[3] leaseMs
--
-- Returns 1 when the grant existed with that token and now runs a fresh lease, 0 when it is gone.
if redis.replicate_commands then redis.replicate_commands() end

local holders, grants = KEYS[1], KEYS[2]
local candidate, token, leaseMs = ARGV[1], ARGV[2], tonumber(ARGV[3])

local time = redis.call('TIME')
local now = math.floor((tonumber(time[1]) * 1000000 + tonumber(time[2])) / 1000)

local expiry = redis.call('ZSCORE', holders, candidate)
if not expiry then return 0 end
if tonumber(expiry) <= now then
  -- Expired: it stays gone (the next acquire or holders call tells the watchers).
  redis.call('ZREM', holders, candidate)
  redis.call('HDEL', grants, candidate)
  return 0
end
local value = redis.call('HGET', grants, candidate)
if not value or string.sub(value, 1, string.find(value, ':', 1, true) - 1) ~= token then
  return 0
end

redis.call('ZADD', holders, now + leaseMs, candidate)
-- Keys outlive every grant in them: raise their TTL (never lower it) when it falls short.
if redis.call('PTTL', holders) < leaseMs then
  redis.call('PEXPIRE', holders, 2 * leaseMs)
  redis.call('PEXPIRE', grants, 2 * leaseMs)
end
return 1
