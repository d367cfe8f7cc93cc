-- The fenced compare-and-set of a record (Backend.writeRecord), one statement: it writes when
-- the record is still at version $5 (0: absent) and the token $4 is at least the last writer's.
-- Under READ COMMITTED a concurrent UPDATE makes this one re-check its WHERE on the new row,
-- and a concurrent first INSERT makes this one do nothing: either way one writer wins.
-- Placeholders: {schema} the quoted schema name.
-- Parameters: $1 resource text, $2 key text, $3 value jsonb, $4 token bigint, $5 version bigint,
--             $6 synchronous_commit for this statement's commit, text or NULL (the session's), as
--                for grants: a record a promoted standby lacks would let a fire run twice
-- Returns one row: written_version (NULL when refused), and the record before (NULL: none).
WITH sync AS (
  SELECT set_config('synchronous_commit',
                    coalesce($6::text, current_setting('synchronous_commit')), true)
), current AS (
  SELECT value, token, version FROM {schema}.records
   WHERE resource = $1::text AND key = $2::text
), inserted AS (
  INSERT INTO {schema}.records (resource, key, value, token, version)
  SELECT $1::text, $2::text, $3::jsonb, $4::bigint, 1
   WHERE $5::bigint = 0 AND NOT EXISTS (SELECT 1 FROM current)
  ON CONFLICT (resource, key) DO NOTHING
  RETURNING version
), updated AS (
  UPDATE {schema}.records r
     SET value = $3::jsonb, token = $4::bigint, version = r.version + 1
   WHERE r.resource = $1::text AND r.key = $2::text
     AND r.version = $5::bigint AND r.token <= $4::bigint
  RETURNING r.version
)
SELECT coalesce((SELECT version FROM inserted), (SELECT version FROM updated)) AS written_version,
       (SELECT jsonb_build_object('value', value, 'token', token, 'version', version)
          FROM current) AS before
  FROM sync -- the one row of the final SELECT: so set_config surely runs
