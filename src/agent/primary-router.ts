/**
 * The primary half of the agent: the router every message goes through, since workers cannot
 * reach each other. It watches who holds the designated grant and relays calls to that holder
 * (or runs them here when the primary is the designated process), retrying a holder that is
 * not ready yet and failing calls whose holder exited or lost its term; it fans gathers and
 * broadcasts out to every worker and collects one entry each; and when a worker exits it fails
 * or cancels everything that involved it.
 */
import type { Holder } from '../backend.js'
import {
  AgentTimeoutError,
  DesignatedLostError,
  ProtocolError,
  WorkerLostError,
} from '../errors.js'
import { envelope, isId, isOurs } from '../ipc/envelope.js'
import {
  errorToWire,
  type FromPrimary,
  type FromWorker,
  idPrefix,
  NOT_DESIGNATED,
  type Outcome,
  parseFromWorker,
  type Peer,
  type WireEntry,
} from './protocol.js'
import type { AgentCore, AgentRole } from './role.js'
import { primarySerialization, type Serialization } from './serialize.js'
import { clusterPool, type PoolWorker, type WorkerPool } from './transport.js'

/** Where a router runs: node:cluster's primary by default, or the `local` hub. */
export interface RouterOptions {
  /** The workers it routes between. Default: node:cluster's (clusterPool). */
  pool?: WorkerPool
  /**
   * The holders of the designated resource, each with metadata `{ workerId, pid }` naming the
   * pool worker. Default: the agent's election (`observe`).
   */
  holders?: (signal: AbortSignal) => AsyncIterable<Holder[]>
  /** What values must survive. Default: the cluster primary's setting. */
  serialization?: Serialization
}

/** A designated call being routed. */
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

/** A gather waiting for its workers. */
interface GatherOp {
  entries: Map<number, WireEntry>
  waiting: Map<number, string>
  done: boolean
  timer: NodeJS.Timeout
  answer(entries: WireEntry[]): void
}

/** The agent's role in the cluster primary (see the module comment). */
export class PrimaryRouter implements AgentRole {
  readonly #core: AgentCore
  readonly #pool: WorkerPool
  readonly #options: RouterOptions
  readonly #prefix = idPrefix()
  #seq = 0
  #off: (() => void)[] = []
  /** The designated process as the last holders event said (undefined: none, or it left). */
  #holder: (Peer & { token: number }) | undefined
  /** Relays waiting for a (connected) holder. */
  #holderWaiters: Relay[] = []
  readonly #relays = new Map<string, Relay>()
  /** What a worker is waiting for, by `workerId:id`: cancels it (the worker gave up or left). */
  readonly #byCaller = new Map<string, () => void>()
  /** Requests sent to a worker, by id: only that worker may answer. */
  readonly #outbound = new Map<string, { workerId: number; onReply(reply: Outcome): void }>()
  /** Per worker, the gathers waiting for it: settled as lost when it exits. */
  readonly #gatherByWorker = new Map<number, Map<string, () => void>>()

  /** Starts routing at once: worker messages and exits, the holder watch, a primary campaign. */
  constructor(core: AgentCore, options: RouterOptions = {}) {
    this.#core = core
    this.#options = options
    this.#pool = options.pool ?? clusterPool()
    this.#off.push(
      this.#pool.onMessage((worker, message) => {
        if (!isOurs(message, this.#core.settings.namespace)) return
        this.#onWorkerMessage(worker, message)
      }),
      this.#pool.onGone((id) => this.#workerGone(id)),
    )
    void this.#watchHolder()
    if (this.#core.settings.designated === 'primary') this.#core.campaign()
  }

  /** The primary's setting, read each time (what `cluster.fork()` uses). */
  get serialization(): Serialization {
    return this.#options.serialization ?? primarySerialization()
  }

  /** The primary needs no welcome. */
  get isReady(): boolean {
    return true
  }

  /** Resolves at once. */
  ready(): Promise<void> {
    return Promise.resolve()
  }

  /** Resolves at once (the agent never waits here: isReady is true). */
  awaitReady(): Promise<void> {
    return Promise.resolve()
  }

