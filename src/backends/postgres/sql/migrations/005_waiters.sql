-- Migration 5: first come, first served (issue 18, DESIGN guarantee 12). Each resource has a
-- line of waiting candidates: an acquire that is not granted takes a place at its end (or keeps
-- its own), a free ticket goes only to a candidate with held + ahead < tickets, a place lives
-- lease_ms after its last acquire or queued renewal, and every change that may free a ticket or
-- move the line NOTIFYs the waiters the free tickets now go to (notify_change).
-- Placeholders (substituted by migrate() before running, after validation):
--   {schema}   the schema, as a quoted identifier, e.g. "conclave"
--   {channel}  the NOTIFY channel of this schema, as a string literal, e.g. 'conclave:conclave'
-- Runs inside migrate()'s transaction, under its advisory lock; no parameters.

-- The order of places: nextval() is taken under the resource's row lock, so within a resource
-- it follows the order in which the acquires ran.
CREATE SEQUENCE {schema}.waiter_order;

-- One row per place in a line. A row whose expires_at has passed (on the database clock) stands
-- nowhere: acquire deletes it, everything else ignores it. tickets: what its candidate asked
-- with (a queued renewal and a release go by it when no grant lives to tell them).
CREATE TABLE {schema}.waiters (
  resource text NOT NULL,
  candidate text NOT NULL,
  joined bigint NOT NULL,
  expires_at timestamptz NOT NULL,
  tickets int NOT NULL,
  PRIMARY KEY (resource, candidate)
);
CREATE INDEX waiters_line ON {schema}.waiters (resource, joined);

-- notify_change(resource, tickets): tells the resource's watchers that its holders or its line
-- changed. The payload is {"resource": ..., "wake": [...]}: the live waiters with held + ahead <
-- tickets, in line order (those a free ticket goes to; [] for none). p_tickets NULL: the live
-- grants' tickets, else the last place's. A payload too long for NOTIFY (8000 bytes) is the bare
-- resource instead: unknown, every waiter asks again.
CREATE FUNCTION {schema}.notify_change(p_resource text, p_tickets int) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  v_now timestamptz := clock_timestamp();
  v_tickets int := p_tickets;
  v_held int;
  v_wake jsonb;
  v_payload text;
BEGIN
  IF v_tickets IS NULL THEN
    SELECT g.tickets INTO v_tickets FROM {schema}.grants g
      WHERE g.resource = p_resource AND g.expires_at > v_now AND g.tickets IS NOT NULL
      ORDER BY g.token LIMIT 1;
  END IF;
  IF v_tickets IS NULL THEN
    SELECT w.tickets INTO v_tickets FROM {schema}.waiters w
      WHERE w.resource = p_resource AND w.expires_at > v_now
      ORDER BY w.joined DESC LIMIT 1;
  END IF;
  SELECT count(*) INTO v_held FROM {schema}.grants g
    WHERE g.resource = p_resource AND g.expires_at > v_now;
  SELECT coalesce(jsonb_agg(l.candidate ORDER BY l.joined), '[]'::jsonb) INTO v_wake
    FROM (SELECT w.candidate, w.joined FROM {schema}.waiters w
           WHERE w.resource = p_resource AND w.expires_at > v_now
           ORDER BY w.joined
           LIMIT greatest(coalesce(v_tickets, 0) - v_held, 0)) l;
  v_payload := json_build_object('resource', p_resource, 'wake', v_wake)::text;
  IF octet_length(v_payload) >= 8000 THEN v_payload := p_resource; END IF;
  PERFORM pg_notify({channel}, v_payload);
END
$fn$;

-- A new OUT column (ahead) changes the result type, which CREATE OR REPLACE cannot do. The
-- arguments are unchanged, so acquire.sql of a process that checked the schema before this ran
-- goes on working (it reads the columns it names).
DROP FUNCTION {schema}.acquire(text, text, int, int, jsonb);

