-- Release a grant: only the one with the given token, or (token NULL) whatever this candidate
-- has on the resource. Wakes the resource's waiters when a row went.
-- Placeholders: {schema} the quoted schema name; {channel} the NOTIFY channel as a literal.
-- Parameters: $1 resource text, $2 candidate text, $3 token bigint or NULL
WITH gone AS (
  DELETE FROM {schema}.grants g
   WHERE g.resource = $1::text
     AND g.candidate = $2::text
     AND ($3::bigint IS NULL OR g.token = $3::bigint)
  RETURNING g.resource
)
SELECT pg_notify({channel}, resource) FROM gone
