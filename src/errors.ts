/**
 * The catalogue of conclave's errors: every error class of the package, one class per code, and
 * `CODES`, the map from each code to its class and to how the class is rebuilt from its wire form
 * (src/ipc/envelope.ts rebuilds errors that cross IPC from it, for the cluster hub and the
 * process agent alike). The README's "Every code" table has a row for each code in CODES and
 * each warning code in WARNING_CODES (test/docs/error-codes.test.ts checks it).
 */
import { inspect } from 'node:util'

// --- the bases -------------------------------------------------------------------------------

/** Every error conclave throws has a stable `code`, so callers can branch without parsing text. */
export class ConclaveError extends Error {
  readonly code: string
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
    this.code = code
  }
}

/** An error of the process agent: `retryable` says whether calling again may succeed. */
export class AgentError extends ConclaveError {
  /**
   * True when the failure is about where or when the call ran (the designated process died,
   * nobody answered in time); false when calling again with the same input fails the same way.
   */
  readonly retryable: boolean
  constructor(code: string, message: string, retryable: boolean, options?: { cause?: unknown }) {
    super(code, message, options)
    this.retryable = retryable
  }
}

// --- elections and backends ------------------------------------------------------------------

/** A bad option, resource name, URL or flag: names the field, the value and the rule. */
export class OptionsError extends ConclaveError {
  readonly field: string
  readonly value: unknown
  readonly rule: string
  constructor(field: string, value: unknown, rule: string, hint?: string) {
    super(
      'ERR_CONCLAVE_OPTIONS',
      `Invalid ${field}: ${describe(value)}. ${rule}${hint ? ` ${hint}` : ''}`,
    )
    this.field = field
    this.value = value
    this.rule = rule
  }
}

/**
 * Why a term ended: resigned (by this process), expired (its deadline passed unrenewed), lost
 * (the backend no longer had it), closed (the election or backend closed).
 */
export type TermEndReason = 'resigned' | 'expired' | 'lost' | 'closed'

/** Thrown by `term.assertActive()` and used as the reason of an ended term's signal. */
export class LeadershipLostError extends ConclaveError {
  readonly reason: TermEndReason
  readonly resource: string
  readonly token: number
  constructor(resource: string, token: number, reason: TermEndReason) {
    super(
      'ERR_CONCLAVE_LEADERSHIP_LOST',
      `Term ${token} on "${resource}" has ended (${reason}); stop acting as its leader.`,
    )
    this.reason = reason
    this.resource = resource
    this.token = token
  }
}

/** A call on something closed (ElectionClosedError, BackendClosedError): final, never retried. */
export class ClosedError extends ConclaveError {
  constructor(message: string) {
    super('ERR_CONCLAVE_CLOSED', message)
  }
}

/** The election was closed; nothing more can be started on it. */
export class ElectionClosedError extends ClosedError {
  constructor(resource: string) {
    super(`The election on "${resource}" is closed.`)
  }
}

/** The backend was closed: final, never retried (the core ends its terms before it closes). */
export class BackendClosedError extends ClosedError {
  constructor(backend: string) {
    super(`The ${backend} backend is closed.`)
  }
}

/** A second campaign was started while one is still pending on the same election. */
export class BusyError extends ConclaveError {
  constructor(resource: string, what: string) {
    super('ERR_CONCLAVE_BUSY', `The election on "${resource}" is already ${what}.`)
  }
}

/** A backend call failed (connection, server error, protocol); retried by the election core. */
export class BackendError extends ConclaveError {
  /** `code` is for BackendTimeoutError; other callers should throw that class instead. */
  constructor(message: string, options?: { cause?: unknown; code?: string }) {
    super(options?.code ?? 'ERR_CONCLAVE_BACKEND', message, options)
  }
}

/** A backend call got no answer in time (a BackendError, retried like one). */
export class BackendTimeoutError extends BackendError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, { ...options, code: 'ERR_CONCLAVE_TIMEOUT' })
  }
}

