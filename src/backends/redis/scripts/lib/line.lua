-- lib/line.lua: a resource's line of waiting candidates (first come, first served; DESIGN
-- guarantee 12), shared by the scripts that keep or read it. Not a script: included like
-- lib/grants.lua (which it needs: include that first). Two keys, in the resource's slot:
--   line:   sorted set, candidate -> its order (server TIME in us when it joined, raised above
--           the last place's so two joins in one us keep their order)
--   places: sorted set, candidate -> when its place expires (ms since epoch, server TIME); and
--           " tickets" (a space first: no candidate id has one) -> minus the tickets the last
--           candidate to take or keep a place asked with (what a queued renew and a release
--           go by when no grant lives to tell them)
-- A candidate is in both or in neither. Joining or keeping a place publishes nothing (it
-- changes no holder); whatever may free a ticket or reorder the line publishes the wake list.

-- Removes the places whose expiry is `now` or earlier (skipped as if they never stood there).
-- True when any went.
local function prunePlaces(line, places, now)
  local gone = redis.call('ZRANGEBYSCORE', places, 0, now)
  if #gone == 0 then return false end
  -- In chunks: unpack() of a long list would overflow Lua's stack.
  for i = 1, #gone, 1000 do
    redis.call('ZREM', line, unpack(gone, i, math.min(i + 999, #gone)))
  end
  redis.call('ZREMRANGEBYSCORE', places, 0, now)
  return true
end

-- The live places before `candidate`'s, and whether it has one (without one, the whole line
-- is ahead of it). Places must have been pruned first. `size`: ZCARD of the line, if known.
local function placesAhead(line, candidate, size)
  if size == 0 then return 0, false end
  local rank = redis.call('ZRANK', line, candidate)
  if rank then return rank, true end
  return redis.call('ZCARD', line), false
end

-- The tickets of the line (see the header), or nil.
local LINE_TICKETS = ' tickets'
local function lineTickets(places)
  local score = redis.call('ZSCORE', places, LINE_TICKETS)
  if score then return -tonumber(score) end
  return nil
end

-- Takes a place at the end of the line (unless `has` one) and (re)starts its `leaseMs`;
-- `tickets` (or nil) is remembered as the line's. The keys outlive every place in them: their
-- TTL is raised to twice leaseMs when it falls short of one (as keepKeysAlive does for grants).
local function keepPlace(line, places, candidate, now, nowUs, leaseMs, has, tickets)
  if not has then
    local order = nowUs
    local last = redis.call('ZRANGE', line, -1, -1, 'WITHSCORES')
    if last[2] and tonumber(last[2]) >= order then order = tonumber(last[2]) + 1 end
    -- %.0f: Lua would print the 16 digits of a us timestamp in %.14g, losing the last ones.
    redis.call('ZADD', line, string.format('%.0f', order), candidate)
  end
  if tickets then
    redis.call('ZADD', places, now + leaseMs, candidate, -tickets, LINE_TICKETS)
  else
    redis.call('ZADD', places, now + leaseMs, candidate)
  end
  if redis.call('PTTL', places) < leaseMs or redis.call('PTTL', line) < leaseMs then
    redis.call('PEXPIRE', line, 2 * leaseMs)
    redis.call('PEXPIRE', places, 2 * leaseMs)
  end
end

-- Removes `candidate`'s place, if it has one. True when it had.
local function leaveLine(line, places, candidate)
  if redis.call('ZREM', line, candidate) == 0 then return false end
  redis.call('ZREM', places, candidate)
  return true
end

-- Tells the watchers of `channel` that the holders or the line changed. With `tickets` known,
-- the payload names the waiters a free ticket now goes to (those with held + ahead < tickets,
-- `held` the live grants; places pruned first): {"wake":[...]}; without, '1' (unknown: every
-- waiter asks again). `empty`: the caller knows the line is empty (saves reading it).
local function publishChange(channel, line, places, held, tickets, empty)
  -- An empty line: nobody to wake, whatever the tickets.
  if empty then
    redis.call('PUBLISH', channel, '{"wake":[]}')
    return
  end
  tickets = tickets or lineTickets(places)
  if not tickets then
    redis.call('PUBLISH', channel, '1')
    return
  end
  local wake = '[]'
  if held < tickets then
    local first = redis.call('ZRANGE', line, 0, tickets - held - 1)
    -- cjson encodes an empty table as {}: only a non-empty list goes through it.
    if #first > 0 then wake = cjson.encode(first) end
  end
  redis.call('PUBLISH', channel, '{"wake":' .. wake .. '}')
end
