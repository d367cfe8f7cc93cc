-- Records one applied migration.
-- Placeholders: {schema} the quoted schema name.
-- Parameters: $1 int (version), $2 text (name)
INSERT INTO {schema}.schema_version (version, name) VALUES ($1::int, $2::text)
