/**
 * How the CLI reports a failure: one line (the error and its causes, said once each), an exit
 * code that tells the kind of failure, the stack only with `--debug`, and never a password.
 */

/** The CLI's own exit codes (`conclave run` otherwise exits with its command's code). */
export const EXIT = {
  /** Success. */
  ok: 0,
  /** An unexpected error: a bug in conclave (run with --debug and report the stack). */
  unexpected: 1,
  /** A bad command, flag, value, URL or name, or a backend that cannot work for the command. */
  usage: 2,
  /** The backend is unreachable, refused us (connection, timeout, DNS, TLS, authentication), or its client package is missing. */
  backend: 3,
  /** The backend refused the request for good: the resource is held with another `--tickets`. */
  conflict: 4,
  /** `conclave run --wait`: not elected in time; CMD never started. */
  notElected: 5,
  /** `conclave run`: the term was lost (or expired) while CMD ran, so CMD was stopped. */
  lost: 6,
} as const

/** Codes of errors that come from reaching (or failing to reach) the backend. */
const BACKEND_CODES = new Set([
  'ERR_CONCLAVE_BACKEND',
  'ERR_CONCLAVE_TIMEOUT',
  'ERR_CONCLAVE_MISSING_PEER',
  'ERR_CONCLAVE_PROTOCOL',
])
/** Final refusals of a campaign: calling again cannot fix them. */
const CONFLICT_CODES = new Set(['ERR_CONCLAVE_TICKETS_MISMATCH', 'ERR_CONCLAVE_CANDIDATE_IN_USE'])
const USAGE_CODES = new Set(['ERR_CONCLAVE_OPTIONS', 'ERR_CONCLAVE_USAGE'])

/** The error and its `cause` chain (at most 8 deep; cycles stop it). */
function chain(error: unknown): unknown[] {
  const seen: unknown[] = []
  for (let e = error; e !== undefined && e !== null && seen.length < 8;) {
    if (seen.includes(e)) break
    seen.push(e)
    e = (e as { cause?: unknown }).cause
  }
  return seen
}

function codeOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : undefined
}

/** A Node system error (ECONNREFUSED, ENOTFOUND, ...) or a TLS failure somewhere in the chain. */
function isNetworkError(error: unknown): boolean {
  const code = codeOf(error)
  if (code === undefined) return false
  return (
    (/^E[A-Z0-9_]+$/.test(code) && typeof (error as { syscall?: unknown }).syscall === 'string') ||
    code.startsWith('ERR_TLS_') ||
    code.startsWith('CERT_') ||
    code === 'DEPTH_ZERO_SELF_SIGNED_CERT' ||
    code === 'SELF_SIGNED_CERT_IN_CHAIN' ||
    code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'
  )
}

/** Which exit code a failure of the CLI gets (see EXIT). */
export function exitCodeOf(error: unknown): number {
  const errors = chain(error)
  const top = codeOf(error)
  if (top !== undefined && USAGE_CODES.has(top)) return EXIT.usage
  if (errors.some((e) => CONFLICT_CODES.has(codeOf(e) ?? ''))) return EXIT.conflict
  if (errors.some((e) => BACKEND_CODES.has(codeOf(e) ?? '') || isNetworkError(e)))
    return EXIT.backend
  return EXIT.unexpected
}

/**
 * One line: the error's message, then each cause whose message the text does not already
 * contain (backends usually quote their cause), joined with `: `. Newlines become spaces;
 * passwords are redacted; the line is capped at 600 characters.
 */
export function describeError(error: unknown): string {
  let line = ''
  for (const e of chain(error)) {
    const raw = e instanceof Error ? e.message : String(e)
    const message = raw.replace(/\s+/g, ' ').trim()
    if (message === '' || line.includes(message)) continue
    line = line === '' ? message : `${line.replace(/[.\s]+$/, '')}: ${message}`
  }
  if (line === '') line = error instanceof Error ? error.name : 'unknown error'
  line = redact(line)
  return line.length > 600 ? `${line.slice(0, 597)}...` : line
}

/** The stack of the error and of each cause, for --debug, redacted. */
export function describeStack(error: unknown): string {
  return redact(
    chain(error)
      .map(
        (e, i) =>
          `${i === 0 ? '' : 'caused by: '}${e instanceof Error ? (e.stack ?? e.message) : String(e)}`,
      )
      .join('\n'),
  )
}

// `scheme://user:password@`, up to the last `@` before whitespace (a password may hold an
// unencoded `@`; over-redacting is fine), and password query parameters (`?password=...`, as
// ioredis and pg read them).
const URL_PASSWORD = /([a-z][a-z0-9+.-]*:\/\/)([^\s:@/]*):(\S*)@/gi
const QUERY_PASSWORD = /([?&](?:password|pass|pwd)=)[^&\s#]*/gi

/** `text` with every password in a URL replaced by `***` (`redis://user:***@host`). */
export function redact(text: string): string {
  return text.replace(URL_PASSWORD, '$1$2:***@').replace(QUERY_PASSWORD, '$1***')
}
