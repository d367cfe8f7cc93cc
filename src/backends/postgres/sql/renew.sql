-- Renew many grants in one statement: each (resource, candidate, token) still unexpired on the
-- database clock gets a fresh lease; and keep queued candidates' places (token 0) in their
-- lines (migrations/005_waiters.sql) for a fresh lease, while no ticket is free for them
-- (held + ahead >= tickets). Returns the ordinal (1-based) of every renewed grant and kept place;
-- a place not kept (gone, or a ticket is free for it: ask again) is not returned. A queued
-- renewal never grants.
-- Placeholders: {schema} the quoted schema name.
-- Parameters: $1 resources text[], $2 candidates text[], $3 tokens bigint[] (0: a place in
--             line), $4 lease_ms int[] (parallel arrays, one element per request, no duplicate
--             (resource, candidate, token)),
--             $5 synchronous_commit for this statement's commit, text or NULL (the session's):
--             see acquire.sql
WITH r AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::int[])
           WITH ORDINALITY AS r(resource, candidate, token, lease_ms, i)
), renewed AS (
  UPDATE {schema}.grants g
     SET expires_at = clock_timestamp() + r.lease_ms * interval '1 millisecond'
    FROM r
   WHERE r.token <> 0
     AND g.resource = r.resource
     AND g.candidate = r.candidate
     AND g.token = r.token
     AND g.expires_at > clock_timestamp()
     AND (SELECT set_config('synchronous_commit',
                            coalesce($5::text, current_setting('synchronous_commit')), true))
         IS NOT NULL
  RETURNING r.i
), kept AS (
  UPDATE {schema}.waiters w
     SET expires_at = clock_timestamp() + r.lease_ms * interval '1 millisecond'
    FROM r
   WHERE r.token = 0
     AND w.resource = r.resource
     AND w.candidate = r.candidate
     AND w.expires_at > clock_timestamp()
     -- held + ahead >= tickets: the live grants' tickets, or (none live) the place's own
     AND (SELECT count(*) FROM {schema}.grants g
           WHERE g.resource = w.resource AND g.expires_at > clock_timestamp())
       + (SELECT count(*) FROM {schema}.waiters a
           WHERE a.resource = w.resource AND a.joined < w.joined
             AND a.expires_at > clock_timestamp())
       >= coalesce((SELECT g.tickets FROM {schema}.grants g
                     WHERE g.resource = w.resource AND g.expires_at > clock_timestamp()
                       AND g.tickets IS NOT NULL
                     ORDER BY g.token LIMIT 1), w.tickets)
     AND (SELECT set_config('synchronous_commit',
                            coalesce($5::text, current_setting('synchronous_commit')), true))
         IS NOT NULL
  RETURNING r.i
)
SELECT i FROM renewed UNION ALL SELECT i FROM kept
