-- acquire: grant one of a resource's tickets to a candidate, or say who holds them.
-- A candidate that already holds keeps its token and gets a fresh lease.
--
-- KEYS[1] holders: sorted set, candidate -> expiry (ms since epoch, server TIME)
-- KEYS[2] grants:  hash, candidate -> "<token>:<metadata JSON>"; and " tickets" (a space first:
--                  no candidate id has one) -> the tickets the live grants were made with
-- KEYS[3] token:   string, the last token granted on this resource
-- KEYS[4] guard:   string that expires with the holders key (never before it), deleted when our
--                  own scripts remove the last grant. Found without the holders key, it says the
--                  keys were deleted by hand while grants may live on in their holders' minds.
-- KEYS[5] history: string "<master_replid>:<sinceMs>", the replication id acquire last saw this
--                  server run under for this resource, and since when (server TIME; 0: no grace
--                  owed). Expires with the token key. Only used when ARGV[8] is not "0".
-- ARGV[1] candidate
-- ARGV[2] tickets
-- ARGV[3] leaseMs
-- ARGV[4] metadata (JSON text)
-- ARGV[5] channel to PUBLISH on when the holders change
-- ARGV[6] how long the token key outlives the lease of the last new grant, in ms
-- ARGV[7] startup grace, in ms: no new grant until the server has surely been up this long
--         ("0": off)
-- ARGV[8] failover grace, in ms: no new grant for this long after the server's replication
--         history changed (a replica promoted, a master demoted; "0": off). Not the asking
--         lease: the grant a promoted replica missed may be another candidate's longer one, so
--         the caller gives the longest lease any candidate uses (the backend's maxLeaseMs).
--
-- Returns {1, token, holders...} when granted, {0, waitMs, holders...} when not, where holders
-- is the flat list candidate, token, metadata, remainingMs of every unexpired holder, and
-- waitMs > 0 says no ticket may be granted for that many more ms (the server's startup grace);
-- {4, waitMs, holders...} as {0, ...} when the failover grace is the longer wait;
-- {3, waitMs} when the keys were deleted by hand while their grants may live (the guard: nothing
-- granted for waitMs); {2, heldTickets} when unexpired grants live that were made with another
-- number of tickets (nothing granted).
--@include "lib/grants.lua"

local holders, grants, tokenKey, guard = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local candidate, tickets, leaseMs = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local metadata, channel, tokenTtl = ARGV[4], ARGV[5], tonumber(ARGV[6])
local startupGraceMs, failoverGraceMs = tonumber(ARGV[7]), tonumber(ARGV[8])
local historyKey = KEYS[5]

local now, nowUs, micros = serverTime()
local changed = false

-- The holders key deleted by hand (a raw DEL, UNLINK, RENAME...) while the guard says grants may
-- still live: their holders may not know yet (they hear it at once only through keyspace
-- notifications, else at their next renewal), so nobody gets a ticket until the guard runs out,
-- which is never before those grants would have expired.
if redis.call('EXISTS', holders) == 0 then
  local guarded = redis.call('PTTL', guard)
  if guarded > 0 then return {3, guarded} end
end

-- Expired holders go first, so they neither count nor show.
if pruneExpired(holders, grants, now) then
  -- The last grant expired (the holders key is gone now): so is the guard.
  if redis.call('ZCARD', holders) == 0 then redis.call('DEL', guard) end
  changed = true
end

-- All candidates of a resource must agree on its tickets: while any grant lives, another number
-- is refused (the holder's own included). With no grant left, any number is accepted again.
local held = nil
if redis.call('ZCARD', holders) > 0 then
  held = tonumber(redis.call('HGET', grants, TICKETS) or '')
end
if held and held ~= tickets then
  if changed then redis.call('PUBLISH', channel, '1') end
  return {2, held}
end

local result = {0, 0}
local mine = redis.call('HGET', grants, candidate)
if mine and not redis.call('ZSCORE', holders, candidate) then
  -- A grant without its expiry cannot be trusted: drop it and decide afresh.
  redis.call('HDEL', grants, candidate)
  mine = false
end

if mine then
  local token = splitGrant(mine)
  local value = token .. ':' .. metadata
  if value ~= mine then
    redis.call('HSET', grants, candidate, value)
    changed = true
  end
  redis.call('ZADD', holders, now + leaseMs, candidate)
  result = {1, token}
elseif redis.call('ZCARD', holders) < tickets then
  -- A server up for less than a lease may have lost grants in a restart whose holders still
  -- believe in their terms (until at most one lease after their last renewal, which reached
  -- the server before it stopped, so before this server started; the caller gives the lease:
  -- startupGraceMs). uptime_in_seconds is the
  -- server's cached unixtime minus its start time(NULL), both whole seconds: it reads 1 as
  -- little as a few ms after the start, so it can exceed the real uptime by almost 1 s (never
  -- by 1 s: a stale cached time only makes it smaller). Hence no grant before it reaches
  -- startupGraceMs + 1 s: the real uptime is then more than startupGraceMs.
  local waitMs = 0
  if startupGraceMs > 0 then
    -- A server whose INFO lacks the field (none known) cannot be judged: no grace then.
    local uptime = string.match(redis.call('INFO', 'server'), 'uptime_in_seconds:(%d+)')
    if uptime then
      uptime = tonumber(uptime)
      local needed = math.ceil((startupGraceMs + 1000) / 1000)
      if uptime < needed then
        -- The field grows by 1 at each whole second of server time: it reaches `needed` in
        -- (needed - uptime) seconds less the part of the current second already gone (>= 1 ms).
        waitMs = (needed - uptime) * 1000 - math.floor(micros / 1000)
        if waitMs < 1 then waitMs = 1 end
      end
    end
  end
  -- A promoted replica may lack the latest grants (replication is asynchronous) while their
  -- holders, who talked to the old master, still believe in their terms: until at most one
  -- lease after their last write there (the longest lease any candidate uses: failoverGraceMs),
  -- which came before the promotion, so before this server first ran under its new replication id. The id is remembered in KEYS[5]; a replica that got
  -- the old master's copy sees another id than its own, one that got none (it missed every
  -- grant) sees its own former history in master_replid2. Reconnecting changes nothing here: the
  -- id belongs to the server, not to the connection.
  local failoverWait = false
  if failoverGraceMs > 0 then
    local info = redis.call('INFO', 'replication')
    if string.match(info, 'role:(%a+)') ~= 'master' then
      return redis.error_reply('READONLY conclave grants only on a master (this server is a replica)')
    end
    local replid = string.match(info, 'master_replid:(%x+)')
    if replid then
      local seen = redis.call('GET', historyKey)
      local since = 0
      if seen then
        local seenId, seenSince = string.match(seen, '^(%x+):(%d+)$')
        if seenId == replid then
          since = tonumber(seenSince)
        else
          since = now
        end
      else
        -- Never seen: a fresh master (its former history, master_replid2, is all zeros; the
        -- startup grace covers a restart) owes no grace; a promoted one does.
        local former = string.match(info, 'master_replid2:(%x+)')
        if former and string.find(former, '[^0]') then since = now end
      end
      -- Written on every ask for a free ticket (not only on a change): it lives as long as the
      -- token key, so a resource in use never forgets the history it saw.
      redis.call('SET', historyKey, replid .. ':' .. since, 'PX', failoverGraceMs + tokenTtl)
      if since > 0 and now < since + failoverGraceMs then
        local wait = since + failoverGraceMs - now
        if wait > waitMs then
          waitMs = wait
          failoverWait = true
        end
      end
    end
  end
  if waitMs > 0 then
    -- 4: the failover grace is the longer wait; 0: the startup grace.
    result = {failoverWait and 4 or 0, waitMs}
  else
    -- DESIGN guarantee 2: larger than the last token and than server time in microseconds, so
    -- tokens keep growing even after a restart that lost this key.
    local last = tonumber(redis.call('GET', tokenKey) or '0')
    local token = string.format('%.0f', math.max(last + 1, nowUs))
    redis.call('SET', tokenKey, token, 'PX', leaseMs + tokenTtl)
    redis.call('HSET', grants, candidate, token .. ':' .. metadata)
    redis.call('ZADD', holders, now + leaseMs, candidate)
    changed = true
    result = {1, token}
  end
end

if result[1] == 1 and held ~= tickets then redis.call('HSET', grants, TICKETS, tickets) end

-- A grant's keys outlive it (lib/grants.lua).
if result[1] == 1 then keepKeysAlive(holders, grants, guard, leaseMs) end

listHolders(holders, grants, now, result)

if changed then redis.call('PUBLISH', channel, '1') end
return result
