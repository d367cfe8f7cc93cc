-- Migration 6: the promotion grace's length. The grace of migrations 3 and 5 lasts the asking
-- candidate's lease; with mixed leases (a holder's 30 s grant the promoted standby missed, a
-- candidate asking with 2 s) that grants the second while the first may run for 28 s more. This
-- acquire takes the grace's length (p_grace_ms: the backend's maxLeaseMs, the longest lease any
-- candidate uses) and waits for greatest(p_lease_ms, p_grace_ms); NULL: the asking lease.
-- Migration 5's five-argument acquire stays, unchanged, for processes of an older conclave
-- during an upgrade (their acquire.sql calls it; the promotion grace is theirs to keep short).
-- Placeholders (substituted by migrate() before running, after validation):
--   {schema}   the schema, as a quoted identifier, e.g. "conclave"
--   {channel}  the NOTIFY channel of this schema, as a string literal, e.g. 'conclave:conclave'
-- Runs inside migrate()'s transaction, under its advisory lock; no parameters.

-- acquire: migration 5's (first come, first served: the line, `ahead`, notify_change), with the
-- promotion grace lasting greatest(p_lease_ms, p_grace_ms), and holding back the extension of a
-- grant the asker holds already too (not only a new grant).
CREATE FUNCTION {schema}.acquire(
  p_resource text,
  p_candidate text,
  p_tickets int,
  p_lease_ms int,
  p_metadata jsonb,
  p_grace_ms int,
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
  v_mine boolean;
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

  -- Held already by this candidate: extend it, keep its token; but not within the promotion
  -- grace: a promoted standby may still have a grant its candidate released (the release, run
  -- with synchronous_commit off, lost with the grants made after it), and extending it could
  -- overlap one of those. Not granted then, the grant untouched, as a new ask (renewals go on).
  SELECT g.metadata INTO v_old FROM {schema}.grants g
    WHERE g.resource = p_resource AND g.candidate = p_candidate;
  v_mine := FOUND;
  IF v_mine THEN
    v_grace := {schema}.promotion_grace_ms(greatest(p_lease_ms, p_grace_ms), v_now);
  END IF;
  IF v_mine AND v_grace > 0 THEN
    granted := false;
    ahead := 0;
  ELSIF v_mine THEN
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
      -- The longest lease any candidate uses, not only this one's: the grant the promoted
      -- standby missed may be another candidate's longer one.
      v_grace := {schema}.promotion_grace_ms(greatest(p_lease_ms, p_grace_ms), v_now);
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
