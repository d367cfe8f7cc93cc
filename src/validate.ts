/**
 * Every input rule in one place (pg-boss's attorney.ts is the model): option objects and their
 * known keys, milliseconds, resource and candidate names, tickets, tokens, metadata, and the
 * requests a backend receives. Each rule throws an OptionsError naming the field, the value
 * and the rule.
 */
import type {
  AcquireRequest,
  Json,
  ReleaseRequest,
  RenewRequest,
  WriteRecordRequest,
} from './backend.js'
import { OptionsError } from './errors.js'

/** The largest delay a Node timer takes. */
export const MAX_MS = 2 ** 31 - 1

/** True for a name that may hold a secret (`password`, `token`, `apiKey`...). */
export function isSecretName(name: string): boolean {
  return /pass|secret|token|key/i.test(name)
}

/** An option's or parameter's value as an error may show it: `***` for what may be a secret. */
export function shownValue(name: string, value: unknown): unknown {
  return isSecretName(name) ? '***' : value
}

/**
 * Checks that `options` is an object (or undefined) whose keys are all in `known`; an unknown
 * key's value is shown only if its name does not look like a secret's. `notObject` is the rule
 * for a value that is not an options object.
 */
export function checkOptions<T extends object>(
  options: T | undefined,
  known: readonly string[],
  what: string,
  notObject = `${what} options must be an object.`,
): T {
  if (options === undefined) return {} as T
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new OptionsError('options', options, notObject)
  }
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) {
      throw new OptionsError(
        key,
        shownValue(key, (options as Record<string, unknown>)[key]),
        `"${key}" is not ${article(what)} ${what} option.`,
        `Known options: ${known.join(', ')}.`,
      )
    }
  }
  return options
}

/** Refuses an old option name, pointing to the one that replaced it. */
export function renamedOption(options: unknown, old: string, now: string): void {
  if (typeof options === 'object' && options !== null && Object.hasOwn(options, old)) {
    throw new OptionsError(
      old,
      (options as Record<string, unknown>)[old],
      `"${old}" was renamed.`,
      `Use ${now}.`,
    )
  }
}

function article(word: string): string {
  return /^[aeiou]/i.test(word) ? 'an' : 'a'
}

/** An integer number of milliseconds from `min` to `max` (default MAX_MS). */
export function milliseconds(field: string, value: unknown, min: number, max = MAX_MS): number {
  if (!Number.isInteger(value) || (value as number) < min || (value as number) > max) {
    throw new OptionsError(
      field,
      value,
      `${field} must be an integer number of milliseconds from ${min} to ${max}.`,
    )
  }
  return value as number
}

/** `value` if given, else `fallback`, checked as milliseconds. */
export function optionalMilliseconds(
  field: string,
  value: unknown,
  fallback: number,
  min: number,
  max = MAX_MS,
): number {
  return value === undefined ? fallback : milliseconds(field, value, min, max)
}

/** The longest lease a candidate may use, and the failover grace, when no maxLeaseMs is given. */
export const DEFAULT_MAX_LEASE_MS = 60_000

/**
 * maxLeaseMs checked (default DEFAULT_MAX_LEASE_MS): from 10 ms, the shortest lease, to MAX_MS.
 * Shared by the backends with a grace after a failover (redis, postgres).
 */
export function checkMaxLeaseMs(value: unknown): number {
  if (value === undefined) return DEFAULT_MAX_LEASE_MS
  if (!Number.isInteger(value) || (value as number) < 10 || (value as number) > MAX_MS) {
    throw new OptionsError(
      'maxLeaseMs',
      value,
      `maxLeaseMs must be an integer number of milliseconds from 10 to ${MAX_MS}: the longest lease any candidate uses (the same on every candidate).`,
    )
  }
  return value as number
}

/**
 * A lease longer than the backend's maxLeaseMs, refused: a grace after a failover lasts
 * maxLeaseMs, so a longer grant could outlive it on a server that missed it.
 */
export function checkLeaseWithin(backend: string, leaseMs: number, maxLeaseMs: number): void {
  if (leaseMs > maxLeaseMs) {
    throw new OptionsError(
      'leaseMs',
      leaseMs,
      `leaseMs must be at most the ${backend} backend's maxLeaseMs (${maxLeaseMs}): a grace after a failover lasts maxLeaseMs, so a longer grant could outlive it.`,
      `Give maxLeaseMs: ${leaseMs} or more (in a URL ?maxLeaseMs=${leaseMs}) to the backend of every candidate.`,
    )
  }
}

// The rules the core checks at construction and every backend on each call.