/** A candidate asked for other tickets than the resource's grants were made with: final. */
export class TicketsMismatchError extends ConclaveError {
  readonly resource: string
  /** What this candidate asked for. */
  readonly tickets: number
  /** What the resource's current grants were made with. */
  readonly held: number
  constructor(resource: string, tickets: number, held: number) {
    super(
      'ERR_CONCLAVE_TICKETS_MISMATCH',
      `"${resource}" is held with tickets ${held}; this candidate asked for tickets ${tickets}. All candidates of a resource must use the same tickets.`,
    )
    this.resource = resource
    this.tickets = tickets
    this.held = held
  }
}

/** The leader's own work (a `run()`/`every()` callback, a singleton's start/stop) threw: `cause`. */
export class WorkError extends ConclaveError {
  readonly resource: string
  readonly token: number
  constructor(resource: string, token: number, cause: unknown) {
    super(
      'ERR_CONCLAVE_WORK',
      `The work of term ${token} on "${resource}" threw: ${cause instanceof Error ? cause.message : describe(cause)}`,
      { cause },
    )
    this.resource = resource
    this.token = token
  }
}

/** An optional peer dependency (ioredis, pg, etcd3, prom-client) is not installed: final. */
export class MissingPeerError extends ConclaveError {
  readonly peer: string
  /** `message` replaces the usual wording (electionMetrics() names its `client` option). */
  constructor(peer: string, what: string, options?: { cause?: unknown; message?: string }) {
    super(
      'ERR_CONCLAVE_MISSING_PEER',
      options?.message ??
        `${what} needs the package "${peer}", which is not installed: npm install ${peer}`,
      options && 'cause' in options ? { cause: options.cause } : undefined,
    )
    this.peer = peer
  }
}

/** A malformed message on a conclave IPC channel. */
export class ProtocolError extends ConclaveError {
  constructor(message: string) {
    super('ERR_CONCLAVE_PROTOCOL', message)
  }
}

// --- the cluster backend ---------------------------------------------------------------------

/** An error from the cluster hub that is none of conclave's: `code` is its own, or ERR_CONCLAVE_REMOTE. */
export class RemoteHubError extends ConclaveError {
  constructor(message: string, remoteCode?: string) {
    super(remoteCode ?? 'ERR_CONCLAVE_REMOTE', message)
  }
}

/** The cluster hub refused a candidate id that holds the resource from another process. */
export class CandidateInUseError extends ConclaveError {
  readonly resource: string
  readonly candidate: string
  constructor(resource: string, candidate: string) {
    super(
      'ERR_CONCLAVE_CANDIDATE_IN_USE',
      `Candidate id ${JSON.stringify(candidate)} already holds "${resource}" from another process. Candidate ids must be unique per process (the default hostname:pid:random is).`,
    )
    this.resource = resource
    this.candidate = candidate
  }
}

/** `serveCluster()` was called in a cluster worker. */
export class NotPrimaryError extends ConclaveError {
  constructor() {
    super(
      'ERR_CONCLAVE_NOT_PRIMARY',
      'serveCluster() runs in the cluster primary; workers call clusterBackend().',
    )
  }
}

/** A cluster worker (of clusterBackend() or the agent) has no IPC channel to its primary. */
export class NoIpcError extends AgentError {
  constructor() {
    super('ERR_CONCLAVE_NO_IPC', 'This cluster worker has no IPC channel to the primary.', false)
  }
}

/** `clusterBackend()` under PM2, whose processes do not share a hub (`mode`: how PM2 runs it). */
export class Pm2Error extends ConclaveError {
  readonly mode: 'fork' | 'cluster'
  constructor(mode: 'fork' | 'cluster', message: string) {
    super('ERR_CONCLAVE_PM2', message)
    this.mode = mode
  }
}

// --- the postgres backend --------------------------------------------------------------------

