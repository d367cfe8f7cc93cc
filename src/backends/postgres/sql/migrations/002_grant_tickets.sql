-- Migration 2: every grant records the tickets it was made with, and acquire refuses a number
-- other than the one the resource's unexpired grants were made with (answering held_tickets).
-- Placeholders (substituted by migrate() before running, after validation):
--   {schema}   the schema, as a quoted identifier, e.g. "conclave"
--   {channel}  the NOTIFY channel of this schema, as a string literal, e.g. 'conclave:conclave'
-- Runs inside migrate()'s transaction, under its advisory lock; no parameters.

-- NULL on grants made before this migration (their tickets were not recorded): they are not
-- checked, and an acquire by their own candidate records its tickets.
ALTER TABLE {schema}.grants ADD COLUMN tickets int;

-- A new OUT column changes the function's result type, which CREATE OR REPLACE cannot do. The
-- arguments are unchanged, so acquire.sql of a process that checked the schema before this ran
-- goes on working (it reads the first four columns).
DROP FUNCTION {schema}.acquire(text, text, int, int, jsonb);

-- acquire(resource, candidate, tickets, lease_ms, metadata)
-- One call is one statement, so it works through any pool (and PgBouncer in transaction mode).
-- Returns one row: granted, the token (when granted), the unexpired holders ordered by token
-- (a JSON array of {candidate, token, metadata, remainingMs}), when not granted the milliseconds
-- until the earliest holder expires, and held_tickets: NULL, or (when the resource's unexpired
-- grants were made with other tickets than p_tickets) their tickets; granted is false then and
-- nothing was written but the removal of expired grants.
CREATE FUNCTION {schema}.acquire(
  p_resource text,
  p_candidate text,
  p_tickets int,
  p_lease_ms int,
  p_metadata jsonb,
  OUT granted boolean,
  OUT grant_token bigint,
  OUT holder_list jsonb,
  OUT retry_ms bigint,
  OUT held_tickets int
) LANGUAGE plpgsql VOLATILE
-- Every table is schema-qualified; built-ins come from pg_catalog whatever the caller's path.
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  v_last bigint;
  v_now timestamptz;
  v_live int;
  v_old jsonb;
  v_held int;
  v_changed boolean := false;
BEGIN
  -- Under REPEATABLE READ or SERIALIZABLE every statement below would read the snapshot taken
  -- before the lock was granted, so a grant committed meanwhile could be missed.
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION 'conclave: acquire needs READ COMMITTED, the session runs %',
      current_setting('transaction_isolation');
  END IF;

  -- Lock the resource (its row, made on first use). Every statement after this one takes a new
  -- snapshot (READ COMMITTED, volatile function), so it sees all the previous holder of the lock
  -- committed: the tickets check below and the grant it allows are one atomic step, and two
  -- acquires asking different tickets at once are ordered by this lock (the second sees the
  -- first's grant and is refused).
  INSERT INTO {schema}.resources AS r (resource, last_token) VALUES (p_resource, 0)
    ON CONFLICT (resource) DO NOTHING;
  SELECT r.last_token INTO v_last FROM {schema}.resources r
    WHERE r.resource = p_resource FOR UPDATE;

  v_now := clock_timestamp();

  -- Expired grants are free.
  DELETE FROM {schema}.grants g WHERE g.resource = p_resource AND g.expires_at <= v_now;
  IF FOUND THEN v_changed := true; END IF;

  -- The tickets the live grants were made with (all the same: this check keeps them so).
  SELECT g.tickets INTO v_held FROM {schema}.grants g
    WHERE g.resource = p_resource AND g.tickets IS NOT NULL
    ORDER BY g.token LIMIT 1;
  IF v_held IS NOT NULL AND v_held <> p_tickets THEN
    granted := false;
    held_tickets := v_held;
    holder_list := '[]'::jsonb;
    IF v_changed THEN PERFORM pg_notify({channel}, p_resource); END IF;
    RETURN;
  END IF;

  -- Held already by this candidate: extend it, keep its token.
  SELECT g.metadata INTO v_old FROM {schema}.grants g
    WHERE g.resource = p_resource AND g.candidate = p_candidate;
  IF FOUND THEN
    UPDATE {schema}.grants g
      SET expires_at = v_now + p_lease_ms * interval '1 millisecond', metadata = p_metadata,
          tickets = p_tickets
      WHERE g.resource = p_resource AND g.candidate = p_candidate
      RETURNING g.token INTO grant_token;
    granted := true;
    IF v_old IS DISTINCT FROM p_metadata THEN v_changed := true; END IF;
  ELSE
    SELECT count(*) INTO v_live FROM {schema}.grants g WHERE g.resource = p_resource;
    IF v_live < p_tickets THEN
      -- Larger than every earlier token of this resource, and than the database clock in
      -- microseconds: so tokens keep growing even after a restore from an old backup.
      grant_token := greatest(v_last + 1, floor(extract(epoch FROM v_now) * 1000000)::bigint);
      INSERT INTO {schema}.grants (resource, candidate, token, expires_at, metadata, tickets)
        VALUES (p_resource, p_candidate, grant_token,
                v_now + p_lease_ms * interval '1 millisecond', p_metadata, p_tickets);
      UPDATE {schema}.resources r SET last_token = grant_token WHERE r.resource = p_resource;
      granted := true;
      v_changed := true;
    ELSE
      granted := false;
    END IF;
  END IF;

  SELECT coalesce(jsonb_agg(jsonb_build_object(
           'candidate', h.candidate,
           'token', h.token,
           'metadata', h.metadata,
           'remainingMs', h.remaining) ORDER BY h.token), '[]'::jsonb),
         min(h.remaining)
    INTO holder_list, retry_ms
    FROM (SELECT g.candidate, g.token, g.metadata,
                 greatest(0, ceil(extract(epoch FROM g.expires_at - clock_timestamp()) * 1000))::bigint
                   AS remaining
            FROM {schema}.grants g WHERE g.resource = p_resource) h;

  IF v_changed THEN PERFORM pg_notify({channel}, p_resource); END IF;
END
$fn$;
