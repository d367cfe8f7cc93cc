/**
 * A backend that forwards every call to a Hub in another process, over any message transport.
 * Calls time out (the hub may be gone); the election core retries them like any backend error.
 * Errors the hub throws arrive rebuilt with their class, code and fields (see `fromWire`), so a
 * final one (a TicketsMismatchError, an OptionsError) stays final here.
 */
import { randomBytes } from 'node:crypto'
import type {
  AcquireRequest,
  AcquireResult,
  Backend,
  Holder,
  ReleaseRequest,
  RenewRequest,
  StoredRecord,
  Unwatch,
  WatchChange,
  WriteRecordRequest,
  WriteRecordResult,
} from '../../backend.js'
import { BackendClosedError, BackendError, BackendTimeoutError } from '../../errors.js'
import { CloseGate } from '../kit.js'
import type { GrantRecord } from '../memory.js'
import { envelope, isOurs } from '../../ipc/envelope.js'
import { fromWire, NAMESPACE, type Op, parseEvent } from './protocol.js'

/** A message channel to a Hub: node:cluster IPC, or anything that carries plain objects. */
export interface Transport {
  /** Sends one message to the hub. */
  send(message: object): void
  /** Subscribe to incoming messages; returns the unsubscribe function. */
  onMessage(listener: (message: unknown) => void): () => void
  /** Subscribe to the transport closing; returns the unsubscribe function. */
  onClose(listener: () => void): () => void
}

/** How a RemoteBackend names itself and waits for the hub. */
export interface RemoteBackendOptions {
  /** The backend's `name` (in messages too). Default `remote`. */
  name?: string
  /** The message key marking conclave's traffic; must match the hub's. Default `conclave`. */
  namespace?: string
  /** A request without an answer after this long fails (and is retried by the election). */
  requestTimeoutMs?: number
  /** Added to timeout messages: where the hub should be. */
  hint?: string
  /**
   * Told about malformed messages from the hub (a ProtocolError naming the field). Default: a
   * process warning, once.
   */
  onError?: (error: Error) => void
}

interface Pending {
  resolve(value: unknown): void
  reject(error: Error): void
  timer: NodeJS.Timeout
}

/**
 * The Backend contract over a transport. `close()` first runs the `onClose` hooks (the election
 * core ends its terms there, releasing their grants through the hub while calls still work),
 * then drops its watches at the hub; later calls fail with BackendClosedError.
 */
export class RemoteBackend implements Backend {
  readonly name: string
  readonly #transport: Transport
  readonly #ns: string
  readonly #timeoutMs: number
  readonly #hint: string
  readonly #prefix = randomBytes(6).toString('hex')
  readonly #pending = new Map<string, Pending>()
  readonly #watchers = new Map<string, (change?: WatchChange) => void>()
  readonly #onError: (error: Error) => void
  readonly #off: (() => void)[]
  readonly #gate: CloseGate
  #seq = 0
  /** Why every call fails from now on: the channel to the hub closed. */
  #broken: Error | undefined

  constructor(transport: Transport, options: RemoteBackendOptions = {}) {
    this.name = options.name ?? 'remote'
    this.#transport = transport
    this.#ns = options.namespace ?? NAMESPACE
    this.#timeoutMs = options.requestTimeoutMs ?? 5_000
    this.#hint = options.hint ?? ''
    this.#gate = new CloseGate(this.name)
    let warned = false
    this.#onError =
      options.onError ??
      ((error) => {
        if (warned) return
        warned = true
        process.emitWarning(`conclave: ${this.name}: ${error.message}`, 'ConclaveWarning')
      })
    this.#off = [
      transport.onMessage((message) => this.#receive(message)),
      transport.onClose(() =>
        this.#fail(new BackendError(`${this.name}: the channel to the hub closed`)),
      ),
    ]
  }

  acquire(request: AcquireRequest): Promise<AcquireResult> {
    return this.#call('acquire', request) as Promise<AcquireResult>
  }

  renew(requests: RenewRequest[]): Promise<boolean[]> {
    return this.#call('renew', requests) as Promise<boolean[]>
  }

  async release(request: ReleaseRequest): Promise<void> {
    await this.#call('release', request)
  }

  holders(resource: string): Promise<Holder[]> {
    return this.#call('holders', { resource }) as Promise<Holder[]>
  }

