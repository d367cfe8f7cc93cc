-- The unexpired holders of a resource, ordered by token, with their remaining time on the
-- database clock.
-- Placeholders: {schema} the quoted schema name.
-- Parameters: $1 resource text
SELECT candidate,
       token,
       metadata,
       greatest(0, ceil(extract(epoch FROM expires_at - clock_timestamp()) * 1000))::bigint
         AS remaining_ms
  FROM {schema}.grants
 WHERE resource = $1::text
   AND expires_at > clock_timestamp()
 ORDER BY token