const RESOURCE = /^[A-Za-z0-9_.@=:-]+(\/[A-Za-z0-9_.@=:-]+)*$/
/** The longest resource name. */
export const MAX_RESOURCE_LENGTH = 200
const CANDIDATE = /^[\x21-\x7e]+$/
/** The longest candidate id. */
export const MAX_CANDIDATE_LENGTH = 200
/** The largest metadata, as JSON bytes. */
export const MAX_METADATA_BYTES = 4096
/** The most tickets a resource may have. */
export const MAX_TICKETS = 10_000

/**
 * Names already found valid (a string cannot change): each backend call checks its resource and
 * candidate again, and the same few names come back on every call. Bounded: past the limit the
 * memo starts over.
 */
const validResources = new Set<string>()
const validCandidates = new Set<string>()
const VALID_NAMES_LIMIT = 10_000

function remember(valid: Set<string>, name: string): void {
  if (valid.size >= VALID_NAMES_LIMIT) valid.clear()
  valid.add(name)
}

/** A resource name: 1 to 200 characters of letters, digits and `. _ - : @ =`, slash-separated segments. */
export function validateResource(resource: unknown, field = 'resource'): string {
  if (typeof resource === 'string' && validResources.has(resource)) return resource
  if (
    typeof resource !== 'string' ||
    resource.length === 0 ||
    resource.length > MAX_RESOURCE_LENGTH ||
    !RESOURCE.test(resource)
  ) {
    throw new OptionsError(
      field,
      resource,
      `A resource name is 1 to ${MAX_RESOURCE_LENGTH} characters of letters, digits and . _ - : @ =, in segments separated by single slashes (e.g. "reports/nightly").`,
    )
  }
  remember(validResources, resource)
  return resource
}

/** A candidate id: 1 to 200 printable ASCII characters without spaces. */
export function validateCandidate(candidate: unknown, field = 'candidate'): string {
  if (typeof candidate === 'string' && validCandidates.has(candidate)) return candidate
  if (
    typeof candidate !== 'string' ||
    candidate.length === 0 ||
    candidate.length > MAX_CANDIDATE_LENGTH ||
    !CANDIDATE.test(candidate)
  ) {
    throw new OptionsError(
      field,
      candidate,
      `A candidate id is 1 to ${MAX_CANDIDATE_LENGTH} printable ASCII characters without spaces.`,
    )
  }
  remember(validCandidates, candidate)
  return candidate
}

/** How many may hold at once: an integer from 1 to MAX_TICKETS. */
export function validateTickets(tickets: unknown, field = 'tickets'): number {
  if (!Number.isInteger(tickets) || (tickets as number) < 1 || (tickets as number) > MAX_TICKETS) {
    throw new OptionsError(field, tickets, `tickets must be an integer from 1 to ${MAX_TICKETS}.`)
  }
  return tickets as number
}

/** A lease: an integer number of milliseconds from 10. */
export function validateLeaseMs(leaseMs: unknown, field = 'leaseMs'): number {
  return milliseconds(field, leaseMs, 10)
}

/** A fencing token: a positive safe integer. */
export function validateToken(token: unknown, field = 'token'): number {
  if (!Number.isSafeInteger(token) || (token as number) < 1) {
    throw new OptionsError(field, token, 'A token is a positive safe integer.')
  }
  return token as number
}

/** Metadata must be plain JSON (what every backend can store) and small. */
export function validateMetadata(metadata: unknown, field = 'metadata'): Json {
  if (metadata === undefined) return null
  let text: string | undefined
  try {
    text = JSON.stringify(metadata)
  } catch {
    text = undefined
  }
  if (text === undefined || !isPlainJson(metadata)) {
    throw new OptionsError(
      field,
      metadata,
      'metadata must be a plain JSON value (objects, arrays, strings, finite numbers, booleans, null).',
    )
  }
  if (Buffer.byteLength(text) > MAX_METADATA_BYTES) {
    throw new OptionsError(
      field,
      metadata,
      `metadata must serialise to at most ${MAX_METADATA_BYTES} bytes of JSON (it is ${Buffer.byteLength(text)}).`,
    )
  }
  return metadata as Json
}

function isPlainJson(value: unknown, depth = 0): boolean {
  if (depth > 32) return false
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return true
  if (typeof value === 'number') return Number.isFinite(value)
  if (Array.isArray(value)) return value.every((v) => isPlainJson(v, depth + 1))
  if (typeof value === 'object') {
    const proto = Object.getPrototypeOf(value) as unknown
    if (proto !== Object.prototype && proto !== null) return false
    return Object.values(value).every((v) => isPlainJson(v, depth + 1))
  }
  return false
}