  /** Re-registers a grant held at a previous hub (hubs with the `adopt` option); true if kept. */
  async adopt(grant: GrantRecord): Promise<boolean> {
    return (await this.#call('adopt', grant)) === true
  }

  async watch(resource: string, onChange: (change?: WatchChange) => void): Promise<Unwatch> {
    const watch = `${this.#prefix}:w${++this.#seq}`
    this.#watchers.set(watch, onChange)
    try {
      await this.#call('watch', { resource, watch })
    } catch (error) {
      this.#watchers.delete(watch)
      throw error
    }
    return async () => {
      // Gone from the map: close() unwatched it already. A broken channel has no hub to tell.
      // During close()'s hooks this still reaches the hub, so no watch is left behind there.
      if (!this.#watchers.delete(watch) || this.#broken) return
      // Sent, not awaited: events of a dropped watch are ignored here already, and the channel
      // keeps order, so nothing later can overtake it. Awaiting the answer would cost a won
      // campaign (which unwatches before it resolves) one more round trip to the hub.
      this.#send('unwatch', { watch }).catch(() => {})
    }
  }

  onClose(hook: () => Promise<void>): () => void {
    return this.#gate.onClose(hook)
  }

  /** Backend.readRecord, answered by the hub's backend. */
  async readRecord(resource: string, key: string): Promise<StoredRecord | undefined> {
    return ((await this.#call('readRecord', { resource, key })) ?? undefined) as
      StoredRecord | undefined
  }

  /** Backend.writeRecord, answered by the hub's backend. */
  async writeRecord(request: WriteRecordRequest): Promise<WriteRecordResult> {
    const result = (await this.#call('writeRecord', request)) as WriteRecordResult
    // undefined crosses IPC as a missing field; keep the contract's shape.
    return result.written ? result : { written: false, current: result.current ?? undefined }
  }

  /** Backend.now: the hub's clock (the primary's), shared by every worker. */
  async now(): Promise<number> {
    return (await this.#call('now', null)) as number
  }

  close(): Promise<void> {
    return this.#gate.close(async () => {
      const watches = [...this.#watchers.keys()]
      this.#watchers.clear()
      await Promise.all(watches.map((watch) => this.#send('unwatch', { watch }).catch(() => {})))
      this.#fail(new BackendClosedError(this.name))
      for (const off of this.#off) off()
    })
  }

  async #call(op: Op, args: unknown): Promise<unknown> {
    this.#gate.check() // closed: BackendClosedError, as a rejection
    return this.#send(op, args)
  }

  /** One request to the hub, past the close gate (close() itself still unwatches with it). */
  #send(op: Op, args: unknown): Promise<unknown> {
    if (this.#broken) return Promise.reject(this.#broken)
    const id = `${this.#prefix}:${++this.#seq}`
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id)
        reject(
          new BackendTimeoutError(
            `${this.name}: no answer to ${op} within ${this.#timeoutMs} ms.${this.#hint ? ` ${this.#hint}` : ''}`,
          ),
        )
      }, this.#timeoutMs)
      timer.unref()
      this.#pending.set(id, { resolve, reject, timer })
      try {
        this.#transport.send(envelope(this.#ns, { type: 'request', id, op, args }))
      } catch (error) {
        clearTimeout(timer)
        this.#pending.delete(id)
        reject(
          new BackendError(`${this.name}: could not send ${op}: ${(error as Error).message}`, {
            cause: error,
          }),
        )
      }
    })
  }

  #receive(message: unknown): void {
    if (!isOurs(message, this.#ns)) return
    if (message.type === 'event') {
      let event
      try {
        event = parseEvent(message)
      } catch (error) {
        this.#onError(error as Error)
        // Still a change of that watch: as an unknown one (everybody asks), never a lost release.
        if (typeof message.watch === 'string') this.#watchers.get(message.watch)?.()
        return
      }
      const onChange = this.#watchers.get(event.watch)
      if (!onChange) return
      // An event that names neither: an unknown change (every waiter asks).
      const change: WatchChange = {}
      if (event.wake) change.wake = event.wake
      if (event.granted) change.granted = event.granted
      onChange(event.wake || event.granted ? change : undefined)
      return
    }
    if (message.type !== 'response' || typeof message.id !== 'string') return
    const pending = this.#pending.get(message.id)
    if (!pending) return
    this.#pending.delete(message.id)
    clearTimeout(pending.timer)
    if (message.ok === true) pending.resolve(message.value)
    else pending.reject(fromWire(message.error, `the ${this.name} hub`))
  }

  #fail(error: Error): void {
    this.#broken ??= error
    for (const [id, pending] of this.#pending) {
      clearTimeout(pending.timer)
      pending.reject(error)
      this.#pending.delete(id)
    }
  }
}
