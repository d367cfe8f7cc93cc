-- holders: the unexpired holders of a resource (expired ones are removed on the way).
--
-- KEYS[1] holders: sorted set, candidate -> expiry (ms since epoch, server TIME)
-- KEYS[2] grants:  hash, candidate -> "<token>:<metadata JSON>"; " tickets" -> the live grants'
--                  tickets (removed with the last grant)
-- KEYS[3] guard:   string that expires with the holders key; removed with the last grant
-- ARGV[1] channel to PUBLISH on when the holders change
--
-- Returns the flat list candidate, token, metadata, remainingMs of every unexpired holder.
if redis.replicate_commands then redis.replicate_commands() end

local holders, grants, guard, channel = KEYS[1], KEYS[2], KEYS[3], ARGV[1]

local time = redis.call('TIME')
local now = math.floor((tonumber(time[1]) * 1000000 + tonumber(time[2])) / 1000)

local gone = redis.call('ZRANGEBYSCORE', holders, '-inf', now)
for _, c in ipairs(gone) do redis.call('HDEL', grants, c) end
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
  if redis.call('ZCARD', holders) == 0 then
    redis.call('HDEL', grants, ' tickets')
    redis.call('DEL', guard)
  end
  redis.call('PUBLISH', channel, '1')
end

local result = {}
local all = redis.call('ZRANGE', holders, 0, -1, 'WITHSCORES')
for i = 1, #all, 2 do
  local value = redis.call('HGET', grants, all[i])
  if value then
    local sep = string.find(value, ':', 1, true)
    result[#result + 1] = all[i]
    result[#result + 1] = string.sub(value, 1, sep - 1)
    result[#result + 1] = string.sub(value, sep + 1)
    result[#result + 1] = tonumber(all[i + 1]) - now
  end
end
return result
