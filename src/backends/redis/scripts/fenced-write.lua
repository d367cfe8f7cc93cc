-- conclave fenced write: SET the data key only when the writer's fencing token is at least the
-- highest token the key has seen; remember that token alongside (same hash slot).
-- KEYS[1]  the data key
-- KEYS[2]  the fence key: the highest token seen, as a decimal string (no expiry)
-- ARGV[1]  the writer's token (a positive integer <= 2^53 - 1, decimal)
-- ARGV[2]  the value to SET
-- ARGV[3]  expiry of the data key in ms ('0': none)
-- Returns { 1, highest } when applied, { 0, highest } when refused (highest as a string).
local token = tonumber(ARGV[1])
local seen = redis.call('GET', KEYS[2])
if seen and token < tonumber(seen) then
  return { 0, seen }
end
if seen ~= ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[1])
end
local px = tonumber(ARGV[3])
if px > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', px)
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return { 1, ARGV[1] }
