-- Acquire (or extend) a grant: one statement, see {schema}.acquire in
-- migrations/002_grant_tickets.sql. held_tickets is not NULL when the resource's unexpired
-- grants were made with other tickets than $3 (nothing was granted then).
-- Placeholders: {schema} the quoted schema name.
-- Parameters: $1 resource text, $2 candidate text, $3 tickets int, $4 lease_ms int,
--             $5 metadata jsonb (JSON text)
SELECT granted, grant_token, holder_list, retry_ms, held_tickets
  FROM {schema}.acquire($1::text, $2::text, $3::int, $4::int, $5::jsonb)
