-- Migration 7: a release hands the freed ticket to the next in line itself (issue 18: the
-- graceful handoff in one round trip, not two). A place now keeps its candidate's metadata (the
-- grant it may be given carries it) and whether its process takes a grant made for it (handoff:
-- the seven-argument acquire of a backend that listens for the resource's NOTIFY), the acquire
-- says which place it took (`place`, the waiter_order number: a place is granted at most once,
-- so (candidate, place) names one grant), and the five-argument release grants the first live
-- places in line that take it (never one behind a place that does not), each for what is left of
-- the place's own life (its expires_at: at most one lease after its candidate's last ask or
-- queued renewal, so a waiter that is gone never holds longer than its place would have
-- stood), with a token larger than every earlier one of the resource, unless a promotion's
-- grace is on. Such a release commits as a grant does (the backend's synchronous_commit, not
-- off), and its NOTIFY names the grants: {"resource", "wake", "granted": [{"candidate",
-- "token", "place"}]}, so the waiter's process can hold it without asking again; one that does
-- not understand "granted" is named in "wake", asks, and finds its grant (an extension).
-- Migration 5's three-argument release and migration 6's six-argument acquire stay, unchanged,
-- for processes of an older conclave during an upgrade (their places never take a handoff).
-- Placeholders (substituted by migrate() before running, after validation):
--   {schema}   the schema, as a quoted identifier, e.g. "conclave"
--   {channel}  the NOTIFY channel of this schema, as a string literal, e.g. 'conclave:conclave'
-- Runs inside migrate()'s transaction, under its advisory lock; no parameters.

-- metadata: what the grant a release makes for the place carries. handoff: whether a release
-- may grant the place (false for the places older acquires take).
ALTER TABLE {schema}.waiters ADD COLUMN metadata jsonb,
  ADD COLUMN handoff boolean NOT NULL DEFAULT false;