/** Every field of an acquire request, as a backend receives it. */
export function validateAcquire(request: AcquireRequest): void {
  validateResource(request.resource)
  validateCandidate(request.candidate)
  validateTickets(request.tickets)
  validateLeaseMs(request.leaseMs)
  validateMetadata(request.metadata)
}

/**
 * Every field of a renew request, as a backend receives it. A queued renewal (`queued: true`)
 * keeps a place in line, not a grant, so its token is 0; any other renewal names a grant.
 */
export function validateRenew(request: RenewRequest): void {
  validateResource(request.resource)
  validateCandidate(request.candidate)
  const queued = (request as { queued?: unknown }).queued
  if (queued !== undefined && queued !== true)
    throw new OptionsError('queued', queued, 'A renewal is queued (true) or not (absent).')
  if (queued === true) {
    if (request.token !== 0)
      throw new OptionsError(
        'token',
        request.token,
        'A queued renewal keeps a place, not a grant: its token is 0.',
      )
  } else validateToken(request.token)
  validateLeaseMs(request.leaseMs)
}

/** Every field of a release request, as a backend receives it. */
export function validateRelease(request: ReleaseRequest): void {
  validateResource(request.resource)
  validateCandidate(request.candidate)
  if (request.token !== undefined) validateToken(request.token)
}

// Durations as people write them: the one parser of the CLI's flags (and anything else that
// takes a duration as text).

const DURATION_UNITS: Readonly<Record<string, number>> = {
  h: 3_600_000,
  m: 60_000,
  s: 1_000,
  ms: 1,
}
const DURATION_PART = /(\d+(?:\.\d+)?)(ms|h|m|s)/y

/**
 * A duration in milliseconds from text: `500ms`, `2s`, `1.5s`, `2m`, `1h`, combined from the
 * largest unit down (`1m30s`, `1h30m`, `2s500ms`), or a plain whole number of milliseconds (`1500`).
 * Undefined for anything else (a negative, an empty string, `30s1m`, a unit twice, a fraction
 * before the last part as `1.5m30s`, a part not below the unit before it as `1m90s`, or a result
 * that is not a whole number of milliseconds as `1.5ms`).
 */
export function parseDuration(text: string): number | undefined {
  const value = text.trim()
  if (value === '') return undefined
  if (/^\d+$/.test(value)) return Number(value)
  let total = 0
  let last = Infinity
  for (let at = 0; at < value.length;) {
    DURATION_PART.lastIndex = at
    const part = DURATION_PART.exec(value)
    if (!part) return undefined
    const size = DURATION_UNITS[part[2]!]!
    if (size >= last) return undefined
    const amount = Number(part[1])
    // After a larger unit a part stays below it (`1m90s` is refused: say `2m30s`).
    if (last !== Infinity && amount * size >= last) return undefined
    last = size
    total += amount * size
    at = DURATION_PART.lastIndex
    // A fraction only on the last part (`1.5m30s` is refused).
    if (part[1]!.includes('.') && at < value.length) return undefined
  }
  // A whole number of milliseconds only (`0.4ms`, `1.5ms`, `1.0005s` are refused).
  const whole = Math.round(total)
  return Math.abs(total - whole) < 1e-6 ? whole : undefined
}

/** `90000` -> `1m30s`, `1500` -> `1.5s`, `250` -> `250ms`: what parseDuration reads back. */
export function formatDuration(ms: number): string {
  const whole = Math.round(ms)
  if (whole < 1_000) return `${whole}ms`
  if (whole < 60_000) return `${whole / 1_000}s`
  const h = Math.floor(whole / 3_600_000)
  const m = Math.floor((whole % 3_600_000) / 60_000)
  const s = (whole % 60_000) / 1_000
  return `${h ? `${h}h` : ''}${m ? `${m}m` : ''}${s ? `${s}s` : ''}`
}

/** What a duration flag's error says it takes. */
export const DURATION_RULE =
  'a duration such as 500ms, 2s, 1.5s, 2m, 1m30s or 1h (a plain number is milliseconds)'
/** A record key: the rules of a resource name (short, and safe in every backend's key space). */
export function validateRecordKey(key: unknown, field = 'key'): string {
  return validateResource(key, field)
}

/** Every field of a writeRecord request, as a backend receives it. Values are metadata-sized JSON. */
export function validateWriteRecord(request: WriteRecordRequest): void {
  validateResource(request.resource)
  validateRecordKey(request.key)
  validateToken(request.token)
  validateMetadata(request.value, 'value')
  if (!Number.isSafeInteger(request.version) || request.version < 0) {
    throw new OptionsError(
      'version',
      request.version,
      'A record version is a non-negative safe integer (0: no record was read).',
    )
  }
}