  /** Routes the primary's own call to the designated worker; the signal cancels it there. */
  call(name: string, args: unknown[], timeoutMs: number, signal?: AbortSignal): Promise<Outcome> {
    return new Promise<Outcome>((resolve, reject) => {
      const onAbort = () => {
        reject(signal!.reason as Error)
        this.#cancelRelay(relay)
      }
      const relay = this.#route(name, args, timeoutMs, this.#core.self, (o) => {
        signal?.removeEventListener('abort', onAbort)
        resolve(o)
      })
      if (!relay.done) signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  /** Asks every worker (the primary is not one); the signal cancels the gather everywhere. */
  gather(
    name: string,
    args: unknown[],
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<WireEntry[]> {
    return new Promise<WireEntry[]>((resolve, reject) => {
      const onAbort = () => {
        reject(signal!.reason as Error)
        this.#cancelGather(op)
      }
      const op = this.#gatherAll(name, args, timeoutMs, this.#core.self, (e) => {
        signal?.removeEventListener('abort', onAbort)
        resolve(e)
      })
      if (!op.done) signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  /** Tells every connected worker. */
  broadcast(name: string, args: unknown[]): void {
    this.#broadcastAll(name, args, this.#core.self)
  }

  /** Detaches from the cluster; the calls still being routed fail with `error`. */
  close(error: Error): void {
    for (const off of this.#off) off()
    this.#off = []
    for (const relay of [...this.#relays.values()]) {
      this.#finishRelay(relay, { ok: false, error: errorToWire(error), by: this.#core.self })
    }
  }

  async #watchHolder(): Promise<void> {
    try {
      const signal = this.#core.stop
      const source = this.#options.holders?.(signal) ?? this.#core.election.observe({ signal })
      for await (const holders of source) {
        this.#setHolder(holders)
      }
    } catch (error) {
      this.#core.report(error)
    }
  }

  /** A new holders event: fail what the previous term left unanswered, wake parked relays. */
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

  #workerSend(worker: PoolWorker, body: FromPrimary, onFail?: (error: Error) => void): void {
    worker.send(
      envelope(this.#core.settings.namespace, body),
      onFail ?? ((error) => this.#core.report(error)),
    )
  }

  #onWorkerMessage(worker: PoolWorker, raw: Record<string, unknown>): void {
    let m: FromWorker
    try {
      m = parseFromWorker(raw)
    } catch (error) {
      const err = error as Error
      this.#core.report(
        new ProtocolError(`From worker ${worker.id} (pid ${worker.pid}): ${err.message}`),
      )
      // With a usable id the sender gets the error as the answer to that id.
      if (isId(raw.id)) {
        this.#workerSend(worker, {
          type: 'result',
          id: raw.id,
          ok: false,
          error: errorToWire(err),
          by: this.#core.self,
        })
      }
      return
    }
    const from: Peer = { workerId: worker.id, pid: worker.pid }
    switch (m.type) {
      case 'hello':
        this.#workerSend(worker, {
          type: 'welcome',
          serialization: this.serialization,
          designated: this.#core.settings.designated,
          workerId: worker.id,
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

  /** Starts routing a designated call; its timer covers waiting for a holder and the run. */
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
              ? `The call of "${name}" found no designated process within ${timeoutMs} ms: the holder of "${this.#core.settings.resource}" refused ${relay.refusals} times that it serves this agent (do two agents share one resource?).`
              : waited
                ? `No designated process took the call of "${name}" within ${timeoutMs} ms (is any process campaigning?).`
                : `No answer to the call of "${name}" within ${timeoutMs} ms.`,
          ),
        ),
        by: this.#core.self,
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

  /** Hands a relay to the current holder, or parks it until a holder is connected. */
  #dispatch(relay: Relay): void {
    if (relay.done) return
    relay.target = undefined
    const holder = this.#holder
    const worker = holder && holder.workerId !== 0 ? this.#pool.get(holder.workerId) : undefined
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
      this.#core.handlers.serve(
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

  /** Ends a relay for its caller and tells the process running it to stop. */
  #cancelRelay(relay: Relay, error?: Error): void {
    if (relay.done) return
    const target = relay.target
    this.#finishRelay(relay, {
      ok: false,
      error: errorToWire(
        error ?? new AgentTimeoutError(`The call of "${relay.name}" was cancelled.`),
      ),
      by: this.#core.self,
    })
    if (target === 0) this.#core.handlers.cancel(relay.id)
    else if (target !== undefined) {
      const worker = this.#pool.get(target)
      if (worker) this.#workerSend(worker, { type: 'cancel', id: relay.id }, () => {})
    }
  }

  #connectedWorkers(): PoolWorker[] {
    return this.#pool.workers()
  }

  /** Asks every connected worker; each gets exactly one entry (value, error, lost, timeout). */
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
      const peer = { workerId: worker.id, pid: worker.pid }
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
        const worker = this.#pool.get(workerId)
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

  #cancelGather(op: GatherOp): void {
    if (op.done) return
    op.done = true
    clearTimeout(op.timer)
    for (const [workerId, id] of op.waiting) {
      this.#outbound.delete(id)
      this.#gatherByWorker.get(workerId)?.delete(id)
      const worker = this.#pool.get(workerId)
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
        timeoutMs: this.#core.settings.timeoutMs,
        from,
      })
    }
  }

  /** A worker exited or disconnected: fail, settle or cancel everything that involved it. */
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
          by: this.#core.self,
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
