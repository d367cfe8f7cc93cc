-- Renew many grants in one statement: each (resource, candidate, token) still unexpired on the
-- database clock gets a fresh lease. Returns the ordinal (1-based) of every renewed request.
-- Placeholders: {schema} the quoted schema name.
-- Parameters: $1 resources text[], $2 candidates text[], $3 tokens bigint[], $4 lease_ms int[]
--             (parallel arrays, one element per request, no duplicate (resource, candidate)),
--             $5 synchronous_commit for this statement's commit, text or NULL (the session's):
--             see acquire.sql
UPDATE {schema}.grants g
   SET expires_at = clock_timestamp() + r.lease_ms * interval '1 millisecond'
  FROM unnest($1::text[], $2::text[], $3::bigint[], $4::int[])
         WITH ORDINALITY AS r(resource, candidate, token, lease_ms, i)
 WHERE g.resource = r.resource
   AND g.candidate = r.candidate
   AND g.token = r.token
   AND g.expires_at > clock_timestamp()
   AND (SELECT set_config('synchronous_commit',
                          coalesce($5::text, current_setting('synchronous_commit')), true))
       IS NOT NULL
RETURNING r.i