/** postgres: the schema is older than this conclave and `migrate` is off. */
export class SchemaOldError extends ConclaveError {
  readonly schema: string
  /** The schema's version. */
  readonly version: number
  /** The version this conclave needs. */
  readonly latest: number
  constructor(schema: string, version: number, latest: number) {
    super(
      'ERR_CONCLAVE_SCHEMA_OLD',
      `postgres: schema "${schema}" is at version ${version}, this conclave needs ${latest}, and migrate is false. Run migrate({ connectionString, schema: "${schema}" }) first.`,
    )
    this.schema = schema
    this.version = version
    this.latest = latest
  }
}

/** postgres: the schema is newer than this conclave knows. */
export class SchemaTooNewError extends ConclaveError {
  readonly schema: string
  /** The schema's version. */
  readonly version: number
  /** The newest version this conclave knows. */
  readonly latest: number
  constructor(schema: string, version: number, latest: number) {
    super(
      'ERR_CONCLAVE_SCHEMA_TOO_NEW',
      `postgres: schema "${schema}" is at version ${version}, newer than this conclave knows (${latest}). Upgrade conclave in this process, or give it another schema.`,
    )
    this.schema = schema
    this.version = version
    this.latest = latest
  }
}

// --- fencing ---------------------------------------------------------------------------------

/** `conclave/fence`: a write's token is older than the newest the target has seen; drop it. */
export class StaleTokenError extends ConclaveError {
  /** What was guarded: a Redis key, a table row, a memory-fence key. */
  readonly target: string
  /** The token the write carried. */
  readonly token: number
  /** The highest token the target had seen (greater than `token`). */
  readonly highest: number
  constructor(target: string, token: number, highest: number) {
    super(
      'ERR_CONCLAVE_STALE_TOKEN',
      `Stale fencing token ${token} for ${target}: it has seen token ${highest}. A newer leader has written; this writer's term is over.`,
    )
    this.target = target
    this.token = token
    this.highest = highest
  }
}

// --- the process agent -----------------------------------------------------------------------

/** The designated process exited, disconnected or lost its term while running the call. */
export class DesignatedLostError extends AgentError {
  constructor(message: string) {
    super('ERR_CONCLAVE_AGENT_DESIGNATED_LOST', message, true)
  }
}

/** A worker asked in a `gather` exited or disconnected before it answered. */
export class WorkerLostError extends AgentError {
  constructor(message: string) {
    super('ERR_CONCLAVE_AGENT_WORKER_LOST', message, true)
  }
}

/** No answer within the call's `timeoutMs`. */
export class AgentTimeoutError extends AgentError {
  constructor(message: string) {
    super('ERR_CONCLAVE_AGENT_TIMEOUT', message, true)
  }
}

/** The process that received the call has no handler under that name. */
export class NoHandlerError extends AgentError {
  constructor(message: string) {
    super('ERR_CONCLAVE_AGENT_NO_HANDLER', message, false)
  }
}

/** An argument or result cannot be carried over this cluster's IPC serialization. */
export class NotSerializableError extends AgentError {
  /** Where in the value, e.g. `args[0].tags` or `result.when`. */
  readonly path: string
  readonly serialization: 'json' | 'advanced'
  constructor(path: string, serialization: 'json' | 'advanced', rule: string) {
    super(
      'ERR_CONCLAVE_AGENT_NOT_SERIALIZABLE',
      `Cannot carry ${path} over IPC with serialization "${serialization}": ${rule}`,
      false,
    )
    this.path = path
    this.serialization = serialization
  }
}

/** The agent was closed; nothing more can be called through it. */
export class AgentClosedError extends AgentError {
  constructor(message = 'The process agent is closed.') {
    super('ERR_CONCLAVE_AGENT_CLOSED', message, false)
  }
}

/** A worker's IPC channel to the primary closed (retryable: the call may go through again). */
export class AgentDisconnectedError extends AgentError {
  constructor(message: string) {
    super('ERR_CONCLAVE_AGENT_DISCONNECTED', message, true)
  }
}

/** A `runInPrimary` call reached a process that is no longer designated; the primary routes it again. */
export class NotDesignatedError extends AgentError {
  constructor(message: string) {
    super('ERR_CONCLAVE_AGENT_NOT_DESIGNATED', message, true)
  }
}

