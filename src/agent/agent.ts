/**
 * The process agent: run a function in one designated process of a node:cluster app, ask
 * every worker and collect one answer each, or tell every worker something.
 *
 * The designated process is the elected holder of a reserved resource on the cluster backend,
 * so it fails over like any leader: when it dies, the calls it was running fail with a
 * retryable DesignatedLostError and new calls go to its successor. Workers cannot reach each
 * other, so every message goes through the primary, which routes calls to the current holder
 * (or runs them itself when it is the designated process: `designated: 'primary'`).
 *
 * This class is the facade: options, handlers, the calls' checks and the local fast path, the
 * campaign, close and events. The remote half is its role, chosen once here: a WorkerLink
 * (worker-link.ts) in a worker, a PrimaryRouter (primary-router.ts) in the primary.
 */
import cluster from 'node:cluster'
import { EventEmitter } from 'node:events'
import { clusterBackend } from '../backends/cluster/index.js'
import type { Backend } from '../backend.js'
import { Election } from '../election.js'
import { AgentClosedError, NoIpcError, OptionsError } from '../errors.js'
import type { Term } from '../term.js'
import { type Handler, Handlers, raceAbort } from './handlers.js'
import {
  type AgentOptions,
  type AgentSettings,
  type CallOptions,
  checkArgs,
  checkCallOptions,
  checkName,
  resolveOptions,
} from './options.js'
import { PrimaryRouter } from './primary-router.js'
import { errorFromWire, type Outcome, type Peer, type WireEntry } from './protocol.js'
import type { AgentCore, AgentRole } from './role.js'
import { assertCarriable, copyValue, type Serialization } from './serialize.js'
import { carrierOf } from './transport.js'
import { WorkerLink } from './worker-link.js'

/** One worker's answer in a `gather`. */
export type GatherEntry<T = unknown> =
  | { workerId: number; pid: number; ok: true; value: T }
  | { workerId: number; pid: number; ok: false; error: Error }

/** The agent's events (see docs/agent.md). */
export interface AgentEvents {
  error: [error: Error]
  /** This process became the designated one. */
  designated: [term: Term]
  /** This process stopped being the designated one. */
  undesignated: []
}

/** One process's agent (usually the default one: startAgent); see the module comment. */
export class ProcessAgent extends EventEmitter<AgentEvents> implements AsyncDisposable {
  /**
   * Which half this process runs, fixed at construction by `cluster.isPrimary`; always `worker`
   * over a backend that carries the agent (`local`: the app's hub routes).
   */
  readonly role: 'primary' | 'worker'
  /**
   * This process as messages name it (workerId 0: the primary). Over `local`, workerId is the
   * hub's number for this process (-1 until the hub welcomed it; a new hub renumbers).
   */
  readonly self: Peer
  /** The key marking this agent's IPC messages. */
  readonly namespace: string
  /** The resource whose holder is the designated process. */
  readonly resource: string
  readonly #settings: AgentSettings
  readonly #handlers: Handlers
  readonly #backend: Backend
  readonly #ownsBackend: boolean
  readonly #election: Election
  readonly #stop = new AbortController()
  readonly #remote: AgentRole
  #closed: Promise<void> | undefined
  #warned = false

