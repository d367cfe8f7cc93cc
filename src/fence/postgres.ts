/**
 * Fenced updates in PostgreSQL: the guarded table has a token column (bigint NOT NULL DEFAULT 0);
 * every leader's update sets it to its own token and applies only where the stored token is not
 * greater:
 *
 *   UPDATE jobs SET state = $3, token = $2 WHERE id = $1 AND token <= $2
 *
 * The row lock the UPDATE takes orders concurrent writers, so the check and the write are one
 * atomic step. Takes any pg Pool, Client or PoolClient (pg is not imported here).
 */
import { validateToken } from '../validate.js'
import { OptionsError, StaleTokenError } from '../errors.js'

/** The part of a pg Pool / Client the fence uses. */
export interface PgQueryable {
  /** Runs `text` with `values` (pg's `query(text, values)`). */
  query(
    text: string,
    values?: unknown[],
  ): Promise<{ rowCount: number | null; rows: Record<string, unknown>[] }>
}

/** What `fencedUpdate` updates: the table, the row id, the token, the columns to set. */
export interface FencedUpdateOptions {
  /** The table, optionally schema-qualified: `jobs` or `app.jobs`. */
  table: string
  /** The row's key value (required: a non-empty string, finite number, bigint, boolean, Buffer or Date). */
  id: unknown
  /** The writer's fencing token (`term.token`). */
  token: number
  /** Columns to set and their values. */
  set: Record<string, unknown>
  /** Default `id`. */
  idColumn?: string
  /** Default `token`. */
  tokenColumn?: string
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_$]{0,62}$/
const IDENTIFIER_RULE =
  'An identifier is 1 to 63 letters, digits, _ or $, not starting with a digit (it is double-quoted as given).'

function quote(name: string, field: string): string {
  if (typeof name !== 'string' || !IDENTIFIER.test(name)) {
    throw new OptionsError(field, name, IDENTIFIER_RULE)
  }
  return `"${name}"`
}

/**
 * The row's key must be a value that can equal a column's: without it (or with null, NaN, an
 * object...) `WHERE id = $1` matches no row and the update would report 0 silently.
 */
function validateId(id: unknown): void {
  const ok =
    (typeof id === 'string' && id.length > 0) ||
    (typeof id === 'number' && Number.isFinite(id)) ||
    typeof id === 'bigint' ||
    typeof id === 'boolean' ||
    Buffer.isBuffer(id) ||
    (id instanceof Date && !Number.isNaN(id.getTime()))
  if (!ok) {
    throw new OptionsError(
      'id',
      id,
      'id is the key of the row to update: a non-empty string, a finite number, a bigint, a boolean, a Buffer or a valid Date.',
    )
  }
}

/** The statement fencedUpdate runs, with $1 = id, $2 = token, $3... = the `set` values in order. */
export function fencedUpdateSql(options: Omit<FencedUpdateOptions, 'id' | 'token'>): string {
  if (typeof options.table !== 'string' || options.table.split('.').length > 2) {
    throw new OptionsError(
      'table',
      options.table,
      `A table is "name" or "schema.name". ${IDENTIFIER_RULE}`,
    )
  }
  const table = options.table
    .split('.')
    .map((part) => quote(part, 'table'))
    .join('.')
  const idColumn = quote(options.idColumn ?? 'id', 'idColumn')
  const tokenColumn = quote(options.tokenColumn ?? 'token', 'tokenColumn')
  if (typeof options.set !== 'object' || options.set === null || Array.isArray(options.set)) {
    throw new OptionsError('set', options.set, 'set is an object of column names to values.')
  }
  const columns = Object.keys(options.set)
  if (columns.length === 0) {
    throw new OptionsError('set', options.set, 'set names at least one column to update.')
  }
  const assignments = columns.map((column, i) => `${quote(column, 'set')} = $${i + 3}`)
  if (columns.includes(options.tokenColumn ?? 'token')) {
    throw new OptionsError(
      'set',
      options.set,
      'set must not name the token column: the fence sets it.',
    )
  }
  return `UPDATE ${table} SET ${assignments.join(', ')}, ${tokenColumn} = $2 WHERE ${idColumn} = $1 AND ${tokenColumn} <= $2`
}

/**
 * Runs the fenced UPDATE on one row. Resolves with the number of rows updated: 1, or 0 when no
 * row has that id. Throws a StaleTokenError when the row exists but has seen a greater token.
 */
export async function fencedUpdate(db: PgQueryable, options: FencedUpdateOptions): Promise<number> {
  if (typeof options !== 'object' || options === null) {
    throw new OptionsError('options', options, 'fencedUpdate takes { table, id, token, set }.')
  }
  validateId(options.id)
  const token = validateToken(options.token)
  const sql = fencedUpdateSql(options)
  const values = [options.id, token, ...Object.values(options.set)]
  const result = await db.query(sql, values)
  if ((result.rowCount ?? 0) > 0) return result.rowCount!
  // Nothing matched: either no such row, or a newer token wrote it (tokens only grow, so what
  // this read sees is at least what stopped the update).
  const table = options.table
    .split('.')
    .map((part) => quote(part, 'table'))
    .join('.')
  const found = await db.query(
    `SELECT ${quote(options.tokenColumn ?? 'token', 'tokenColumn')}::text AS highest FROM ${table} WHERE ${quote(options.idColumn ?? 'id', 'idColumn')} = $1`,
    [options.id],
  )
  const row = found.rows[0]
  if (!row) return 0
  const highest = Number(row.highest)
  if (highest > token) {
    throw new StaleTokenError(
      `row ${JSON.stringify(options.id)} of ${options.table}`,
      token,
      highest,
    )
  }
  // The row was updated (and its token lowered?) between the two statements: tokens never drop,
  // so this can only be a concurrent delete-and-reinsert; report it as not updated.
  return 0
}
