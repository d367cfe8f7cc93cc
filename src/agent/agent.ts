/**
 * The process agent: run a function in one designated process of a node:cluster app, ask
 * every worker and collect one answer each, or tell every worker something.
 *
 * The designated process is the elected holder of a reserved resource on the cluster backend,
 * so it fails over like any leader: when it dies, the calls it was running fail with a
 * retryable DesignatedLostError and new calls go to its successor. Workers cannot reach each
 * other, so every message goes through the primary, which routes calls to the current holder
 * (or runs them itself when it is the designated process: `designated: 'primary'`).
 */
import { AsyncLocalStorage } from 'node:async_hooks'
import cluster, { type Worker } from 'node:cluster'
import { EventEmitter } from 'node:events'
import { clusterBackend } from '../backends/cluster/index.js'
import type { Backend, Holder } from '../backend.js'
import { validateLeaseMs, validateResource } from '../backend.js'
import { Election } from '../election.js'
import { OptionsError, ProtocolError } from '../errors.js'
import { envelope, isId, isOurs } from '../ipc/envelope.js'
import type { Term } from '../term.js'
import {
  AgentClosedError,
  AgentError,
  AgentTimeoutError,
  DesignatedLostError,
  NoHandlerError,
  WorkerLostError,
} from './errors.js'
import {
  AGENT_NAMESPACE,
  errorFromWire,
  errorToWire,
  type FromPrimary,
  type FromWorker,
  idPrefix,
  isName,
  MAX_NAME_LENGTH,
  NOT_DESIGNATED,
  type Outcome,
  parseFromWorker,
  type Peer,
  type WireEntry,
} from './protocol.js'
import {
  assertCarriable,
  copyValue,
  primarySerialization,
  type Serialization,
} from './serialize.js'

export type Handler = (...args: never[]) => unknown

export interface AgentOptions {
  /** Primary: who campaigns to be the designated process. Default `'worker'`. Workers learn it. */
  designated?: 'worker' | 'primary'
  /** Default timeout of `call`/`runInPrimary` calls, ms. Default 10000. */
  timeoutMs?: number
  /** Default timeout of `gather`, per worker, ms. Default 5000. */
  gatherTimeoutMs?: number
  /** Lease of the designated process's grant (how long a hung one keeps it), ms. Default 10000. */
  leaseMs?: number
  /** The reserved resource the designated process holds. Default `conclave/agent/designated`. */
  resource?: string
  /** The message key marking the agent's IPC traffic. Default `conclave-agent`. */
  namespace?: string
  /** Told about malformed messages, failed sends, handler errors of broadcasts, election errors. */
  onError?: (error: Error) => void
  /** The backend to elect the designated process on. Default `clusterBackend()`. */
  backend?: Backend
}

export interface CallOptions {
  timeoutMs?: number
  signal?: AbortSignal
}

/** One worker's answer in a `gather`. */
export type GatherEntry<T = unknown> =
  | { workerId: number; pid: number; ok: true; value: T }
  | { workerId: number; pid: number; ok: false; error: Error }

/** What a handler can learn about the call it is serving (`currentCall()`). */
export interface CallContext {
  /** Aborts when the caller gives up, the call times out, or (designated calls) the term ends. */
  signal: AbortSignal
  /** The calling process (workerId 0 is the primary). */
  from: Peer
  /** `designated` for runInPrimary/call, `worker` for gather/broadcast. */
  kind: 'designated' | 'worker'
  /** Designated calls: the fencing token of the designated process's term. */
  token?: number
}

export interface AgentEvents {
  error: [error: Error]
  /** This process became the designated one. */
  designated: [term: Term]
  /** This process stopped being the designated one. */
  undesignated: []
}

const callContext = new AsyncLocalStorage<CallContext>()

/** The call being served, inside a handler (also after awaits); undefined elsewhere. */
export function currentCall(): CallContext | undefined {
  return callContext.getStore()
}

export const DESIGNATED_RESOURCE = 'conclave/agent/designated'
/** The built-in handler `clusterHealth` gathers; every worker answers "alive" until replaced. */
export const HEALTH_HANDLER = 'conclave/health'
const HELLO_EVERY_MS = 1_000

const KNOWN_OPTIONS = new Set([
  'designated',
  'timeoutMs',
  'gatherTimeoutMs',
  'leaseMs',
  'resource',
  'namespace',
  'onError',
  'backend',
])

function checkTimeout(field: string, value: unknown): number {
  if (!Number.isInteger(value) || (value as number) < 1 || (value as number) > 2 ** 31 - 1) {
    throw new OptionsError(
      field,
      value,
      `${field} must be an integer number of milliseconds from 1 to 2147483647.`,
    )
  }
  return value as number
}

function checkName(name: unknown): string {
  if (!isName(name)) {
    throw new OptionsError(
      'name',
      name,
      `A handler name is a string of 1 to ${MAX_NAME_LENGTH} characters, the same in every process.`,
    )
  }
  return name
}

function checkCallOptions(
  options: CallOptions,
  fallbackMs: number,
): { timeoutMs: number; signal?: AbortSignal } {
  if (typeof options !== 'object' || options === null) {
    throw new OptionsError('options', options, 'Call options must be an object.')
  }
  const timeoutMs =
    options.timeoutMs === undefined ? fallbackMs : checkTimeout('timeoutMs', options.timeoutMs)
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) {
    throw new OptionsError('signal', options.signal, 'signal must be an AbortSignal.')
  }
  return options.signal ? { timeoutMs, signal: options.signal } : { timeoutMs }
}