  /** Checks the options, then starts this process's role at once (listeners, greeting, routing). */
  constructor(options: AgentOptions = {}) {
    super()
    const settings = resolveOptions(options)
    this.#settings = settings
    this.resource = settings.resource
    this.namespace = settings.namespace
    const carrier = carrierOf(settings.backend)
    this.role = cluster.isPrimary && !carrier ? 'primary' : 'worker'
    this.self = {
      workerId: carrier ? -1 : cluster.isPrimary ? 0 : (cluster.worker?.id ?? -1),
      pid: process.pid,
    }
    if (this.role === 'worker' && !carrier && typeof process.send !== 'function') {
      throw new NoIpcError()
    }
    const overIpc = this.role === 'worker' && !carrier
    this.#ownsBackend = settings.backend === undefined
    this.#backend = settings.backend ?? clusterBackend()
    this.#election = new Election(this.#backend, this.resource, {
      leaseMs: settings.leaseMs,
      metadata: { workerId: this.self.workerId, pid: this.self.pid },
    })
    this.#election.on('error', (error) => {
      // A worker cut off from the primary has already lost its grants there: nothing to report.
      if (overIpc && !process.connected) return
      this.#report(error)
    })
    this.#handlers = new Handlers(
      this.self,
      () => this.serialization,
      (error) => this.#report(error),
    )
    const core: AgentCore = {
      self: this.self,
      settings,
      handlers: this.#handlers,
      election: this.#election,
      stop: this.#stop.signal,
      campaign: () => this.#campaign(),
      report: (error) => this.#report(error),
    }
    this.#remote =
      this.role === 'primary'
        ? new PrimaryRouter(core)
        : new WorkerLink(core, carrier?.agentChannel(settings.namespace, settings.resource))
  }

  /** True while this process holds the designated term (reads the clock). */
  get isDesignated(): boolean {
    return this.#handlers.isDesignated
  }

  /** The IPC serialization this agent checks values against (workers: once welcomed). */
  get serialization(): Serialization {
    return this.#remote.serialization
  }

  /** Worker: resolves once the primary's agent answered (serialization known). Primary: at once. */
  ready(): Promise<void> {
    return this.#remote.ready()
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
    this.#handlers.register(name, fn, options)
    return this
  }

  /** Whether `name` has a handler in this process. */
  has(name: string): boolean {
    return this.#handlers.has(name)
  }

  /** Removes `name`'s handler here; false when there was none. */
  unregister(name: string): boolean {
    return this.#handlers.unregister(name)
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
    const defaults = checkCallOptions(options, this.#settings.timeoutMs)
    return (...args: A) => this.call<Awaited<R>>(name, args, defaults)
  }

  /** Runs handler `name` with `args` in the designated process and resolves with its result. */
  async call<T = unknown>(
    name: string,
    args: unknown[] = [],
    options: CallOptions = {},
  ): Promise<T> {
    checkName(name)
    const { timeoutMs, signal } = checkCallOptions(options, this.#settings.timeoutMs)
    checkArgs(args)
    if (this.#closed) throw new AgentClosedError()
    signal?.throwIfAborted()
    if (!this.#remote.isReady) await this.#remote.awaitReady(timeoutMs, signal)
    assertCarriable(args, this.serialization, 'args')
    if (this.isDesignated) {
      // Same semantics as a remote call: the handler and the caller get copies.
      const local = this.#handlers.runLocal(
        'designated',
        name,
        copyValue(args, this.serialization),
        timeoutMs,
        this.self,
        true,
      )
      const outcome = await raceAbort(local.outcome, signal, timeoutMs, () => local.cancel(), name)
      return unwrap<T>(outcome)
    }
    return unwrap<T>(await this.#remote.call(name, args, timeoutMs, signal))
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
    const { timeoutMs, signal } = checkCallOptions(options, this.#settings.gatherTimeoutMs)
    checkArgs(args)
    if (this.#closed) throw new AgentClosedError()
    signal?.throwIfAborted()
    if (!this.#remote.isReady) await this.#remote.awaitReady(timeoutMs, signal)
    assertCarriable(args, this.serialization, 'args')
    const entries = await this.#remote.gather(name, args, timeoutMs, signal)
    return entries.map((entry) => toEntry<T>(entry))
  }

  /** Runs handler `name` in every worker, without waiting or collecting answers. */
  async broadcast(name: string, args: unknown[] = []): Promise<void> {
    checkName(name)
    checkArgs(args)
    if (this.#closed) throw new AgentClosedError()
    if (!this.#remote.isReady) await this.#remote.awaitReady(this.#settings.timeoutMs)
    assertCarriable(args, this.serialization, 'args')
    this.#remote.broadcast(name, args)
  }

  /** Stops campaigning (handing the designated role over), fails pending calls, detaches. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      const error = new AgentClosedError()
      this.#stop.abort(error)
      await this.#election.close()
      this.#remote.close(error)
      this.#handlers.cancelAll()
      // A backend passed in options belongs to the caller.
      if (this.#ownsBackend) await this.#backend.close().catch((e: unknown) => this.#report(e))
    })()
    return this.#closed
  }

  /** `await using agent = new ProcessAgent()` closes it. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }

  #campaign(): void {
    void this.#election
      .run(
        (term) =>
          new Promise<void>((resolve) => {
            const ended = () => {
              this.#handlers.termEnded(term)
              this.#safeEmit('undesignated')
              resolve()
            }
            this.#handlers.termStarted(term)
            // Listening before 'designated' is emitted: a listener may end the term at once
            // (a synchronous resign), and a signal aborted before we listen never fires again.
            term.signal.addEventListener('abort', ended, { once: true })
            this.#safeEmit('designated', term)
          }),
        { signal: this.#stop.signal },
      )
      .catch((error: unknown) => this.#report(error))
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
    const onError = this.#settings.onError
    if (onError) {
      try {
        onError(err)
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
}

/** A call's value, or its error rebuilt where the caller can catch it. */
function unwrap<T>(outcome: Outcome): T {
  if (outcome.ok) return outcome.value as T
  throw errorFromWire(outcome.error, outcome.by)
}

/** A gather entry with its error rebuilt (attributed to the worker that gave it). */
function toEntry<T>(entry: WireEntry): GatherEntry<T> {
  const peer = { workerId: entry.workerId, pid: entry.pid }
  return entry.ok
    ? { ...peer, ok: true, value: entry.value as T }
    : { ...peer, ok: false, error: errorFromWire(entry.error, peer) }
}
