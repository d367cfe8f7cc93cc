-- One record (Backend.readRecord).
-- Placeholders: {schema} the quoted schema name.
-- Parameters: $1 resource text, $2 key text
SELECT value, token, version
  FROM {schema}.records
 WHERE resource = $1::text AND key = $2::text
