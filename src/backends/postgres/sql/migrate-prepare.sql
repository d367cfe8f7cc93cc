-- The schema and its version table (one row per migration applied), made under the lock.
-- Placeholders: {schema} the quoted schema name.
-- Parameters: none (several statements: run as a simple query)
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.schema_version (
  version int PRIMARY KEY,
  name text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
