/**
 * One process's handle on a `local` app's elections. Every call goes to the app's hub: in this
 * process when this process hosts it, else over the unix socket. When there is no hub (none
 * yet, or it died: the socket closed or refuses), this handle tries to become it; whoever takes
 * the lock hosts it, the others connect. After a change of hub, this handle re-registers every
 * grant it holds (`adopt`) and re-arms its watches, so its terms continue on the new hub.
 *
 * A hub that is slow (paused, busy) is never taken for a dead one: only a closed or refused
 * socket starts a takeover, and the lock stays with the slow hub as long as its process lives;
 * calls to it time out and the election core retries them, as with any backend.
 */
import { randomBytes } from 'node:crypto'
import type {
  AcquireRequest,
  AcquireResult,
  Backend,
  Holder,
  Json,
  ReleaseRequest,
  RenewRequest,
  Unwatch,
  WatchChange,
} from '../../backend.js'
import { AgentDisconnectedError, BackendError, BackendTimeoutError } from '../../errors.js'
import { RemoteBackend, type Transport } from '../cluster/remote.js'
import { CloseGate, errorText } from '../kit.js'
import { envelope, isOurs } from '../../ipc/envelope.js'
import type { RouterChannel } from '../../agent/transport.js'
import { HubHost, hostedHub } from './host.js'
import { LOCAL_NAMESPACE, selfIdentity } from './identity.js'
import type { LocalSettings } from './options.js'
import { connectSocket, socketTransport } from './socket.js'

/** A grant this handle holds, as it would re-register it at a new hub. */
interface Held {
  resource: string
  candidate: string
  token: number
  tickets: number
  leaseMs: number
  metadata: Json
  /** performance.now() when the call that started its current lease was sent. */
  sentAt: number
}

/** A place in line this handle's refused ask took: what a grant the hub hands it lasts. */
type Placed = Omit<Held, 'token'>

interface Watch {
  resource: string
  onChange: (change?: WatchChange) => void
  /** The watch at the current hub. */
  remote: Unwatch | undefined
}

interface Link {
  remote: RemoteBackend
  transport: Transport
  /** The hub is in this process. */
  host: HubHost | undefined
  broken: boolean
}

/** Errors that mean "no hub listens there": try to become it. */
const NO_HUB = new Set(['ENOENT', 'ECONNREFUSED', 'ECONNRESET', 'EPIPE'])

/** One agent's channel through this handle (agentChannel). */
interface AgentLine {
  resource: string
  onMessage: Set<(message: unknown) => void>
  onDisconnect: Set<() => void>
  onConnect: Set<() => void>
}

/** The `local` Backend (see the module comment). */
export class LocalBackend implements Backend {
  readonly name = 'local'
  readonly settings: LocalSettings
  readonly #gate = new CloseGate('local')
  readonly #held = new Map<string, Held>()
  /**
   * Grants a hub refused to re-register while their terms may still run here (until a renewal
   * answers, a release, or their lease measured here ends): while one may, this handle never
   * tells a hub it is synced, for the hub could grant that resource to another meanwhile.
   */
  readonly #doubt = new Map<string, Held>()
  /** The places this handle's last refused asks took (a release may hand one a grant). */
  readonly #placed = new Map<string, Placed>()
  readonly #watches = new Set<Watch>()
  readonly #agents = new Map<string, AgentLine>()
  /** This handle's id at every hub (the hub state file's clients). */
  readonly #handle = randomBytes(8).toString('hex')
  #link: Link | undefined
  #connecting: Promise<Link> | undefined
  #hostUsed: HubHost | undefined

  constructor(settings: LocalSettings) {
    this.settings = settings
  }

  /** Whether this process hosts the hub this handle talks to now (tests, diagnostics). */
  get isHub(): boolean {
    return this.#link?.host !== undefined && !this.#link.broken
  }

