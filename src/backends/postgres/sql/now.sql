-- The database's wall clock (Backend.now), in ms since the epoch.
-- Parameters: none
SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::float8 AS now_ms