/** A handler running here for another process; `cancel` aborts its signal. */
interface Running {
  cancel(): void
}

/** A call/gather this process started and waits for. */
interface Pending {
  settle(message: FromPrimary & { type: 'result' | 'gathered' }): void
  fail(error: Error): void
}

/** Primary: a designated call being routed. */
interface Relay {
  name: string
  args: unknown[]
  timeoutMs: number
  from: Peer
  /** The id the primary sent to the target (the relay's key). */
  id: string
  target: number | undefined
  /** The term (token) of the holder the call was handed to. */
  targetToken: number | undefined
  /** How often a holder said it was not (yet) the designated process. */
  refusals: number
  done: boolean
  timer: NodeJS.Timeout
  answer(outcome: Outcome): void
}

/** Primary: a gather waiting for its workers. */
interface GatherOp {
  entries: Map<number, WireEntry>
  waiting: Map<number, string>
  done: boolean
  timer: NodeJS.Timeout
  answer(entries: WireEntry[]): void
}

export class ProcessAgent extends EventEmitter<AgentEvents> implements AsyncDisposable {
  readonly role: 'primary' | 'worker'
  readonly self: Peer
  readonly namespace: string
  readonly resource: string
  readonly #timeoutMs: number
  readonly #gatherTimeoutMs: number
  readonly #leaseMs: number
  readonly #onError: ((error: Error) => void) | undefined
  readonly #handlers = new Map<string, Handler>()
  readonly #running = new Map<string, Running>()
  readonly #designatedCalls = new Set<AbortController>()
  readonly #pending = new Map<string, Pending>()
  readonly #backend: Backend
  readonly #ownsBackend: boolean
  readonly #election: Election
  readonly #stop = new AbortController()
  readonly #prefix = idPrefix()
  #designatedMode: 'worker' | 'primary'
  #serialization: Serialization
  #seq = 0
  #closed: Promise<void> | undefined
  #term: Term | undefined
  #warned = false
  #off: (() => void)[] = []
  // worker
  #welcome: Promise<void> | undefined
  #welcomed = false
  #onWelcome: (() => void) | undefined
  // primary
  #holder: (Peer & { token: number }) | undefined
  #holderWaiters: Relay[] = []
  readonly #relays = new Map<string, Relay>()
  readonly #byCaller = new Map<string, () => void>()
  readonly #outbound = new Map<string, { workerId: number; onReply(reply: Outcome): void }>()

