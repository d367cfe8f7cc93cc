-- Serialises migrations of one schema across processes, until the transaction ends.
-- Parameters: $1 int (conclave's lock class), $2 text (the schema name)
SELECT pg_advisory_xact_lock($1::int, hashtext($2::text))
