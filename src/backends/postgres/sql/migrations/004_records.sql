-- Migration 4: records (Backend.readRecord/writeRecord), small JSON values kept per (resource,
-- key) beside the grants, written only by a fenced compare-and-set (write-record.sql): what
-- schedule() keeps its fires in. Rows never expire.
-- Placeholders (substituted by migrate() before running, after validation):
--   {schema}   the schema, as a quoted identifier, e.g. "conclave"
-- Runs inside migrate()'s transaction, under its advisory lock; no parameters.
CREATE TABLE {schema}.records (
  resource text NOT NULL,
  key text NOT NULL,
  value jsonb NOT NULL,
  token bigint NOT NULL,
  version bigint NOT NULL,
  PRIMARY KEY (resource, key)
);
