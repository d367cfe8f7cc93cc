-- Whether the schema's version table exists (checked first, without a lock, so a migrated
-- schema costs two reads and no DDL).
-- Parameters: $1 text (the schema name, unquoted)
SELECT to_regclass(quote_ident($1::text) || '.schema_version') IS NOT NULL AS present