  async acquire(request: AcquireRequest): Promise<AcquireResult> {
    const sentAt = performance.now()
    const link = await this.#ready()
    const result = await link.remote.acquire(request)
    const key = keyOf(request)
    // A new ask: no earlier term of this candidate runs on the resource.
    this.#doubt.delete(key)
    this.#placed.delete(key)
    if (result.acquired) {
      this.#held.set(key, {
        resource: request.resource,
        candidate: request.candidate,
        token: result.token,
        tickets: request.tickets,
        leaseMs: request.leaseMs,
        metadata: request.metadata ?? null,
        sentAt,
      })
    } else {
      this.#held.delete(key)
      if (result.ahead !== undefined) {
        this.#placed.set(key, {
          resource: request.resource,
          candidate: request.candidate,
          tickets: request.tickets,
          leaseMs: request.leaseMs,
          metadata: request.metadata ?? null,
          sentAt,
        })
      }
    }
    return result
  }

  async renew(requests: RenewRequest[]): Promise<boolean[]> {
    const sentAt = performance.now()
    const link = await this.#ready()
    const results = await link.remote.renew(requests)
    requests.forEach((request, i) => {
      const key = keyOf(request)
      const held = this.#held.get(key)
      if (!held || held.token !== request.token) {
        const doubted = this.#doubt.get(key)
        if (doubted?.token !== request.token) return
        // Answered: refused, the term ends; renewed, the hub has it after all (held again).
        this.#doubt.delete(key)
        if (!results[i]) return
        doubted.sentAt = sentAt
        doubted.leaseMs = request.leaseMs
        this.#held.set(key, doubted)
        // Owned by this connection at the hub, so the hub counts this handle as a holder.
        void link.remote
          .adopt({
            resource: doubted.resource,
            candidate: doubted.candidate,
            token: doubted.token,
            tickets: doubted.tickets,
            remainingMs: Math.max(1, Math.floor(request.leaseMs - (performance.now() - sentAt))),
            metadata: doubted.metadata,
          })
          .catch(() => undefined)
        return
      }
      if (results[i]) {
        held.sentAt = sentAt
        held.leaseMs = request.leaseMs
      } else this.#held.delete(key)
    })
    return results
  }

  async release(request: ReleaseRequest): Promise<void> {
    const link = await this.#ready()
    await link.remote.release(request)
    const key = keyOf(request)
    if (request.token === undefined) this.#placed.delete(key)
    const held = this.#held.get(key)
    if (held && (request.token === undefined || request.token === held.token)) {
      this.#held.delete(key)
    }
    const doubted = this.#doubt.get(key)
    if (doubted && (request.token === undefined || request.token === doubted.token)) {
      this.#doubt.delete(key)
    }
  }

  async holders(resource: string): Promise<Holder[]> {
    return (await this.#ready()).remote.holders(resource)
  }

  async watch(resource: string, onChange: (change?: WatchChange) => void): Promise<Unwatch> {
    const link = await this.#ready()
    const watch: Watch = {
      resource,
      onChange: (change) => {
        if (change?.granted) this.#took(resource, change.granted)
        onChange(change)
      },
      remote: undefined,
    }
    watch.remote = await link.remote.watch(resource, watch.onChange)
    this.#watches.add(watch)
    return async () => {
      if (!this.#watches.delete(watch)) return
      await watch.remote?.().catch(() => {})
    }
  }

  onClose(hook: () => Promise<void>): () => void {
    return this.#gate.onClose(hook)
  }

  /**
   * Grants the hub handed to this handle's places: held from the ask that took the place (the
   * grant lasts at least that ask's lease), so a next hub is asked to adopt them as any other.
   */
  #took(resource: string, granted: { candidate: string; token: number }[]): void {
    for (const g of granted) {
      const key = keyOf({ resource, candidate: g.candidate })
      const placed = this.#placed.get(key)
      if (!placed) continue
      this.#placed.delete(key)
      this.#held.set(key, { ...placed, token: g.token })
    }
  }

  /**
   * The process agent's channel to the router in the hub's process (conclave/agent over
   * `local`: every process is a worker). It follows this handle to each new hub, and says so
   * (onConnect), so the agent greets the new hub's router.
   */
  agentChannel(namespace: string, resource: string): RouterChannel {
    let line = this.#agents.get(namespace)
    if (!line) {
      line = { resource, onMessage: new Set(), onDisconnect: new Set(), onConnect: new Set() }
      this.#agents.set(namespace, line)
    }
    const agent = line
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- the getter below has its own this
    const self = this
    // Reach the hub now: the agent greets it once connected.
    if (!this.#gate.closing) void this.#ready().catch(() => {})
    const on = <T>(set: Set<T>, listener: T) => (set.add(listener), () => set.delete(listener))
    return {
      get connected() {
        return self.#link !== undefined && !self.#link.broken
      },
      send: (message) => {
        const link = this.#link
        if (!link || link.broken) {
          throw new AgentDisconnectedError('No connection to the local hub now (reconnecting).')
        }
        try {
          link.transport.send(
            envelope(LOCAL_NAMESPACE, { type: 'agent', ns: namespace, resource, message }),
          )
        } catch (error) {
          throw new AgentDisconnectedError(
            `The connection to the local hub closed: ${errorText(error)}`,
          )
        }
      },
      onMessage: (listener) => on(agent.onMessage, listener),
      onDisconnect: (listener) => on(agent.onDisconnect, listener),
      onConnect: (listener) => on(agent.onConnect, listener),
    }
  }

  close(): Promise<void> {
    return this.#gate.close(async () => {
      const link = this.#link
      this.#link = undefined
      await Promise.all(
        [...this.#watches].map(async (w) => {
          await w.remote?.().catch(() => {})
        }),
      )
      this.#watches.clear()
      this.#held.clear()
      this.#doubt.clear()
      this.#placed.clear()
      await link?.remote.close()
      const host = this.#hostUsed
      this.#hostUsed = undefined
      await host?.unuse()
    })
  }

  /** The link to the current hub, connecting (or becoming the hub) first when there is none. */
  async #ready(): Promise<Link> {
    this.#gate.check()
    const link = this.#link
    if (link && !link.broken) return link
    this.#connecting ??= this.#connect().finally(() => (this.#connecting = undefined))
    return this.#connecting
  }

  async #connect(): Promise<Link> {
    const { address, timeoutMs } = this.settings
    const deadline = performance.now() + timeoutMs
    let delay = 1
    let last: unknown
    for (;;) {
      this.#gate.check()
      let transport: Transport | undefined
      let host = hostedHub(address)
      if (!host) {
        try {
          transport = socketTransport(await connectSocket(address))
          // Who this process is, first: the hub frees our grants at once if we die (only then).
          try {
            transport.send(
              envelope(LOCAL_NAMESPACE, {
                type: 'hello',
                identity: selfIdentity(),
                handle: this.#handle,
              }),
            )
          } catch {
            // Closed already: the next call finds out and reconnects.
          }
        } catch (error) {
          last = error
          if (!NO_HUB.has((error as NodeJS.ErrnoException).code ?? '')) {
            throw new BackendError(
              `local: cannot connect to the hub at ${address}: ${errorText(error)}`,
              { cause: error },
            )
          }
          host = await HubHost.start(this.settings)
        }
      }
      if (host) {
        if (this.#hostUsed !== host) {
          host.use()
          const previous = this.#hostUsed
          this.#hostUsed = host
          await previous?.unuse()
        }
        transport = host.transport(this.#handle)
      }
      if (transport) {
        const link = await this.#attach(transport, host)
        if (link) return link
        // That hub went away while this handle re-registered there: find the next one.
        last = new Error('the hub closed the connection during the re-registration')
      }
      if (performance.now() >= deadline) {
        throw new BackendTimeoutError(
          `local: no hub at ${address} within ${timeoutMs} ms (${errorText(last)}); another process holds the hub lock but does not listen.`,
        )
      }
      // Another process holds the lock and is about to listen: try again shortly.
      await new Promise((resolve) => setTimeout(resolve, delay).unref())
      delay = Math.min(delay * 2, 25)
    }
  }

  /**
   * Uses a new channel to a hub: re-registers held grants and watches, then serves calls.
   * Undefined when the channel closed meanwhile (a hub dying as it accepted us): the grants it
   * could not answer for stay held, to be re-registered at the next hub.
   */
  async #attach(transport: Transport, host: HubHost | undefined): Promise<Link | undefined> {
    const remote = new RemoteBackend(transport, {
      name: 'local',
      requestTimeoutMs: this.settings.timeoutMs,
      hint: `Is the hub process (the holder of ${this.settings.address}) paused or overloaded?`,
    })
    const link: Link = { remote, transport, host, broken: false }
    transport.onMessage((message) => {
      if (!isOurs(message, LOCAL_NAMESPACE) || message.type !== 'agent') return
      const line = typeof message.ns === 'string' ? this.#agents.get(message.ns) : undefined
      if (line) for (const listener of [...line.onMessage]) listener(message.message)
    })
    transport.onClose(() => {
      const wasCurrent = this.#link === link && !link.broken
      link.broken = true
      if (wasCurrent) {
        for (const line of this.#agents.values()) {
          for (const listener of [...line.onDisconnect]) listener()
        }
      }
      // Reconnect at once (not at the next call), so a new hub is found and this handle's
      // grants are re-registered there before any other process's grace ends.
      if (this.#link === link && !this.#gate.closing) {
        void this.#ready().catch(() => {})
      }
    })
    const now = performance.now()
    // Whether every grant this handle may still act on is registered at the new hub.
    let complete = true
    for (const [key, doubted] of this.#doubt) {
      if (now - doubted.sentAt >= doubted.leaseMs) this.#doubt.delete(key)
      else complete = false
    }
    await Promise.all(
      [...this.#held.entries()].map(async ([key, held]) => {
        const remainingMs = Math.floor(held.leaseMs - (now - held.sentAt))
        const kept =
          remainingMs > 0 &&
          (await remote
            .adopt({
              resource: held.resource,
              candidate: held.candidate,
              token: held.token,
              tickets: held.tickets,
              remainingMs,
              metadata: held.metadata,
            })
            // No answer is not a refusal: decided below, by whether the channel still stands.
            .catch(() => undefined))
        // Refused (or run out): the grant is gone; the next renewal says so and the term ends.
        if (kept === false && this.#held.get(key) === held) {
          this.#held.delete(key)
          if (remainingMs > 0) this.#doubt.set(key, held)
        }
        // Not surely registered here while the term may still run (refused: until the next
        // renewal says so; no answer: maybe never registered): this handle is not synced.
        if (kept !== true && remainingMs > 0) complete = false
      }),
    )
    if (link.broken) return undefined
    // The hub may end its post-crash wait once every client said this: only when nothing this
    // handle may still act on is missing there (else the hub waits the lease out). Sent after
    // every adopt was answered, so the hub has registered them all when it reads this.
    if (complete) {
      try {
        transport.send(envelope(LOCAL_NAMESPACE, { type: 'synced' }))
      } catch {
        // Closed already: the next connection says it.
      }
    }
    await Promise.all(
      [...this.#watches].map(async (watch) => {
        watch.remote = await remote.watch(watch.resource, watch.onChange).catch(() => undefined)
      }),
    )
    if (link.broken) return undefined
    this.#link = link
    // Holders may have changed while there was no hub: let every watcher look again.
    for (const watch of this.#watches) queueMicrotask(() => watch.onChange())
    // The agents greet this hub's router.
    for (const line of this.#agents.values()) {
      for (const listener of [...line.onConnect]) queueMicrotask(listener)
    }
    return link
  }
}

function keyOf(request: { resource: string; candidate: string }): string {
  return `${request.resource}\n${request.candidate}`
}
