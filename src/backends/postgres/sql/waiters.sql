-- The live places in a resource's line (migration 5), first first, with what is left of each
-- on the database clock. Read-only: an expired place is skipped, not deleted (acquire does
-- that, under the resource's lock). Places carry no metadata.
-- Placeholders: {schema} the quoted schema name.
-- Parameters: $1 resource text
SELECT candidate,
       greatest(0, ceil(extract(epoch FROM expires_at - clock_timestamp()) * 1000))::bigint
         AS remaining_ms
  FROM {schema}.waiters
 WHERE resource = $1::text
   AND expires_at > clock_timestamp()
 ORDER BY joined