/** `startAgent(options)` after the default agent started. */
export class AgentStartedError extends AgentError {
  constructor() {
    super(
      'ERR_CONCLAVE_AGENT_STARTED',
      'The default agent is already started; startAgent(options) must come before any other agent call.',
      false,
    )
  }
}

/** A handler's error from another process: its remote `name`, `message`, `code` and `stack`. */
export class RemoteError extends Error {
  code?: string | number
  readonly retryable = false
  /** The process whose handler threw. */
  readonly remote: { workerId: number; pid: number }
  constructor(
    wire: { name: string; message: string; code?: string | number; stack?: string },
    remote: { workerId: number; pid: number },
  ) {
    super(wire.message)
    this.name = wire.name
    if (wire.code !== undefined) this.code = wire.code
    this.remote = remote
    const where = `    at <conclave agent: worker ${remote.workerId}, pid ${remote.pid}>`
    this.stack = wire.stack ? `${wire.stack}\n${where}` : `${wire.name}: ${wire.message}\n${where}`
  }
}

// --- the command line ------------------------------------------------------------------------

/** A bad command line: the CLI exits with code 2. */
export class UsageError extends ConclaveError {
  constructor(message: string) {
    super('ERR_CONCLAVE_USAGE', message)
  }
}

/**
 * The Redis backend met a Redis Cluster through a plain client (`MOVED`, `ASK`, `CROSSSLOT`,
 * `CLUSTERDOWN` for the keys of one resource): asking again never helps, so it is final.
 */
export class RedisClusterError extends ConclaveError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_CONCLAVE_REDIS_CLUSTER', message, options)
  }
}

// --- the catalogue ---------------------------------------------------------------------------

/** An error's wire form as the receiving side has read it: what a class is rebuilt from. */
export interface WireForm {
  /** The sender's `name` (tells ElectionClosedError from BackendClosedError). */
  name: string | undefined
  message: string
  /** The class's own fields, as the sender carried them (any may be missing or mistyped). */
  fields: Readonly<Record<string, unknown>>
}

/** One code of the catalogue: its class, the fields the wire carries, and its rebuild. */
export interface CodeEntry {
  /** The class every error of this code is an instance of. */
  readonly class: abstract new (...args: never[]) => ConclaveError
  /** The instance fields that cross IPC (plain JSON values only). */
  readonly fields: readonly string[]
  /** Calling again cannot fix it: the core never retries it (see isFinal). */
  readonly final?: true
  /** A new error of the class from its wire form; the receiver then sets the remote message. */
  fromWire(wire: WireForm): ConclaveError
}

const str = (v: unknown, fallback = ''): string => (typeof v === 'string' ? v : fallback)
const num = (v: unknown): number => (typeof v === 'number' ? v : Number.NaN)
const REASONS: readonly string[] = ['resigned', 'expired', 'lost', 'closed']
const reason = (v: unknown): TermEndReason =>
  (REASONS.includes(str(v)) ? v : 'lost') as TermEndReason

/**
 * Every error code conclave throws, each with its class (errors whose constructors build their
 * message from parts are rebuilt with placeholders: the receiver sets the remote message).
 */