-- acquire: migration 6's, keeping the metadata and p_handoff in the place and answering `place`
-- (the place's number; NULL when granted or not queued).
CREATE FUNCTION {schema}.acquire(
  p_resource text,
  p_candidate text,
  p_tickets int,
  p_lease_ms int,
  p_metadata jsonb,
  p_grace_ms int,
  p_handoff boolean,
  OUT granted boolean,
  OUT grant_token bigint,
  OUT holder_list jsonb,
  OUT retry_ms bigint,
  OUT held_tickets int,
  OUT ahead int,
  OUT place bigint
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
        INSERT INTO {schema}.waiters
            (resource, candidate, joined, expires_at, tickets, metadata, handoff)
          VALUES (p_resource, p_candidate, nextval('{schema}.waiter_order'),
                  v_now + p_lease_ms * interval '1 millisecond', p_tickets, p_metadata,
                  coalesce(p_handoff, false))
          RETURNING joined INTO place;
      ELSE
        UPDATE {schema}.waiters w
          SET expires_at = v_now + p_lease_ms * interval '1 millisecond', tickets = p_tickets,
              metadata = p_metadata, handoff = coalesce(p_handoff, false)
          WHERE w.resource = p_resource AND w.candidate = p_candidate;
        place := v_joined;
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


-- release(resource, candidate, token, synchronous_commit, grace_ms): migration 5's release
-- (the grant with that token, or with token NULL whatever the candidate has there, its place
-- included), which then grants every ticket now free to the first live places in line (those
-- notify_change would wake), in order, stopping at a place asked with other tickets or one that
-- takes no handoff (its process asks when woken, as with migration 5's release). Nothing is
-- granted within a promotion's grace (grace_ms: the backend's maxLeaseMs; NULL: never). Commits
-- with synchronous_commit off when it grants nothing (a release a crash loses only leaves the
-- grant to run out its lease), else with p_synchronous_commit (NULL: the session's), as an
-- acquire would.
CREATE FUNCTION {schema}.release(
  p_resource text,
  p_candidate text,
  p_token bigint,
  p_synchronous_commit text,
  p_grace_ms int
) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  v_commit text := coalesce(p_synchronous_commit, current_setting('synchronous_commit'));
  v_last bigint;
  v_tickets int;
  v_gone boolean := false;
  v_now timestamptz;
  v_held int;
  v_place record;
  v_token bigint;
  v_granted jsonb := '[]'::jsonb;
  v_wake jsonb := '[]'::jsonb;
  v_payload text;
  v_seen timestamptz;
  v_checked boolean := false;
BEGIN
  -- Set here, not in the calling statement, so the session's setting is read first (above).
  PERFORM set_config('synchronous_commit', 'off', true);
  SELECT r.last_token INTO v_last FROM {schema}.resources r
    WHERE r.resource = p_resource FOR UPDATE;
  DELETE FROM {schema}.grants g
   WHERE g.resource = p_resource AND g.candidate = p_candidate
     AND (p_token IS NULL OR g.token = p_token)
  RETURNING g.tickets INTO v_tickets;
  IF FOUND THEN v_gone := true; END IF;
  IF p_token IS NULL THEN
    DELETE FROM {schema}.waiters w WHERE w.resource = p_resource AND w.candidate = p_candidate;
    IF FOUND THEN v_gone := true; END IF;
  END IF;
  IF NOT v_gone THEN RETURN false; END IF;

  v_now := clock_timestamp();
  -- The resource's tickets, as notify_change finds them.
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

  IF v_last IS NOT NULL AND v_tickets IS NOT NULL AND v_held < v_tickets
     AND p_grace_ms IS NOT NULL THEN
    FOR v_place IN
      SELECT w.candidate, w.joined, w.expires_at, w.metadata, w.tickets, w.handoff
        FROM {schema}.waiters w
       WHERE w.resource = p_resource AND w.expires_at > v_now
       ORDER BY w.joined
       LIMIT v_tickets - v_held
    LOOP
      -- Never overtaken: a place asked with other tickets stops the handing out.
      EXIT WHEN v_place.tickets <> v_tickets OR NOT v_place.handoff;
      IF NOT v_checked THEN
        -- A promoted standby may have missed grants whose holders still run: as acquire does,
        -- once, and only when a place would be granted. The timeline's sighting is read here
        -- (current_timeline()'s expression); promotion_grace_ms records a first one and tells.
        v_checked := true;
        SELECT t.seen_at INTO v_seen FROM {schema}.timelines t
          WHERE t.timeline =
                ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint;
        IF NOT FOUND OR v_seen + p_grace_ms * interval '1 millisecond' > v_now THEN
          EXIT WHEN {schema}.promotion_grace_ms(p_grace_ms, v_now) > 0;
        END IF;
      END IF;
      -- Larger than every earlier token of this resource, and than the database clock in
      -- microseconds, as acquire's.
      v_token := greatest(v_last + 1, floor(extract(epoch FROM v_now) * 1000000)::bigint);
      INSERT INTO {schema}.grants (resource, candidate, token, expires_at, metadata, tickets)
        VALUES (p_resource, v_place.candidate, v_token, v_place.expires_at, v_place.metadata,
                v_tickets)
        ON CONFLICT (resource, candidate) DO NOTHING;
      -- A candidate that holds already stands in no line; should it (or an expired grant of it
      -- be left, which acquire deletes), it is woken to ask below.
      EXIT WHEN NOT FOUND;
      DELETE FROM {schema}.waiters w
        WHERE w.resource = p_resource AND w.candidate = v_place.candidate;
      v_last := v_token;
      v_granted := v_granted || jsonb_build_array(jsonb_build_object(
        'candidate', v_place.candidate, 'token', v_token, 'place', v_place.joined));
      v_wake := v_wake || jsonb_build_array(v_place.candidate);
    END LOOP;
  END IF;

  IF jsonb_array_length(v_granted) = 0 THEN
    PERFORM {schema}.notify_change(p_resource, v_tickets);
    RETURN true;
  END IF;
  UPDATE {schema}.resources r SET last_token = v_last WHERE r.resource = p_resource;
  -- Tickets still free (the handing out stopped at a place that asks for itself): its waiters
  -- are woken to ask, as notify_change would.
  IF jsonb_array_length(v_granted) < v_tickets - v_held THEN
    v_wake := v_wake || (SELECT coalesce(jsonb_agg(l.candidate ORDER BY l.joined), '[]'::jsonb)
      FROM (SELECT w.candidate, w.joined FROM {schema}.waiters w
             WHERE w.resource = p_resource AND w.expires_at > v_now
             ORDER BY w.joined
             LIMIT greatest(v_tickets - v_held - jsonb_array_length(v_granted), 0)) l);
  END IF;
  -- A grant: its commit waits as an acquire's does (and its NOTIFY is delivered after that).
  PERFORM set_config('synchronous_commit', v_commit, true);
  v_payload := jsonb_build_object('resource', p_resource, 'wake', v_wake,
                                  'granted', v_granted)::text;
  -- Too long for NOTIFY: the bare resource (every waiter asks; the granted find their grants).
  IF octet_length(v_payload) >= 8000 THEN v_payload := p_resource; END IF;
  PERFORM pg_notify({channel}, v_payload);
  RETURN true;
END
$fn$;