-- acquire: as in migration 3 (the promotion grace), in first come, first served order: a free
-- ticket is granted only when held + ahead < tickets (ahead: the live places before the
-- candidate's, or all of them when it has none). Not granted, the candidate takes a place at
-- the end of the line or keeps its own for a fresh lease_ms (which notifies nobody), and
-- `ahead` says how many live places stand before it. Granted or extended, its place is removed.
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
  OUT held_tickets int,
  OUT ahead int
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
  v_grace bigint := 0;
  v_joined bigint;
  v_ahead int;
BEGIN
  -- Under REPEATABLE READ or SERIALIZABLE every statement below would read the snapshot taken
  -- before the lock was granted, so a grant committed meanwhile could be missed.
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION 'conclave: acquire needs READ COMMITTED, the session runs %',
      current_setting('transaction_isolation');
  END IF;

  -- Lock the resource (its row, made on first use): see migration 3. The line is read and
  -- written only under this lock, so places are taken in the order the acquires ran.
  INSERT INTO {schema}.resources AS r (resource, last_token) VALUES (p_resource, 0)
    ON CONFLICT (resource) DO NOTHING;
  SELECT r.last_token INTO v_last FROM {schema}.resources r
    WHERE r.resource = p_resource FOR UPDATE;

  v_now := clock_timestamp();

  -- Expired grants are free; expired places stand nowhere.
  DELETE FROM {schema}.grants g WHERE g.resource = p_resource AND g.expires_at <= v_now;
  IF FOUND THEN v_changed := true; END IF;
  DELETE FROM {schema}.waiters w WHERE w.resource = p_resource AND w.expires_at <= v_now;
  IF FOUND THEN v_changed := true; END IF;

  -- The tickets the live grants were made with (all the same: this check keeps them so).
  SELECT g.tickets INTO v_held FROM {schema}.grants g
    WHERE g.resource = p_resource AND g.tickets IS NOT NULL
    ORDER BY g.token LIMIT 1;
  IF v_held IS NOT NULL AND v_held <> p_tickets THEN
    granted := false;
    held_tickets := v_held;
    holder_list := '[]'::jsonb;
    IF v_changed THEN PERFORM {schema}.notify_change(p_resource, v_held); END IF;
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
    -- A holder stands in no line (a place left over would hold back the waiters behind it).
    DELETE FROM {schema}.waiters w WHERE w.resource = p_resource AND w.candidate = p_candidate;
    IF FOUND THEN v_changed := true; END IF;
  ELSE
    SELECT count(*) INTO v_live FROM {schema}.grants g WHERE g.resource = p_resource;
    -- A late asker never overtakes the line.
    SELECT w.joined INTO v_joined FROM {schema}.waiters w
      WHERE w.resource = p_resource AND w.candidate = p_candidate;
    SELECT count(*) INTO v_ahead FROM {schema}.waiters w
      WHERE w.resource = p_resource AND (v_joined IS NULL OR w.joined < v_joined);
    IF v_live + v_ahead < p_tickets THEN
      v_grace := {schema}.promotion_grace_ms(p_lease_ms, v_now);
    END IF;
    IF v_live + v_ahead < p_tickets AND v_grace = 0 THEN
      -- Larger than every earlier token of this resource, and than the database clock in
      -- microseconds: so tokens keep growing even after a restore from an old backup.
      grant_token := greatest(v_last + 1, floor(extract(epoch FROM v_now) * 1000000)::bigint);
      INSERT INTO {schema}.grants (resource, candidate, token, expires_at, metadata, tickets)
        VALUES (p_resource, p_candidate, grant_token,
                v_now + p_lease_ms * interval '1 millisecond', p_metadata, p_tickets);
      UPDATE {schema}.resources r SET last_token = grant_token WHERE r.resource = p_resource;
      IF v_joined IS NOT NULL THEN
        DELETE FROM {schema}.waiters w
          WHERE w.resource = p_resource AND w.candidate = p_candidate;
      END IF;
      granted := true;
      v_changed := true;
    ELSE
      granted := false;
      ahead := v_ahead;
      IF v_joined IS NULL THEN
        INSERT INTO {schema}.waiters (resource, candidate, joined, expires_at, tickets)
          VALUES (p_resource, p_candidate, nextval('{schema}.waiter_order'),
                  v_now + p_lease_ms * interval '1 millisecond', p_tickets);
      ELSE
        UPDATE {schema}.waiters w
          SET expires_at = v_now + p_lease_ms * interval '1 millisecond', tickets = p_tickets
          WHERE w.resource = p_resource AND w.candidate = p_candidate;
      END IF;
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
  -- Within a promotion's grace a free ticket is granted once the grace is over.
  IF v_grace > 0 THEN retry_ms := least(coalesce(retry_ms, v_grace), v_grace); END IF;

  IF v_changed THEN PERFORM {schema}.notify_change(p_resource, p_tickets); END IF;
END
$fn$;

-- release(resource, candidate, token): removes the grant with that token, or (token NULL)
-- whatever the candidate has on the resource, its grant and its place. Notifies when anything
-- went. It takes the resource's row lock, as acquire does, so the waiters it names are those
-- in line once every acquire before it committed (a place taken meanwhile is not missed).
CREATE FUNCTION {schema}.release(p_resource text, p_candidate text, p_token bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  v_tickets int;
  v_gone boolean := false;
BEGIN
  PERFORM 1 FROM {schema}.resources r WHERE r.resource = p_resource FOR UPDATE;
  DELETE FROM {schema}.grants g
   WHERE g.resource = p_resource AND g.candidate = p_candidate
     AND (p_token IS NULL OR g.token = p_token)
  RETURNING g.tickets INTO v_tickets;
  IF FOUND THEN v_gone := true; END IF;
  IF p_token IS NULL THEN
    DELETE FROM {schema}.waiters w WHERE w.resource = p_resource AND w.candidate = p_candidate;
    IF FOUND THEN v_gone := true; END IF;
  END IF;
  IF v_gone THEN PERFORM {schema}.notify_change(p_resource, v_tickets); END IF;
  RETURN v_gone;
END
$fn$;