export const CODES = {
  ERR_CONCLAVE_OPTIONS: {
    class: OptionsError,
    fields: ['field', 'value', 'rule'],
    final: true,
    fromWire: ({ fields: f }) => new OptionsError(str(f.field, 'unknown'), f.value, str(f.rule)),
  },
  ERR_CONCLAVE_LEADERSHIP_LOST: {
    class: LeadershipLostError,
    fields: ['resource', 'token', 'reason'],
    fromWire: ({ fields: f }) =>
      new LeadershipLostError(str(f.resource), num(f.token), reason(f.reason)),
  },
  ERR_CONCLAVE_CLOSED: {
    class: ClosedError,
    fields: [],
    final: true,
    fromWire: ({ name, message }) =>
      name === 'ElectionClosedError'
        ? new ElectionClosedError('')
        : name === 'BackendClosedError'
          ? new BackendClosedError('')
          : new ClosedError(message),
  },
  ERR_CONCLAVE_BUSY: {
    class: BusyError,
    fields: [],
    fromWire: () => new BusyError('', ''),
  },
  ERR_CONCLAVE_BACKEND: {
    class: BackendError,
    fields: [],
    fromWire: ({ message }) => new BackendError(message),
  },
  ERR_CONCLAVE_TIMEOUT: {
    class: BackendTimeoutError,
    fields: [],
    fromWire: ({ message }) => new BackendTimeoutError(message),
  },
  ERR_CONCLAVE_TICKETS_MISMATCH: {
    class: TicketsMismatchError,
    fields: ['resource', 'tickets', 'held'],
    final: true,
    fromWire: ({ fields: f }) =>
      new TicketsMismatchError(str(f.resource), num(f.tickets), num(f.held)),
  },
  ERR_CONCLAVE_WORK: {
    class: WorkError,
    fields: ['resource', 'token'],
    fromWire: ({ fields: f, message }) =>
      new WorkError(str(f.resource), num(f.token), new Error(message)),
  },
  ERR_CONCLAVE_MISSING_PEER: {
    class: MissingPeerError,
    fields: ['peer'],
    final: true,
    fromWire: ({ fields: f }) => new MissingPeerError(str(f.peer), ''),
  },
  ERR_CONCLAVE_PROTOCOL: {
    class: ProtocolError,
    fields: [],
    fromWire: ({ message }) => new ProtocolError(message),
  },
  ERR_CONCLAVE_REMOTE: {
    class: RemoteHubError,
    fields: [],
    fromWire: ({ message }) => new RemoteHubError(message),
  },
  ERR_CONCLAVE_CANDIDATE_IN_USE: {
    class: CandidateInUseError,
    fields: ['resource', 'candidate'],
    fromWire: ({ fields: f }) => new CandidateInUseError(str(f.resource), str(f.candidate)),
  },
  ERR_CONCLAVE_NOT_PRIMARY: {
    class: NotPrimaryError,
    fields: [],
    fromWire: () => new NotPrimaryError(),
  },
  ERR_CONCLAVE_NO_IPC: {
    class: NoIpcError,
    fields: [],
    fromWire: () => new NoIpcError(),
  },
  ERR_CONCLAVE_PM2: {
    class: Pm2Error,
    fields: ['mode'],
    fromWire: ({ fields: f, message }) =>
      new Pm2Error(f.mode === 'fork' ? 'fork' : 'cluster', message),
  },
  ERR_CONCLAVE_SCHEMA_OLD: {
    class: SchemaOldError,
    fields: ['schema', 'version', 'latest'],
    fromWire: ({ fields: f }) => new SchemaOldError(str(f.schema), num(f.version), num(f.latest)),
  },
  ERR_CONCLAVE_SCHEMA_TOO_NEW: {
    class: SchemaTooNewError,
    fields: ['schema', 'version', 'latest'],
    fromWire: ({ fields: f }) =>
      new SchemaTooNewError(str(f.schema), num(f.version), num(f.latest)),
  },
  ERR_CONCLAVE_STALE_TOKEN: {
    class: StaleTokenError,
    fields: ['target', 'token', 'highest'],
    fromWire: ({ fields: f }) => new StaleTokenError(str(f.target), num(f.token), num(f.highest)),
  },
  ERR_CONCLAVE_USAGE: {
    class: UsageError,
    fields: [],
    fromWire: ({ message }) => new UsageError(message),
  },
  ERR_CONCLAVE_AGENT_CLOSED: {
    class: AgentClosedError,
    fields: [],
    fromWire: ({ message }) => new AgentClosedError(message),
  },
  ERR_CONCLAVE_AGENT_DESIGNATED_LOST: {
    class: DesignatedLostError,
    fields: [],
    fromWire: ({ message }) => new DesignatedLostError(message),
  },
  ERR_CONCLAVE_AGENT_DISCONNECTED: {
    class: AgentDisconnectedError,
    fields: [],
    fromWire: ({ message }) => new AgentDisconnectedError(message),
  },
  ERR_CONCLAVE_AGENT_NOT_DESIGNATED: {
    class: NotDesignatedError,
    fields: [],
    fromWire: ({ message }) => new NotDesignatedError(message),
  },
  ERR_CONCLAVE_AGENT_NOT_SERIALIZABLE: {
    class: NotSerializableError,
    fields: ['path', 'serialization'],
    fromWire: ({ fields: f }) =>
      new NotSerializableError(
        str(f.path, 'a value'),
        f.serialization === 'advanced' ? 'advanced' : 'json',
        '',
      ),
  },
  ERR_CONCLAVE_AGENT_NO_HANDLER: {
    class: NoHandlerError,
    fields: [],
    fromWire: ({ message }) => new NoHandlerError(message),
  },
  ERR_CONCLAVE_AGENT_STARTED: {
    class: AgentStartedError,
    fields: [],
    fromWire: () => new AgentStartedError(),
  },
  ERR_CONCLAVE_AGENT_TIMEOUT: {
    class: AgentTimeoutError,
    fields: [],
    fromWire: ({ message }) => new AgentTimeoutError(message),
  },
  ERR_CONCLAVE_AGENT_WORKER_LOST: {
    class: WorkerLostError,
    fields: [],
    fromWire: ({ message }) => new WorkerLostError(message),
  },
  ERR_CONCLAVE_REDIS_CLUSTER: {
    class: RedisClusterError,
    fields: [],
    final: true,
    fromWire: ({ message }) => new RedisClusterError(message),
  },
} as const satisfies Readonly<Record<string, CodeEntry>>

