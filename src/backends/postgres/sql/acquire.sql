-- Acquire (or extend) a grant: one statement, see {schema}.acquire in
-- migrations/007_release_grants.sql (the seven-argument one: migration 5's first come, first
-- served acquire with migration 6's promotion grace length, keeping the metadata and whether a
-- release may grant it in the place). held_tickets
-- is not NULL when the resource's unexpired grants were made with other tickets than $3 (nothing
-- was granted then); ahead, when not granted, counts the live places in line before the
-- candidate's, and place is the number of the place it holds (what a release's grant names).
-- Placeholders: {schema} the quoted schema name.
-- Parameters: $1 resource text, $2 candidate text, $3 tickets int, $4 lease_ms int,
--             $5 metadata jsonb (JSON text),
--             $6 synchronous_commit for this statement's commit, text or NULL (the session's);
--                set_config(..., true) lasts to the end of the statement's transaction, so its
--                commit waits as asked (e.g. remote_apply: until a synchronous standby applied it)
--             $7 grace_ms int: how long a promoted database grants nothing new (maxLeaseMs)
--             $8 handoff boolean: a release may grant the place this ask takes (the asking
--                backend listens for the resource's NOTIFY, so its waiter learns of the grant)
SELECT a.granted, a.grant_token, a.holder_list, a.retry_ms, a.held_tickets, a.ahead, a.place
  FROM (SELECT set_config('synchronous_commit',
                          coalesce($6::text, current_setting('synchronous_commit')), true)) s,
       {schema}.acquire($1::text, $2::text, $3::int, $4::int, $5::jsonb, $7::int, $8::boolean) a
