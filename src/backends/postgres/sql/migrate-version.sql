-- The schema's version: 0 when the version table is empty.
-- Placeholders: {schema} the quoted schema name.
-- Parameters: none
SELECT coalesce(max(version), 0)::int AS version FROM {schema}.schema_version