/** One of conclave's error codes. */
export type ErrorCode = keyof typeof CODES

/** The catalogue entry of `code`, or undefined for a code that is not conclave's. */
export function codeEntry(code: unknown): CodeEntry | undefined {
  // Object.hasOwn: a code such as "constructor" must not reach Object.prototype.
  return typeof code === 'string' && Object.hasOwn(CODES, code)
    ? (CODES as Readonly<Record<string, CodeEntry>>)[code]
    : undefined
}

/**
 * Codes whose errors calling again cannot fix: the core never retries them (a campaign
 * rejects with the error at once).
 */
export const FINAL_CODES: ReadonlySet<string> = new Set(
  Object.entries(CODES as Readonly<Record<string, CodeEntry>>)
    .filter(([, entry]) => entry.final === true)
    .map(([code]) => code),
)

/** True for an error calling again cannot fix (see FINAL_CODES). */
export function isFinal(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' && FINAL_CODES.has(code)
}

// --- warnings --------------------------------------------------------------------------------

/** The cluster backend granted a term in a process that forked no worker (process warning). */
export const STANDALONE_CLUSTER_WARNING = 'CONCLAVE_STANDALONE_CLUSTER'
/** The Redis server publishes no keyspace events, so a grant deleted by hand is noticed late. */
export const REDIS_KEYSPACE_WARNING = 'CONCLAVE_REDIS_KEYSPACE'
/** The Redis server's maxmemory-policy may evict conclave's keys (a live grant, a token). */
export const REDIS_EVICTION_WARNING = 'CONCLAVE_REDIS_EVICTION'
/** The etcd cluster runs a release whose leases are unsafe across a leader change (docs/etcd.md). */
export const ETCD_VERSION_WARNING = 'CONCLAVE_ETCD_VERSION'
/** The codes of conclave's process warnings (`process.emitWarning`, type ConclaveWarning): not errors. */
export const WARNING_CODES: readonly string[] = [
  STANDALONE_CLUSTER_WARNING,
  REDIS_KEYSPACE_WARNING,
  REDIS_EVICTION_WARNING,
  ETCD_VERSION_WARNING,
]

// --- messages --------------------------------------------------------------------------------

/** A short, readable rendering of a bad value for error messages (NaN, functions and all). */
export function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  const text = inspect(value, {
    depth: 3,
    breakLength: Infinity,
    maxArrayLength: 10,
    maxStringLength: 60,
  })
  return text.length > 80 ? `${text.slice(0, 77)}...` : text
}
