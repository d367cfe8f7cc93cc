-- lib/grants.lua: what the backend's scripts share about a resource's keys (each script's
-- header names them): the server's clock, a grant's value, removing expired holders, listing
-- the live ones, and keeping the keys alive as long as the grants in them. Not a script: a line
-- `--@include "lib/grants.lua"` in one is replaced by this text when the script is built
-- (scripts/gen-assets.js), as in bullmq. Locals only: Redis refuses a script's globals.

-- The field of the grants hash that holds the tickets the live grants were made with (a space
-- first: no candidate id has one).
local TICKETS = ' tickets'

-- The server's clock, read once per script: now in ms, now in microseconds, and the
-- microseconds of the current second. Effects are replicated, not the script (before Redis 5 a
-- script may not write after TIME otherwise; later versions always do so).
local function serverTime()
  if redis.replicate_commands then redis.replicate_commands() end
  local time = redis.call('TIME')
  local micros = tonumber(time[2])
  local nowUs = tonumber(time[1]) * 1000000 + micros
  return math.floor(nowUs / 1000), nowUs, micros
end

-- A grant's value "<token>:<metadata JSON>": its token and its metadata.
local function splitGrant(value)
  local sep = string.find(value, ':', 1, true)
  return string.sub(value, 1, sep - 1), string.sub(value, sep + 1)
end

-- Removes the holders whose expiry is `now` or earlier, and their grants. True when any went.
local function pruneExpired(holders, grants, now)
  local gone = redis.call('ZRANGEBYSCORE', holders, '-inf', now)
  for _, c in ipairs(gone) do redis.call('HDEL', grants, c) end
  if #gone == 0 then return false end
  redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
  return true
end

-- The resource's tickets are remembered only while a grant lives: with none left they are
-- forgotten, and the guard goes too unless `keepGuard` (a withdrawal after the keys were deleted
-- by hand must not lift it).
local function forgetWhenEmpty(holders, grants, guard, keepGuard)
  if redis.call('ZCARD', holders) == 0 then
    redis.call('HDEL', grants, TICKETS)
    if not keepGuard then redis.call('DEL', guard) end
  end
end

-- Keys outlive every grant in them, and no longer than twice the longest lease (an abandoned
-- resource leaves nothing behind): their TTL is raised to twice `leaseMs`, never lowered, when it
-- falls short of one lease. The guard expires with the holders key, never before it (so it is
-- written about once per lease, not on every renewal).
local function keepKeysAlive(holders, grants, guard, leaseMs)
  local ttl = redis.call('PTTL', holders)
  if ttl < leaseMs then
    redis.call('PEXPIRE', holders, 2 * leaseMs)
    redis.call('PEXPIRE', grants, 2 * leaseMs)
    ttl = 2 * leaseMs
  end
  if redis.call('PTTL', guard) < ttl then redis.call('SET', guard, '1', 'PX', ttl) end
end

-- Appends candidate, token, metadata, remainingMs of every holder that has a grant to `result`
-- (the flat list the backend reads), and returns it.
local function listHolders(holders, grants, now, result)
  local all = redis.call('ZRANGE', holders, 0, -1, 'WITHSCORES')
  for i = 1, #all, 2 do
    local value = redis.call('HGET', grants, all[i])
    if value then
      local token, metadata = splitGrant(value)
      result[#result + 1] = all[i]
      result[#result + 1] = token
      result[#result + 1] = metadata
      result[#result + 1] = tonumber(all[i + 1]) - now
    end
  end
  return result
end