  constructor(options: AgentOptions = {}) {
    super()
    if (typeof options !== 'object' || options === null) {
      throw new OptionsError('options', options, 'Agent options must be an object.')
    }
    for (const key of Object.keys(options)) {
      if (!KNOWN_OPTIONS.has(key)) {
        throw new OptionsError(
          key,
          (options as Record<string, unknown>)[key],
          `"${key}" is not an agent option.`,
          `Known options: ${[...KNOWN_OPTIONS].join(', ')}.`,
        )
      }
    }
    if (
      options.designated !== undefined &&
      options.designated !== 'worker' &&
      options.designated !== 'primary'
    ) {
      throw new OptionsError(
        'designated',
        options.designated,
        "designated is 'worker' or 'primary'.",
      )
    }
    if (options.onError !== undefined && typeof options.onError !== 'function') {
      throw new OptionsError('onError', options.onError, 'onError must be a function.')
    }
    if (
      options.namespace !== undefined &&
      (typeof options.namespace !== 'string' ||
        options.namespace.length === 0 ||
        options.namespace === 'conclave')
    ) {
      throw new OptionsError(
        'namespace',
        options.namespace,
        'namespace is a non-empty string other than "conclave" (the cluster hub uses that key).',
      )
    }
    this.#timeoutMs =
      options.timeoutMs === undefined ? 10_000 : checkTimeout('timeoutMs', options.timeoutMs)
    this.#gatherTimeoutMs =
      options.gatherTimeoutMs === undefined
        ? 5_000
        : checkTimeout('gatherTimeoutMs', options.gatherTimeoutMs)
    this.#leaseMs = options.leaseMs === undefined ? 10_000 : validateLeaseMs(options.leaseMs)
    this.resource = validateResource(options.resource ?? DESIGNATED_RESOURCE)
    this.namespace = options.namespace ?? AGENT_NAMESPACE
    this.#onError = options.onError
    this.#designatedMode = options.designated ?? 'worker'
    this.role = cluster.isPrimary ? 'primary' : 'worker'
    this.self = { workerId: cluster.isPrimary ? 0 : (cluster.worker?.id ?? -1), pid: process.pid }
    this.#serialization = this.role === 'primary' ? primarySerialization() : 'json'
    if (this.role === 'worker' && typeof process.send !== 'function') {
      throw new AgentError(
        'ERR_CONCLAVE_NO_IPC',
        'This cluster worker has no IPC channel to the primary.',
        false,
      )
    }
    this.#ownsBackend = options.backend === undefined
    this.#backend = options.backend ?? clusterBackend()
    this.#election = new Election(this.#backend, this.resource, {
      leaseMs: this.#leaseMs,
      metadata: { workerId: this.self.workerId, pid: this.self.pid },
    })
    this.#election.on('error', (error) => {
      // A worker cut off from the primary has already lost its grants there: nothing to report.
      if (this.role === 'worker' && !process.connected) return
      this.#report(error)
    })
    this.#handlers.set(HEALTH_HANDLER, () => ({ ok: true }))
    if (this.role === 'primary') this.#startPrimary()
    else this.#startWorker()
  }

  /** True while this process holds the designated term (reads the clock). */
  get isDesignated(): boolean {
    return this.#term?.active ?? false
  }

  /** The IPC serialization this agent checks values against (workers: once welcomed). */
  get serialization(): Serialization {
    return this.role === 'primary' ? primarySerialization() : this.#serialization
  }

  /** Worker: resolves once the primary's agent answered (serialization known). Primary: at once. */
  ready(): Promise<void> {
    return this.#welcome ?? Promise.resolve()
  }

  /**
   * Registers `name → fn` in this process. Run the same registration in every process: the
   * designated process serves `call`s with it, every worker serves `gather`s and `broadcast`s.
   */
  register(name: string, fn: Handler, options: { replace?: boolean } = {}): this {
    checkName(name)
    if (typeof fn !== 'function') {
      throw new OptionsError('fn', fn, 'A handler is a function; it may return a promise.')
    }
    if (this.#handlers.has(name) && this.#handlers.get(name) !== fn && !options.replace) {
      throw new OptionsError(
        'name',
        name,
        'A handler with this name is already registered in this process.',
        'Use another name, or pass { replace: true }.',
      )
    }
    this.#handlers.set(name, fn)
    return this
  }

  /** Whether `name` has a handler in this process. */
  has(name: string): boolean {
    return this.#handlers.has(name)
  }

  unregister(name: string): boolean {
    return this.#handlers.delete(name)
  }

  /**
   * Registers `fn` under `name` and returns a function that runs it in the designated process
   * (locally when this is that process), resolving with its result.
   */
  runInPrimary<A extends unknown[], R>(
    name: string,
    fn: (...args: A) => R,
    options: { timeoutMs?: number } = {},
  ): (...args: A) => Promise<Awaited<R>> {
    this.register(name, fn)
    const defaults = checkCallOptions(options, this.#timeoutMs)
    return (...args: A) => this.call<Awaited<R>>(name, args, defaults)
  }

  /** Runs handler `name` with `args` in the designated process and resolves with its result. */
  async call<T = unknown>(
    name: string,
    args: unknown[] = [],
    options: CallOptions = {},
  ): Promise<T> {
    checkName(name)
    const { timeoutMs, signal } = checkCallOptions(options, this.#timeoutMs)
    if (!Array.isArray(args)) throw new OptionsError('args', args, 'args is an array of arguments.')
    if (this.#closed) throw new AgentClosedError()
    signal?.throwIfAborted()
    if (this.role === 'worker' && !this.#welcomed) await this.#awaitWelcome(timeoutMs, signal)
    assertCarriable(args, this.serialization, 'args')
    if (this.isDesignated) {
      // Same semantics as a remote call: the handler and the caller get copies.
      const local = this.#runLocal(
        'designated',
        name,
        copyValue(args, this.serialization),
        timeoutMs,
        this.self,
        true,
      )
      const outcome = await raceAbort(local.outcome, signal, timeoutMs, () => local.cancel(), name)
      return this.#unwrap<T>(outcome)
    }
    if (this.role === 'primary') {
      const outcome = await new Promise<Outcome>((resolve, reject) => {
        const onAbort = () => {
          reject(signal!.reason as Error)
          this.#cancelRelay(relay)
        }
        const relay = this.#route(name, args, timeoutMs, this.self, (o) => {
          signal?.removeEventListener('abort', onAbort)
          resolve(o)
        })
        if (!relay.done) signal?.addEventListener('abort', onAbort, { once: true })
      })
      return this.#unwrap<T>(outcome)
    }
    const message = await this.#request<FromPrimary & { type: 'result' }>(
      'call',
      name,
      args,
      timeoutMs,
      signal,
    )
    return this.#unwrap<T>(message)
  }

  /**
   * Runs handler `name` in every worker and resolves with one entry per worker, in worker id
   * order. A worker that does not answer within `timeoutMs` gets a timeout entry; a worker that
   * exits gets a WorkerLostError entry; the call itself fails only if the primary is unreachable.
   */
  async gather<T = unknown>(
    name: string,
    args: unknown[] = [],
    options: CallOptions = {},
  ): Promise<GatherEntry<T>[]> {
    checkName(name)
    const { timeoutMs, signal } = checkCallOptions(options, this.#gatherTimeoutMs)
    if (!Array.isArray(args)) throw new OptionsError('args', args, 'args is an array of arguments.')
    if (this.#closed) throw new AgentClosedError()
    signal?.throwIfAborted()
    if (this.role === 'worker' && !this.#welcomed) await this.#awaitWelcome(timeoutMs, signal)
    assertCarriable(args, this.serialization, 'args')
    let entries: WireEntry[]
    if (this.role === 'primary') {
      entries = await new Promise<WireEntry[]>((resolve, reject) => {
        const onAbort = () => {
          reject(signal!.reason as Error)
          this.#cancelGather(op)
        }
        const op = this.#gatherAll(name, args, timeoutMs, this.self, (e) => {
          signal?.removeEventListener('abort', onAbort)
          resolve(e)
        })
        if (!op.done) signal?.addEventListener('abort', onAbort, { once: true })
      })
    } else {
      // The primary answers at timeoutMs with timeout entries; the margin covers the trip back.
      const reply = await this.#request<FromPrimary & { type: 'gathered' }>(
        'gather',
        name,
        args,
        timeoutMs,
        signal,
        1_000,
      )
      entries = reply.entries
    }
    return entries.map((entry) => this.#entry<T>(entry))
  }

  /** Runs handler `name` in every worker, without waiting or collecting answers. */
  async broadcast(name: string, args: unknown[] = []): Promise<void> {
    checkName(name)
    if (!Array.isArray(args)) throw new OptionsError('args', args, 'args is an array of arguments.')
    if (this.#closed) throw new AgentClosedError()
    if (this.role === 'worker' && !this.#welcomed) await this.#awaitWelcome(this.#timeoutMs)
    assertCarriable(args, this.serialization, 'args')
    if (this.role === 'primary') this.#broadcastAll(name, args, this.self)
    else this.#send({ type: 'broadcast', name, args })
  }

  /** Stops campaigning (handing the designated role over), fails pending calls, detaches. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      const error = new AgentClosedError()
      this.#stop.abort(error)
      await this.#election.close()
      for (const off of this.#off) off()
      this.#off = []
      for (const pending of [...this.#pending.values()]) pending.fail(error)
      for (const relay of [...this.#relays.values()]) {
        this.#finishRelay(relay, { ok: false, error: errorToWire(error), by: this.self })
      }
      for (const running of this.#running.values()) running.cancel()
      // A backend passed in options belongs to the caller.
      if (this.#ownsBackend) await this.#backend.close().catch((e: unknown) => this.#report(e))
    })()
    return this.#closed
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  // ---- shared ------------------------------------------------------------------------------

  #unwrap<T>(outcome: Outcome): T {
    if (outcome.ok) return outcome.value as T
    throw errorFromWire(outcome.error, outcome.by)
  }

  #entry<T>(entry: WireEntry): GatherEntry<T> {
    const peer = { workerId: entry.workerId, pid: entry.pid }
    return entry.ok
      ? { ...peer, ok: true, value: entry.value as T }
      : { ...peer, ok: false, error: errorFromWire(entry.error, peer) }
  }

  /** Runs a handler here; the outcome is in wire form, ready to send. Never rejects. */
  #runLocal(
    kind: 'designated' | 'worker',
    name: string,
    args: unknown[],
    timeoutMs: number,
    from: Peer,
    localCaller = false,
  ): { outcome: Promise<Outcome>; cancel(): void } {
    const controller = new AbortController()
    const by = this.self
    const cancel = () =>
      controller.abort(new AgentTimeoutError(`The call of "${name}" was cancelled by its caller.`))
    const outcome = (async (): Promise<Outcome> => {
      const fn = this.#handlers.get(name)
      if (!fn) {
        return {
          ok: false,
          error: errorToWire(
            new NoHandlerError(`No handler "${name}" is registered in ${describePeer(by)}.`),
          ),
          by,
        }
      }
      const term = kind === 'designated' ? this.#term : undefined
      if (kind === 'designated' && !term?.active) {
        return {
          ok: false,
          error: {
            name: 'AgentError',
            message: `${describePeer(by)} is not the designated process.`,
            code: NOT_DESIGNATED,
            own: true,
          },
          by,
        }
      }
      const timer = setTimeout(
        () =>
          controller.abort(
            new AgentTimeoutError(`The call of "${name}" took longer than ${timeoutMs} ms.`),
          ),
        timeoutMs,
      )
      timer.unref()
      // The term's end aborts designated calls (one listener per term, see #campaign).
      if (term) this.#designatedCalls.add(controller)
      const signal = controller.signal
      const context: CallContext = { signal, from, kind, ...(term ? { token: term.token } : {}) }
      try {
        const value: unknown = await callContext.run(context, () =>
          (fn as (...a: unknown[]) => unknown)(...args),
        )
        if (term && !term.active) {
          return {
            ok: false,
            error: errorToWire(
              new DesignatedLostError(
                `${describePeer(by)} stopped being the designated process while "${name}" ran.`,
              ),
            ),
            by,
          }
        }
        // Past its deadline or cancelled: the caller has given up, whatever the handler returned.
        if (controller.signal.aborted) throw controller.signal.reason
        assertCarriable(value, this.serialization, `the result of "${name}"`)
        return { ok: true, value: localCaller ? copyValue(value, this.serialization) : value, by }
      } catch (error) {
        return { ok: false, error: errorToWire(error), by }
      } finally {
        clearTimeout(timer)
        this.#designatedCalls.delete(controller)
      }
    })()
    return { outcome, cancel }
  }

  /** Serves a run/invoke from the primary (worker), or for a worker (primary as designated). */
  #serve(
    kind: 'designated' | 'worker',
    id: string | null,
    name: string,
    args: unknown[],
    timeoutMs: number,
    from: Peer,
    answer: (outcome: Outcome) => void,
  ): void {
    const local = this.#runLocal(kind, name, args, timeoutMs, from)
    const key = id ?? `b${++this.#seq}`
    this.#running.set(key, { cancel: () => local.cancel() })
    void local.outcome.then((outcome) => {
      this.#running.delete(key)
      if (id === null) {
        if (!outcome.ok) this.#report(errorFromWire(outcome.error, outcome.by))
        return
      }
      try {
        answer(outcome)
      } catch (error) {
        // The channel closed under us: nobody is left to answer.
        this.#report(error)
      }
    })
  }

  #safeEmit<K extends 'designated' | 'undesignated'>(event: K, ...args: AgentEvents[K]): void {
    try {
      ;(this.emit as (e: K, ...a: AgentEvents[K]) => boolean)(event, ...args)
    } catch (error) {
      this.#report(error)
    }
  }

  #report(error: unknown): void {
    const err = error instanceof Error ? error : new Error(String(error))
    if (this.#onError) {
      try {
        this.#onError(err)
      } catch {
        // a throwing reporter must not break the agent
      }
    } else if (this.listenerCount('error') > 0) {
      this.emit('error', err)
    } else if (!this.#warned) {
      this.#warned = true
      process.emitWarning(`conclave agent: ${err.message}`, 'ConclaveWarning')
    }
  }

  #campaign(): void {
    void this.#election
      .run(
        (term) =>
          new Promise<void>((resolve) => {
            this.#term = term
            this.#safeEmit('designated', term)
            term.signal.addEventListener(
              'abort',
              () => {
                if (this.#term === term) this.#term = undefined
                for (const call of this.#designatedCalls) call.abort(term.signal.reason)
                this.#designatedCalls.clear()
                this.#safeEmit('undesignated')
                resolve()
              },
              { once: true },
            )
          }),
        { signal: this.#stop.signal },
      )
      .catch((error: unknown) => this.#report(error))
  }

  // ---- worker ------------------------------------------------------------------------------

  #startWorker(): void {
    const onMessage = (message: unknown) => {
      if (!isOurs(message, this.namespace)) return
      try {
        this.#onPrimaryMessage(message as FromPrimary)
      } catch (error) {
        this.#report(error)
      }
    }
    process.on('message', onMessage)
    const onDisconnect = () => {
      const error = new AgentError(
        'ERR_CONCLAVE_AGENT_DISCONNECTED',
        'The IPC channel to the primary closed.',
        true,
      )
      for (const pending of [...this.#pending.values()]) pending.fail(error)
    }
    process.on('disconnect', onDisconnect)
    this.#off.push(
      () => process.off('message', onMessage),
      () => process.off('disconnect', onDisconnect),
    )
    this.#welcome = new Promise<void>((resolve) => {
      const hello = () => {
        try {
          this.#send({ type: 'hello' })
        } catch (error) {
          this.#report(error)
        }
      }
      // The primary's agent may start after this worker: keep asking until it answers.
      const timer = setInterval(hello, HELLO_EVERY_MS)
      timer.unref()
      this.#off.push(() => clearInterval(timer))
      this.#onWelcome = () => {
        clearInterval(timer)
        resolve()
      }
      hello()
    })
  }

  #awaitWelcome(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    return raceAbort(
      this.#welcome!.then(() => ({ ok: true, value: undefined, by: this.self })),
      signal,
      timeoutMs,
      () => {},
      'the welcome',
      'The primary did not answer the agent. Is the agent started in the primary (startAgent()) with the same namespace?',
    ).then(() => undefined)
  }

  #onPrimaryMessage(m: FromPrimary): void {
    switch (m.type) {
      case 'welcome':
        if (this.#welcomed) return
        this.#welcomed = true
        this.#serialization = m.serialization === 'advanced' ? 'advanced' : 'json'
        this.#designatedMode = m.designated === 'primary' ? 'primary' : 'worker'
        if (this.#designatedMode === 'worker' && !this.#closed) this.#campaign()
        this.#onWelcome?.()
        return
      case 'run':
      case 'invoke': {
        if (
          (m.id !== null && !isId(m.id)) ||
          !isName(m.name) ||
          !Array.isArray(m.args) ||
          !Number.isInteger(m.timeoutMs) ||
          m.timeoutMs < 1 ||
          typeof m.from !== 'object' ||
          m.from === null
        ) {
          throw new ProtocolError(`Malformed ${m.type} message from the primary.`)
        }
        const id = m.id
        this.#serve(
          m.type === 'run' ? 'designated' : 'worker',
          id,
          m.name,
          m.args,
          m.timeoutMs,
          m.from,
          (outcome) => {
            if (id === null) return
            this.#send(
              outcome.ok
                ? { type: 'reply', id, ok: true, value: outcome.value }
                : { type: 'reply', id, ok: false, error: outcome.error },
            )
          },
        )
        return
      }
      case 'cancel':
        this.#running.get(m.id)?.cancel()
        return
      case 'result':
        if (typeof m.ok !== 'boolean' || typeof m.by !== 'object' || m.by === null) {
          throw new ProtocolError('Malformed result message from the primary.')
        }
        this.#pending.get(m.id)?.settle(m)
        return
      case 'gathered':
        if (!Array.isArray(m.entries))
          throw new ProtocolError('Malformed gathered message from the primary.')
        this.#pending.get(m.id)?.settle(m)
        return
    }
  }

  #request<M extends FromPrimary & { type: 'result' | 'gathered' }>(
    type: 'call' | 'gather',
    name: string,
    args: unknown[],
    timeoutMs: number,
    signal: AbortSignal | undefined,
    graceMs = 0,
  ): Promise<M> {
    const id = `${this.#prefix}-${++this.#seq}`
    return new Promise<M>((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer)
        this.#pending.delete(id)
        signal?.removeEventListener('abort', onAbort)
      }
      const giveUp = (error: Error) => {
        cleanup()
        try {
          if (!this.#closed) this.#send({ type: 'cancel', id })
        } catch {
          // No channel, no remote work to stop.
        }
        reject(error)
      }
      const onAbort = () => giveUp(signal!.reason as Error)
      const timer = setTimeout(
        () =>
          giveUp(
            new AgentTimeoutError(
              type === 'call'
                ? `No answer to the call of "${name}" within ${timeoutMs} ms.`
                : `The primary did not answer the gather of "${name}" within ${timeoutMs + graceMs} ms.`,
            ),
          ),
        timeoutMs + graceMs,
      )
      timer.unref()
      signal?.addEventListener('abort', onAbort, { once: true })
      this.#pending.set(id, {
        settle: (message) => {
          cleanup()
          resolve(message as M)
        },
        fail: (error) => {
          cleanup()
          reject(error)
        },
      })
      try {
        this.#send({ type, id, name, args, timeoutMs })
      } catch (error) {
        cleanup()
        reject(error instanceof Error ? error : new Error(String(error)))
      }
    })
  }

  #send(body: FromWorker | { type: 'cancel'; id: string }): void {
    if (!process.connected) {
      throw new AgentError(
        'ERR_CONCLAVE_AGENT_DISCONNECTED',
        'The IPC channel to the primary is closed.',
        true,
      )
    }
    process.send!(envelope(this.namespace, body), undefined, undefined, (error: Error | null) => {
      if (error) this.#report(error)
    })
  }

  // ---- primary -----------------------------------------------------------------------------

  #startPrimary(): void {
    const onMessage = (worker: Worker, message: unknown) => {
      if (!isOurs(message, this.namespace)) return
      this.#onWorkerMessage(worker, message)
    }
    const onGone = (worker: Worker) => this.#workerGone(worker.id)
    cluster.on('message', onMessage)
    cluster.on('disconnect', onGone)
    cluster.on('exit', onGone)
    this.#off.push(
      () => cluster.off('message', onMessage),
      () => cluster.off('disconnect', onGone),
      () => cluster.off('exit', onGone),
    )
    void this.#watchHolder()
    if (this.#designatedMode === 'primary') this.#campaign()
  }

  async #watchHolder(): Promise<void> {
    try {
      for await (const holders of this.#election.observe({ signal: this.#stop.signal })) {
        this.#setHolder(holders)
      }
    } catch (error) {
      this.#report(error)
    }
  }

  #setHolder(holders: Holder[]): void {
    const meta = holders[0]?.metadata as { workerId?: unknown; pid?: unknown } | null | undefined
    const holder =
      meta && Number.isInteger(meta.workerId) && Number.isInteger(meta.pid)
        ? { workerId: meta.workerId as number, pid: meta.pid as number, token: holders[0]!.token }
        : undefined
    const previous = this.#holder
    this.#holder = holder
    if (previous && (holder?.workerId !== previous.workerId || holder.token !== previous.token)) {
      // Its term is over (expired while it hung, or released): what it has not answered yet,
      // it will never answer as the designated process.
      for (const relay of [...this.#relays.values()]) {
        if (relay.target === previous.workerId && relay.targetToken === previous.token) {
          this.#cancelRelay(
            relay,
            new DesignatedLostError(
              `The designated process (${previous.workerId === 0 ? 'the primary' : `worker ${previous.workerId}`}) lost its role (its grant expired or was released) while running "${relay.name}"; it may or may not have completed. Retry to run it on the successor.`,
            ),
          )
        }
      }
    }
    if (holder && this.#holderWaiters.length) {
      const waiting = this.#holderWaiters
      this.#holderWaiters = []
      for (const relay of waiting) if (!relay.done) this.#dispatch(relay)
    }
  }

  #workerSend(worker: Worker, body: FromPrimary, onFail?: (error: Error) => void): void {
    if (!worker.isConnected()) {
      onFail?.(new Error(`worker ${worker.id} is not connected`))
      return
    }
    try {
      worker.send(envelope(this.namespace, body), undefined, (error: Error | null) => {
        if (error) {
          if (onFail) onFail(error)
          else this.#report(error)
        }
      })
    } catch (error) {
      if (onFail) onFail(error as Error)
      else this.#report(error)
    }
  }

  #onWorkerMessage(worker: Worker, raw: Record<string, unknown>): void {
    let m: FromWorker
    try {
      m = parseFromWorker(raw)
    } catch (error) {
      const err = error as Error
      this.#report(
        new ProtocolError(`From worker ${worker.id} (pid ${worker.process.pid}): ${err.message}`),
      )
      // With a usable id the sender gets the error as the answer to that id.
      if (isId(raw.id)) {
        this.#workerSend(worker, {
          type: 'result',
          id: raw.id,
          ok: false,
          error: errorToWire(err),
          by: this.self,
        })
      }
      return
    }
    const from: Peer = { workerId: worker.id, pid: worker.process.pid ?? 0 }
    switch (m.type) {
      case 'hello':
        this.#workerSend(worker, {
          type: 'welcome',
          serialization: primarySerialization(),
          designated: this.#designatedMode,
        })
        return
      case 'call': {
        const id = m.id
        const key = `${worker.id}:${id}`
        if (this.#byCaller.has(key)) return
        const relay = this.#route(m.name, m.args, m.timeoutMs, from, (outcome) => {
          this.#byCaller.delete(key)
          this.#workerSend(worker, { type: 'result', id, ...outcome })
        })
        if (!relay.done) this.#byCaller.set(key, () => this.#cancelRelay(relay))
        return
      }
      case 'gather': {
        const id = m.id
        const key = `${worker.id}:${id}`
        if (this.#byCaller.has(key)) return
        const op = this.#gatherAll(m.name, m.args, m.timeoutMs, from, (entries) => {
          this.#byCaller.delete(key)
          this.#workerSend(worker, { type: 'gathered', id, entries })
        })
        if (!op.done) this.#byCaller.set(key, () => this.#cancelGather(op))
        return
      }
      case 'broadcast':
        this.#broadcastAll(m.name, m.args, from)
        return
      case 'cancel': {
        const key = `${worker.id}:${m.id}`
        const cancel = this.#byCaller.get(key)
        this.#byCaller.delete(key)
        cancel?.()
        return
      }
      case 'reply': {
        const out = this.#outbound.get(m.id)
        // Only the worker the request went to may answer it.
        if (!out || out.workerId !== worker.id) return
        this.#outbound.delete(m.id)
        out.onReply(
          m.ok ? { ok: true, value: m.value, by: from } : { ok: false, error: m.error, by: from },
        )
        return
      }
    }
  }

  #route(
    name: string,
    args: unknown[],
    timeoutMs: number,
    from: Peer,
    answer: (o: Outcome) => void,
  ): Relay {
    const id = `${this.#prefix}-r${++this.#seq}`
    const timer = setTimeout(() => {
      const waited = relay.target === undefined
      this.#finishRelay(relay, {
        ok: false,
        error: errorToWire(
          new AgentTimeoutError(
            relay.refusals > 0 && waited
              ? `The call of "${name}" found no designated process within ${timeoutMs} ms: the holder of "${this.resource}" refused ${relay.refusals} times that it serves this agent (do two agents share one resource?).`
              : waited
                ? `No designated process took the call of "${name}" within ${timeoutMs} ms (is any process campaigning?).`
                : `No answer to the call of "${name}" within ${timeoutMs} ms.`,
          ),
        ),
        by: this.self,
      })
    }, timeoutMs)
    timer.unref()
    const relay: Relay = {
      name,
      args,
      timeoutMs,
      from,
      id,
      target: undefined,
      targetToken: undefined,
      refusals: 0,
      done: false,
      timer,
      answer,
    }
    this.#relays.set(id, relay)
    this.#dispatch(relay)
    return relay
  }

  #dispatch(relay: Relay): void {
    if (relay.done) return
    relay.target = undefined
    const holder = this.#holder
    const worker = holder && holder.workerId !== 0 ? cluster.workers?.[holder.workerId] : undefined
    if (!holder || (holder.workerId !== 0 && !worker?.isConnected())) {
      this.#holderWaiters.push(relay)
      return
    }
    const retry = (outcome: Outcome) => {
      if (relay.done) return
      // Refused without running: the holder's term has not started yet (its grant and this call
      // can arrive in one batch) or has just ended. Try again shortly, until the deadline.
      if (!outcome.ok && outcome.error.code === NOT_DESIGNATED) {
        this.#outbound.delete(relay.id)
        relay.target = undefined
        const delay = Math.min(250, 5 * 2 ** relay.refusals++)
        setTimeout(() => this.#dispatch(relay), delay).unref()
        return
      }
      this.#finishRelay(relay, outcome)
    }
    relay.target = holder.workerId
    relay.targetToken = holder.token
    if (holder.workerId === 0) {
      this.#serve(
        'designated',
        relay.id,
        relay.name,
        relay.args,
        relay.timeoutMs,
        relay.from,
        retry,
      )
      return
    }
    this.#outbound.set(relay.id, { workerId: holder.workerId, onReply: retry })
    this.#workerSend(
      worker!,
      {
        type: 'run',
        id: relay.id,
        name: relay.name,
        args: relay.args,
        timeoutMs: relay.timeoutMs,
        from: relay.from,
      },
      () => {
        // Never delivered, so never ran: route it again.
        if (relay.done || relay.target !== holder.workerId) return
        this.#outbound.delete(relay.id)
        relay.target = undefined
        this.#holderWaiters.push(relay)
      },
    )
  }

  #finishRelay(relay: Relay, outcome: Outcome): void {
    if (relay.done) return
    relay.done = true
    clearTimeout(relay.timer)
    const waiting = this.#holderWaiters.indexOf(relay)
    if (waiting >= 0) this.#holderWaiters.splice(waiting, 1)
    this.#relays.delete(relay.id)
    this.#outbound.delete(relay.id)
    relay.answer(outcome)
  }

  #cancelRelay(relay: Relay, error?: Error): void {
    if (relay.done) return
    const target = relay.target
    this.#finishRelay(relay, {
      ok: false,
      error: errorToWire(
        error ?? new AgentTimeoutError(`The call of "${relay.name}" was cancelled.`),
      ),
      by: this.self,
    })
    if (target === 0) this.#running.get(relay.id)?.cancel()
    else if (target !== undefined) {
      const worker = cluster.workers?.[target]
      if (worker) this.#workerSend(worker, { type: 'cancel', id: relay.id }, () => {})
    }
  }

  #connectedWorkers(): Worker[] {
    return Object.values(cluster.workers ?? {})
      .filter((w): w is Worker => w !== undefined && w.isConnected())
      .sort((a, b) => a.id - b.id)
  }

  #gatherAll(
    name: string,
    args: unknown[],
    timeoutMs: number,
    from: Peer,
    answer: (entries: WireEntry[]) => void,
  ): GatherOp {
    const op: GatherOp = {
      entries: new Map(),
      waiting: new Map(),
      done: false,
      timer: undefined as unknown as NodeJS.Timeout,
      answer,
    }
    // A send that fails at once must not end the gather before every worker was asked.
    let asking = true
    const finishIfComplete = () => {
      if (asking || op.done || op.waiting.size > 0) return
      op.done = true
      clearTimeout(op.timer)
      op.answer([...op.entries.values()].sort((a, b) => a.workerId - b.workerId))
    }
    const settle = (workerId: number, entry: WireEntry) => {
      if (op.done || !op.waiting.has(workerId)) return
      const id = op.waiting.get(workerId)!
      op.waiting.delete(workerId)
      this.#outbound.delete(id)
      this.#gatherByWorker.get(workerId)?.delete(id)
      op.entries.set(workerId, entry)
      finishIfComplete()
    }
    for (const worker of this.#connectedWorkers()) {
      const id = `${this.#prefix}-g${++this.#seq}`
      const peer = { workerId: worker.id, pid: worker.process.pid ?? 0 }
      op.waiting.set(worker.id, id)
      op.entries.set(worker.id, { ...peer, ok: false })
      let lost = this.#gatherByWorker.get(worker.id)
      if (!lost) this.#gatherByWorker.set(worker.id, (lost = new Map<string, () => void>()))
      const onLost = (why: string) =>
        settle(worker.id, {
          ...peer,
          ok: false,
          error: errorToWire(
            new WorkerLostError(
              `Worker ${worker.id} (pid ${peer.pid}) ${why} before answering "${name}".`,
            ),
          ),
        })
      lost.set(id, () => onLost('exited'))
      this.#outbound.set(id, {
        workerId: worker.id,
        onReply: (o) =>
          settle(
            worker.id,
            o.ok ? { ...peer, ok: true, value: o.value } : { ...peer, ok: false, error: o.error },
          ),
      })
      this.#workerSend(worker, { type: 'invoke', id, name, args, timeoutMs, from }, (error) =>
        onLost(`could not be reached (${error.message})`),
      )
    }
    op.timer = setTimeout(() => {
      for (const [workerId, id] of [...op.waiting]) {
        const worker = cluster.workers?.[workerId]
        if (worker) this.#workerSend(worker, { type: 'cancel', id }, () => {})
        const pid = op.entries.get(workerId)?.pid ?? 0
        settle(workerId, {
          workerId,
          pid,
          ok: false,
          error: errorToWire(
            new AgentTimeoutError(
              `Worker ${workerId} (pid ${pid}) did not answer "${name}" within ${timeoutMs} ms.`,
            ),
          ),
        })
      }
    }, timeoutMs)
    op.timer.unref()
    asking = false
    finishIfComplete()
    return op
  }

  readonly #gatherByWorker = new Map<number, Map<string, () => void>>()

  #cancelGather(op: GatherOp): void {
    if (op.done) return
    op.done = true
    clearTimeout(op.timer)
    for (const [workerId, id] of op.waiting) {
      this.#outbound.delete(id)
      this.#gatherByWorker.get(workerId)?.delete(id)
      const worker = cluster.workers?.[workerId]
      if (worker) this.#workerSend(worker, { type: 'cancel', id }, () => {})
    }
    op.waiting.clear()
  }

  #broadcastAll(name: string, args: unknown[], from: Peer): void {
    for (const worker of this.#connectedWorkers()) {
      this.#workerSend(worker, {
        type: 'invoke',
        id: null,
        name,
        args,
        timeoutMs: this.#timeoutMs,
        from,
      })
    }
  }

  #workerGone(workerId: number): void {
    // Designated calls it was running: they may or may not have run; the caller decides.
    for (const relay of [...this.#relays.values()]) {
      if (relay.target === workerId) {
        this.#finishRelay(relay, {
          ok: false,
          error: errorToWire(
            new DesignatedLostError(
              `The designated process (worker ${workerId}) exited or disconnected while running "${relay.name}"; it may or may not have completed. Retry to run it on the successor.`,
            ),
          ),
          by: this.self,
        })
      }
    }
    const lost = this.#gatherByWorker.get(workerId)
    if (lost) {
      this.#gatherByWorker.delete(workerId)
      for (const onLost of lost.values()) onLost()
    }
    // Calls and gathers this worker was waiting for: nobody to answer any more.
    const prefix = `${workerId}:`
    for (const [key, cancel] of [...this.#byCaller]) {
      if (key.startsWith(prefix)) {
        this.#byCaller.delete(key)
        cancel()
      }
    }
    if (this.#holder?.workerId === workerId) this.#holder = undefined
  }
}

function describePeer(peer: Peer): string {
  return peer.workerId === 0
    ? `the primary (pid ${peer.pid})`
    : `worker ${peer.workerId} (pid ${peer.pid})`
}

/** Races an outcome against a timeout and an abort signal; `onGiveUp` stops the work. */
function raceAbort(
  outcome: Promise<Outcome>,
  signal: AbortSignal | undefined,
  timeoutMs: number,
  onGiveUp: () => void,
  what: string,
  timeoutMessage?: string,
): Promise<Outcome> {
  return new Promise<Outcome>((resolve, reject) => {
    let settled = false
    const finish = () => {
      settled = true
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
    }
    const onAbort = () => {
      if (settled) return
      finish()
      onGiveUp()
      reject(signal!.reason as Error)
    }
    const timer = setTimeout(() => {
      if (settled) return
      finish()
      onGiveUp()
      reject(
        new AgentTimeoutError(
          timeoutMessage ?? `No answer to the call of "${what}" within ${timeoutMs} ms.`,
        ),
      )
    }, timeoutMs)
    timer.unref()
    signal?.addEventListener('abort', onAbort, { once: true })
    void outcome.then((o) => {
      if (settled) return
      finish()
      resolve(o)
    })
  })
}
