-- Release a grant: only the one with the given token, or (token NULL) whatever this candidate
-- has on the resource, its place in line included ({schema}.release in
-- migrations/005_waiters.sql, which NOTIFYs the waiters the freed ticket goes to).
-- Its commit does not wait for the WAL flush (synchronous_commit off, for this statement's
-- transaction only): a release lost in a crash only leaves the grant to run out its lease, as a
-- release that never arrived does; and the next grant's own commit, which waits, flushes the WAL
-- up to it, release included, so no grant made after it can be kept without it.
-- Placeholders: {schema} the quoted schema name.
-- Parameters: $1 resource text, $2 candidate text, $3 token bigint or NULL
SELECT {schema}.release($1::text, $2::text, $3::bigint) AS released
  FROM (SELECT set_config('synchronous_commit', 'off', true)) s
