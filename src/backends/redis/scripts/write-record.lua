-- write record: the fenced compare-and-set of a record (Backend.writeRecord).
-- KEYS[1]  the record: a hash of version, token and value (JSON), never expiring.
-- ARGV[1]  the new value (JSON)
-- ARGV[2]  the writer's fencing token
-- ARGV[3]  the version the writer read (0: it read no record)
-- Writes when the version is still ARGV[3] and the token is at least the last writer's.
-- Returns {1, new version}, or {0, version, token, value} of the record that refused it
-- (version 0: there is none).
local current = redis.call('HMGET', KEYS[1], 'version', 'token', 'value')
local version = tonumber(current[1]) or 0
local token = tonumber(current[2]) or 0
if version ~= tonumber(ARGV[3]) or tonumber(ARGV[2]) < token then
  return {0, version, token, current[3] or ''}
end
redis.call('HSET', KEYS[1], 'version', version + 1, 'token', ARGV[2], 'value', ARGV[1])
return {1, version + 1}
