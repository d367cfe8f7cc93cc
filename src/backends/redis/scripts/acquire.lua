-- acquire: grant one of a resource's tickets to a candidate, or say who holds them.
-- A candidate that already holds keeps its token and gets a fresh lease, except within a grace
-- (startup or failover: not granted, its grant untouched, as a new ask). First come, first
-- served: a free ticket goes only to a candidate with held + ahead < tickets (ahead: the live
-- places before its own in the line, or the whole line without one); one not granted takes a
-- place at the end of the line, or keeps its own (lib/line.lua).
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
--                  owed). Lives about as long as the token key (at least a token TTL after
--                  each ask). Only used when ARGV[8] is not "0".
-- KEYS[6] line:    sorted set, candidate -> order of its place (lib/line.lua)
-- KEYS[7] places:  sorted set, candidate -> its place's expiry (ms, server TIME)
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
-- Returns {1, token, -1, holders...} when granted, {0, waitMs, ahead, holders...} when not,
-- where holders is the flat list candidate, token, metadata, remainingMs of every unexpired
-- holder, ahead the live places before the candidate's (which it now has), and waitMs > 0
-- says no ticket may be granted for that many more ms (the server's startup grace);
-- {4, waitMs, ahead, holders...} as {0, ...} when the failover grace is the longer wait;
-- {3, waitMs} when the keys were deleted by hand while their grants may live (the guard: nothing
-- granted for waitMs); {2, heldTickets} when unexpired grants live that were made with another
-- number of tickets (nothing granted).
--@include "lib/grants.lua"
--@include "lib/line.lua"

local holders, grants, tokenKey, guard = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local candidate, tickets, leaseMs = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local metadata, channel, tokenTtl = ARGV[4], ARGV[5], tonumber(ARGV[6])
local startupGraceMs, failoverGraceMs = tonumber(ARGV[7]), tonumber(ARGV[8])
-- Never shorter than the asking lease (as Postgres' greatest(p_lease_ms, p_grace_ms)); the
-- backend refuses a lease over maxLeaseMs, so this only guards a caller that gives less.
if failoverGraceMs > 0 and failoverGraceMs < leaseMs then failoverGraceMs = leaseMs end
local historyKey = KEYS[5]
local line, places = KEYS[6], KEYS[7]

local now, nowUs, micros = serverTime()
-- The whole seconds of TIME, as LASTSAVE counts them (the startup grace's cheap check).
local nowSec = math.floor(nowUs / 1000000)
local changed = false

-- The holders key deleted by hand (a raw DEL, UNLINK, RENAME...) while the guard says grants may
-- still live: their holders may not know yet (they hear it at once only through keyspace
-- notifications, else at their next renewal), so nobody gets a ticket until the guard runs out,
-- which is never before those grants would have expired.
local present = redis.call('EXISTS', holders) == 1
if not present then
  local guarded = redis.call('PTTL', guard)
  if guarded > 0 then return {3, guarded} end
end

-- Expired holders go first, so they neither count nor show (no holders key: none to prune).
-- `count`: the live grants, kept up to date below (the uncontended case reads no key twice).
local count = 0
if present then
  if pruneExpired(holders, grants, now) then
    -- The last grant expired (the holders key is gone now): so is the guard.
    if redis.call('ZCARD', holders) == 0 then redis.call('DEL', guard) end
    changed = true
  end
  count = redis.call('ZCARD', holders)
end
-- Expired places are skipped as if they never stood there; the line moved up: say so. An empty
-- line (the uncontended case) is not read again.
local lineSize = redis.call('ZCARD', line)
if lineSize > 0 and prunePlaces(line, places, now) then
  changed = true
  lineSize = redis.call('ZCARD', line)
end

-- All candidates of a resource must agree on its tickets: while any grant lives, another number
-- is refused (the holder's own included). With no grant left, any number is accepted again.
local held = nil
if count > 0 then
  held = tonumber(redis.call('HGET', grants, TICKETS) or '')
end
if held and held ~= tickets then
  if changed then
    publishChange(channel, line, places, count, held, lineSize == 0)
  end
  return {2, held}
end

local result = {0, 0}
local mine = redis.call('HGET', grants, candidate)
if mine and not redis.call('ZSCORE', holders, candidate) then
  -- A grant without its expiry cannot be trusted: drop it and decide afresh.
  redis.call('HDEL', grants, candidate)
  mine = false
end
-- A late asker never overtakes the line: a free ticket is its only if held + ahead < tickets.
local ahead, hasPlace = 0, false
if not mine then ahead, hasPlace = placesAhead(line, candidate, lineSize) end

-- The grace in force, if any: (waitMs, failoverWait), waitMs 0 when none; nil on a replica.
-- Asked before a new grant and before extending a grant of the asker's own: a restarted or
-- promoted server may hold a grant its asker released (the release lost with the grants after
-- it), so extending it within the grace could overlap a term granted meanwhile and lost
-- (renewals go on).
local function graceWait()
  -- A server up for less than a lease may have lost grants in a restart whose holders still
  -- believe in their terms (until at most one lease after their last renewal, which reached
  -- the server before it stopped, so before this server started; the caller gives the lease:
  -- startupGraceMs). uptime_in_seconds is the
  -- server's cached unixtime minus its start time(NULL), both whole seconds: it reads 1 as
  -- little as a few ms after the start, so it can exceed the real uptime by almost 1 s (never
  -- by 1 s: a stale cached time only makes it smaller). Hence no grant before it reaches
  -- startupGraceMs + 1 s: the real uptime is then more than startupGraceMs.
  local waitMs = 0
  local needed = math.ceil((startupGraceMs + 1000) / 1000)
  -- The cheap proof first (INFO server and its match are a third of an uncontended acquire's
  -- server time): LASTSAVE is time(NULL) taken at init, before the server serves anyone, or at
  -- a later save, so the real uptime exceeds (TIME's second - LASTSAVE) - 1, and a difference
  -- of at least `needed` proves more than startupGraceMs, the bound the INFO rule below gives.
  -- A recent save (or start), or LASTSAVE refused (an ACL), leaves the decision to INFO.
  local saved = startupGraceMs > 0 and redis.pcall('LASTSAVE')
  if type(saved) == 'number' and saved > 0 and nowSec - saved >= needed then
    saved = true
  else
    saved = false
  end
  if startupGraceMs > 0 and not saved then
    -- A server whose INFO lacks the field (none known) cannot be judged: no grace then.
    local uptime = string.match(redis.call('INFO', 'server'), 'uptime_in_seconds:(%d+)')
    if uptime then
      uptime = tonumber(uptime)
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
      return nil -- the caller answers with the READONLY error
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
      -- Kept alive on every ask for a free ticket or an own grant: a resource in use never
      -- forgets the history it saw. Rewritten only when it changed or has lived a grace since
      -- its last write (a TTL under tokenTtl), not on every ask: its TTL never falls below the
      -- token TTL of a week while the resource is asked for.
      local value = replid .. ':' .. since
      if value ~= seen or redis.call('PTTL', historyKey) < tokenTtl then
        redis.call('SET', historyKey, value, 'PX', failoverGraceMs + tokenTtl)
      end
      if since > 0 and now < since + failoverGraceMs then
        local wait = since + failoverGraceMs - now
        if wait > waitMs then
          waitMs = wait
          failoverWait = true
        end
      end
    end
  end
  return waitMs, failoverWait
end

if mine then
  local waitMs, failoverWait = graceWait()
  if waitMs == nil then
    return redis.error_reply('READONLY conclave grants only on a master (this server is a replica)')
  end
  if waitMs > 0 then
    -- Not granted, the grant untouched: the same answer as a new ask gets (4: failover grace).
    result = {failoverWait and 4 or 0, waitMs}
  else
    local token = splitGrant(mine)
    local value = token .. ':' .. metadata
    if value ~= mine then
      redis.call('HSET', grants, candidate, value)
      changed = true
    end
    redis.call('ZADD', holders, now + leaseMs, candidate)
    -- A holder stands in no line (a place left over would hold back the waiters behind it).
    if lineSize > 0 and leaveLine(line, places, candidate) then changed = true end
    result = {1, token}
  end
elseif count + ahead < tickets then
  local waitMs, failoverWait = graceWait()
  if waitMs == nil then
    return redis.error_reply('READONLY conclave grants only on a master (this server is a replica)')
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
    -- The tickets too, in the same write, when the live grants did not have them yet.
    if held ~= tickets then
      redis.call('HSET', grants, candidate, token .. ':' .. metadata, TICKETS, tickets)
      held = tickets
    else
      redis.call('HSET', grants, candidate, token .. ':' .. metadata)
    end
    redis.call('ZADD', holders, now + leaseMs, candidate)
    count = count + 1
    if hasPlace then leaveLine(line, places, candidate) end
    changed = true
    result = {1, token}
  end
end

-- Not granted: the candidate takes its place (or keeps it, for a fresh lease), which publishes
-- nothing; the answer says how many live places are ahead of it. Granted: -1.
if result[1] == 1 then
  result[3] = -1
elseif mine then
  -- A holder refused within a grace keeps its grant and takes no place (it would count twice).
  result[3] = 0
else
  keepPlace(line, places, candidate, now, nowUs, leaseMs, hasPlace, tickets)
  lineSize = lineSize + (hasPlace and 0 or 1)
  result[3] = ahead
end

if result[1] == 1 and held ~= tickets then redis.call('HSET', grants, TICKETS, tickets) end

-- A grant's keys outlive it (lib/grants.lua). With no holders key before it (the uncontended
-- case), what keepKeysAlive would do without reading back TTLs known already: the new holders
-- key has none, and the guard none worth keeping (the check above found it run out).
if result[1] == 1 and present then
  keepKeysAlive(holders, grants, guard, leaseMs)
elseif result[1] == 1 then
  redis.call('PEXPIRE', holders, 2 * leaseMs)
  redis.call('PEXPIRE', grants, 2 * leaseMs)
  redis.call('SET', guard, '1', 'PX', 2 * leaseMs)
end

-- With no holders key before, the one holder is this grant (listHolders would read it back).
if present then
  listHolders(holders, grants, now, result)
elseif result[1] == 1 then
  result[4], result[5], result[6], result[7] = candidate, result[2], metadata, leaseMs
end

-- The waiters a free ticket now goes to (after a grant usually none; after an expired grant or
-- place was pruned, the first ones).
if changed then
  publishChange(channel, line, places, count, tickets, lineSize == 0)
end
return result
