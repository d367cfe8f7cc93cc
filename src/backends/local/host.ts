/**
 * The hub of a `local` app, hosted by whichever of its processes took the lock: a memory store
 * behind the cluster backend's Hub, served over the unix socket to the other processes and
 * in-process to this one. One per address per process (LocalBackend handles share it).
 *
 * Safety across a hub change: the store's tokens start at epoch * 2^32 (epoch from the state
 * file, one more per hub), above every token an older hub gave; grants the old hub's clients
 * still hold come back through `adopt`; and after a crash (no clean hand-over) the new hub grants
 * nothing new for the longest lease any hub granted, so no grant of the old hub can still be
 * running when it grants one again.
 *
 * That wait may end early, on one invariant: **no process that may still believe it holds a grant
 * of an older hub is left out.** Every client handle that may hold a grant is named in the state
 * file before its first call is served (a handle that cannot be written down is not served; one
 * that does not say who it is makes the list unknown, and then the wait is never cut short), and
 * a new hub carries the old list over until every older grant has run out. The wait ends once
 * each handle of that list has either said `synced` or is surely dead (its process gone, by
 * identity.ts). A handle says `synced` only after every grant its terms may still run on was
 * adopted here, each adopt answered `true`: a grant whose adopt got no answer (the hub died, the
 * call timed out), or was refused while its lease may still run there, keeps it from saying so.
 * So the wait goes on for a handle that has not reconnected yet, one that is paused (SIGSTOP),
 * one whose process lives in another pid namespace, one whose adopt went unanswered: each of
 * them may hold a grant the new hub does not know, and costs the full wait.
 */
import { unlinkSync } from 'node:fs'
import { createServer, type Server, type Socket } from 'node:net'
import type { AcquireRequest, AcquireResult, Backend, WatchChange } from '../../backend.js'
import { Hub, type HubConnection, type HubSession } from '../cluster/hub.js'
import type { Transport } from '../cluster/remote.js'
import { isOurs } from '../../ipc/envelope.js'
import { forwardingBackend } from '../kit.js'
import {
  LOCAL_NAMESPACE,
  liveness,
  parseIdentity,
  type ProcessIdentity,
  selfIdentity,
  surelyDead,
} from './identity.js'
import { MemoryBackend } from '../memory.js'
import { AgentRelay, type RelayPeer } from './agent-relay.js'
import { type HubLock, tryLock } from './lock.js'
import type { LocalSettings } from './options.js'
import { probe, readLines, writeLine } from './socket.js'
import {
  type ClientEntry,
  isHandle,
  readState,
  TOKEN_SPAN,
  writeState,
  type HubState,
} from './state.js'

/** A client handle this hub knows of (see HubState.clients). */
interface Client {
  identity: ProcessIdentity
  /** Its connections open now (a handle reconnecting may overlap its old connection). */
  connections: number
  /** A connection of it closed while holding a grant here (which may outlive it). */
  mayHold?: true
}

/** The hubs this process hosts, by address. */
const hosted = new Map<string, HubHost>()

/** The hub this process hosts at `address`, if any. */
export function hostedHub(address: string): HubHost | undefined {
  return hosted.get(address)
}

/** A hub this process hosts (see the module comment). */
export class HubHost {
  readonly settings: LocalSettings
  readonly epoch: number
  readonly #lock: HubLock
  readonly #store: MemoryBackend
  readonly #hub: Hub
  readonly #server: Server
  readonly #sockets = new Set<Socket>()
  readonly #local = new Set<() => void>()
  readonly #state: HubState
  /** The process agent's routers (src/backends/local/agent-relay.ts). */
  readonly #agents: AgentRelay
  /** performance.now() until which only adopted holders are served (after a crash). */
  #graceUntil: number
  /**
   * Until then (performance.now()), grants of older hubs may still run: the handles named by the
   * old state file stay in this hub's, and an unknown old list stays unknown.
   */
  readonly #carryUntil: number
  /** The client handles that may hold grants (HubState.clients), by handle id. */
  readonly #clients = new Map<string, Client>()
  /** The old state file's handles that have not re-registered (nor died) yet. */
  readonly #pending = new Set<string>()
  /** The list is unknown: the old one was, or a client of this hub did not say who it is. */
  #unknownOld: boolean
  #unknownHere = false
  /** Watchers of the store while the wait lasts: told when it ends early, so they ask again. */
  readonly #graceWatchers = new Set<(change?: WatchChange) => void>()
  #carryTimer: NodeJS.Timeout | undefined
  #users = 0
  #stopped = false

  private constructor(
    settings: LocalSettings,
    lock: HubLock,
    state: HubState,
    server: Server,
    graceMs: number,
  ) {
    this.settings = settings
    this.#lock = lock
    this.#state = state
    this.epoch = state.epoch
    const now = performance.now()
    this.#graceUntil = now + graceMs
    this.#carryUntil = now + state.maxLeaseMs
    this.#unknownOld = state.clients === null
    for (const entry of state.clients ?? []) {
      this.#clients.set(entry.handle, { identity: entry.identity, connections: 0 })
      this.#pending.add(entry.handle)
    }
    this.#store = new MemoryBackend({
      tokenFloor: state.epoch * TOKEN_SPAN,
      // A release hands its ticket to the next in line only when an acquire could be granted:
      // not within the post-crash wait, and not once the grants went into the state file.
      handoff: () => !this.#stopped && performance.now() >= this.#graceUntil,
    })
    this.#hub = new Hub(this.#guarded(), {
      adopt: (grant) => this.#store.adopt(grant),
      session: () => this.#guardedSession(this.#store.session()),
      // A socket can close while its process lives on (a reset, an oversized line): its grants
      // run out their leases unless it reconnects and adopts them, never freed under it.
      releaseOnClose: false,
      ...(settings.onError ? { onError: settings.onError } : {}),
    })
    this.#server = server
    this.#agents = new AgentRelay(this.#store, settings.onError ?? (() => {}))
  }

  /**
   * Becomes the hub at `settings.address`, or resolves undefined when another process is (or is
   * becoming) the hub. Unlinks a socket file only while holding the lock, and only after a
   * probe was refused (ECONNREFUSED): a live hub's socket is never removed.
   */
  static async start(settings: LocalSettings): Promise<HubHost | undefined> {
    const existing = hosted.get(settings.address)
    if (existing) return existing
    const lock = await tryLock(settings)
    if (!lock) return undefined
    try {
      if (settings.lock !== 'pipe') {
        const found = await probe(settings.address)
        if (found === 'live') {
          lock.release()
          return undefined
        }
        if (found === 'stale') unlinkSync(settings.address)
      }
      const old = readState(settings.statePath)
      const clean = old.clean
      // The old hub's clients may still hold its grants (or a clean hand-over's): carried over,
      // but not those surely gone already.
      const clients =
        old.clients?.filter((c: ClientEntry) => liveness(c.identity) !== 'dead') ?? null
      const state: HubState = {
        epoch: old.epoch + 1,
        maxLeaseMs: old.maxLeaseMs,
        clean: null,
        clients,
      }
      // Durable before the first grant: a crash of this hub must not reuse its epoch.
      writeState(settings.statePath, state)
      const server = createServer()
      const listening = await new Promise<boolean>((resolve, reject) => {
        server.once('error', (error: NodeJS.ErrnoException) => {
          if (error.code === 'EADDRINUSE') resolve(false)
          else reject(error)
        })
        // exclusive: in a node:cluster worker (PM2 cluster mode) a plain listen is done by the
        // primary and shared, so every worker would "bind" it and be a hub.
        server.listen({ path: settings.address, exclusive: true }, () => resolve(true))
      })
      if (!listening) {
        lock.release()
        return undefined
      }
      server.unref()
      try {
        const host = new HubHost(settings, lock, state, server, clean ? 0 : old.maxLeaseMs)
        if (clean && !host.#adoptHandOver(clean)) {
          // A hand-over this hub cannot load whole: its grants may run unknown here, so
          // grant nothing new for the longest lease, as after a crash.
          host.#graceUntil = performance.now() + old.maxLeaseMs
        }
        server.on('connection', (socket) => host.#serve(socket))
        hosted.set(settings.address, host)
        host.#watchPending()
        return host
      } catch (error) {
        // Never leave a socket listening that nobody serves: the others would connect to it
        // and wait for answers instead of taking over.
        server.close()
        if (settings.lock !== 'pipe') unlinkQuietly(settings.address)
        throw error
      }
    } catch (error) {
      lock.release()
      throw error
    }
  }

  /** Installs a clean hand-over's grants; false when one of them could not be installed. */
  #adoptHandOver(clean: NonNullable<HubState['clean']>): boolean {
    const elapsed = Math.max(0, Date.now() - clean.at)
    let whole = true
    for (const grant of clean.grants) {
      // Rounded up: a lease is whole ms, and the holder's term must not outlive it here.
      const remainingMs = Math.ceil(grant.remainingMs - elapsed)
      if (remainingMs <= 0) continue
      try {
        if (!this.#store.adopt({ ...grant, remainingMs })) whole = false
      } catch (error) {
        whole = false
        this.settings.onError?.(error as Error)
      }
    }
    return whole
  }

  /** performance.now() until which only adopted holders are served (after a crash). */
  get graceUntil(): number {
    return this.#graceUntil
  }

  /**
   * After a crash, each old client that is surely dead stops counting; the last one ends the
   * wait (with those that re-registered). Then, once no older grant can run, the old list goes.
   */
  #watchPending(): void {
    for (const handle of this.#pending) {
      const client = this.#clients.get(handle)
      if (!client) continue
      void surelyDead(client.identity).then((dead) => {
        if (!dead || this.#stopped || !this.#pending.delete(handle)) return
        if (this.#clients.get(handle)?.connections === 0) this.#clients.delete(handle)
        this.#maybeEndGrace()
      })
    }
    this.#maybeEndGrace()
    // Once every grant of an older hub has run out, its clients that never came back hold none.
    const forgetOld = () => {
      for (const handle of this.#pending) {
        const client = this.#clients.get(handle)
        // One that re-registered here without saying synced may hold this hub's grants: kept.
        if (client?.connections === 0 && !client.mayHold) this.#clients.delete(handle)
      }
      this.#pending.clear()
      this.#unknownOld = false
    }
    const carryMs = this.#carryUntil - performance.now()
    if (carryMs <= 0) forgetOld()
    else if (this.#pending.size > 0 || this.#unknownOld) {
      this.#carryTimer = setTimeout(() => {
        this.#carryTimer = undefined
        if (this.#stopped) return
        forgetOld()
        this.#persistLoosely()
      }, carryMs + 1)
      this.#carryTimer.unref()
    }
  }

  /** Ends the post-crash wait now if no grant of an older hub can run unknown to this one. */
  #maybeEndGrace(): void {
    if (this.#stopped || this.#unknownOld || this.#pending.size > 0) return
    if (this.#graceUntil <= performance.now()) return
    this.#graceUntil = performance.now()
    const watchers = [...this.#graceWatchers]
    this.#graceWatchers.clear()
    // Waiters refused during the wait were told to ask when it ends: it ended now.
    for (const onChange of watchers) onChange()
  }

  /**
   * A client handle says who it is (before any of its calls is served): durable first. Throws
   * when the state file cannot say so: the client must not be served then.
   */
  #introduce(handle: string, identity: ProcessIdentity): void {
    // A stopped hub serves nobody (its transports are closed) and must not touch the state
    // file, which the next hub may own by now.
    if (this.#stopped) return
    const known = this.#clients.get(handle)
    if (known) {
      known.connections++
      return
    }
    this.#clients.set(handle, { identity, connections: 1 })
    try {
      this.#persist()
    } catch (error) {
      this.#clients.delete(handle)
      throw error
    }
  }

  /** A handle re-registered what it held at an older hub (its adopts are done). */
  #synced(handle: string): void {
    const client = this.#clients.get(handle)
    if (client) delete client.mayHold
    if (this.#pending.delete(handle)) this.#maybeEndGrace()
  }

  /** A connection of `handle` closed; a handle holding nothing here (nor pending) is forgotten. */
  #leave(handle: string, holding: boolean): void {
    const client = this.#clients.get(handle)
    if (!client) return
    client.connections = Math.max(0, client.connections - 1)
    if (holding) client.mayHold = true
    // One of its connections closed holding a grant that outlives it: kept (the next hub after
    // a crash must hear from it), until a later connection says synced, owning what it holds.
    if (client.connections > 0 || holding || client.mayHold || this.#pending.has(handle)) return
    this.#clients.delete(handle)
    this.#persistLoosely()
  }

  /**
   * A client that did not say who it is: the next hub after a crash waits its full lease.
   * Throws when the state file cannot say so (the client must not be served).
   */
  #anonymous(): void {
    if (this.#unknownHere) return
    this.#unknownHere = true
    try {
      this.#persist()
    } catch (error) {
      this.#unknownHere = false
      throw error
    }
  }

  /**
   * Writes the state file (durably) as it stands: epoch, longest lease, clients. Throws when it
   * cannot: the file then still says what it said, which callers must treat as not written.
   */
  #persist(clean: HubState['clean'] = null): void {
    // After stop() wrote its hand-over, the next hub may own the file: an older write would
    // bring back this hub's epoch and drop that hand-over.
    if (this.#stopped && !clean) throw new Error('local: this hub has stopped')
    this.#state.clients =
      this.#unknownOld || this.#unknownHere
        ? null
        : [...this.#clients].map(([handle, c]) => ({ handle, identity: c.identity }))
    this.#state.clean = clean
    writeState(this.settings.statePath, this.#state)
  }

  /** #persist where a failure only makes the file more cautious (it names a client too many). */
  #persistLoosely(): void {
    if (this.#stopped) return
    try {
      this.#persist()
    } catch (error) {
      this.settings.onError?.(error as Error)
    }
  }

  /** One more LocalBackend of this process uses the hub. */
  use(): void {
    this.#users++
  }

  /** One LocalBackend of this process is done with the hub; the last one stops it. */
  async unuse(): Promise<void> {
    if (--this.#users <= 0) await this.stop()
  }

  /**
   * An in-process connection to the hub (this process's own LocalBackends), as a Transport;
   * `handle` is the LocalBackend's id (HubState.clients).
   */
  transport(handle: string): Transport {
    const listeners = new Set<(message: unknown) => void>()
    const closers = new Set<() => void>()
    let open = !this.#stopped
    const deliver = (message: object) => {
      // A copy, as a socket would deliver: neither side shares objects with the other.
      const copy = JSON.parse(JSON.stringify(message)) as unknown
      queueMicrotask(() => {
        for (const listener of [...listeners]) listener(copy)
      })
    }
    // Recorded before the connection exists: a failure leaves nothing behind.
    this.#introduce(handle, selfIdentity())
    const connection = this.#hub.connect(deliver)
    const peer: RelayPeer = {
      id: this.#agents.nextId(),
      pid: () => process.pid,
      send(message) {
        if (!open) throw new Error('the hub in this process has stopped')
        deliver(message)
      },
      connected: () => open,
    }
    const agents = this.#agents
    const close = () => {
      if (!open) return
      open = false
      this.#local.delete(close)
      if (!this.#stopped) this.#leave(handle, connection.holding())
      void connection.close()
      this.#agents.gone(peer)
      for (const closer of [...closers]) closer()
    }
    this.#local.add(close)
    const synced = () => this.#synced(handle)
    return {
      send(message) {
        if (!open) throw new Error('the hub in this process has stopped')
        const copy = JSON.parse(JSON.stringify(message)) as unknown
        queueMicrotask(() => {
          if (isOurs(copy, LOCAL_NAMESPACE)) {
            if (copy.type === 'agent' && open) agents.receive(peer, copy)
            else if (copy.type === 'synced' && open) synced()
          } else connection.receive(copy)
        })
      },
      onMessage(listener) {
        listeners.add(listener)
        return () => listeners.delete(listener)
      },
      onClose(listener) {
        closers.add(listener)
        return () => closers.delete(listener)
      },
    }
  }

  /**
   * Stops serving: the grants still held (other processes') go into the state file as a clean
   * hand-over, then every connection is cut (their processes reconnect, and one becomes the
   * next hub), the socket is removed and the lock released.
   */
  async stop(): Promise<void> {
    if (this.#stopped) return
    this.#stopped = true
    hosted.delete(this.settings.address)
    this.#server.close()
    this.#agents.close()
    if (this.#carryTimer) clearTimeout(this.#carryTimer)
    try {
      this.#persist({ at: Date.now(), grants: this.#store.snapshot() })
    } catch (error) {
      // No clean hand-over then: the next hub waits out the grants, as after a crash.
      this.settings.onError?.(error as Error)
    }
    for (const socket of this.#sockets) socket.destroy()
    for (const close of [...this.#local]) close()
    if (this.settings.lock !== 'pipe') unlinkQuietly(this.settings.address)
    this.#lock.release()
    await this.#store.close()
  }

  #serve(socket: Socket): void {
    if (this.#stopped) {
      socket.destroy()
      return
    }
    socket.unref()
    this.#sockets.add(socket)
    const onError = this.settings.onError ?? (() => {})
    // Who the peer process says it is (its first message); unknown: its grants run out.
    let peer: ProcessIdentity | undefined
    /** Its handle id, when its hello named one (HubState.clients). */
    let handle: string | undefined
    let introduced = false
    /** Every message but the first hello: one that came first makes the client anonymous. */
    const introduce = (message: Record<string, unknown> | undefined) => {
      if (introduced) return !socket.destroyed
      introduced = true
      if (message) {
        peer = parseIdentity(message.identity)
        if (peer && isHandle(message.handle)) handle = message.handle
      }
      try {
        if (handle && peer) this.#introduce(handle, peer)
        else this.#anonymous()
        return true
      } catch (error) {
        // Unrecorded, it must not be served: it reconnects and says who it is again.
        handle = undefined
        onError(error as Error)
        socket.destroy()
        return false
      }
    }
    const connection: HubConnection = this.#hub.connect(
      (message) => {
        try {
          writeLine(socket, message)
        } catch (error) {
          onError(error as Error)
        }
      },
      // A socket can close while its process lives on (a reset, an oversized line), so its
      // grants are freed at once only if that process is surely dead; else they run out.
      { releaseOnClose: () => (peer ? surelyDead(peer) : false) },
    )
    const relayPeer: RelayPeer = {
      id: this.#agents.nextId(),
      pid: () => peer?.pid ?? 0,
      send: (message) => writeLine(socket, message),
      connected: () => !socket.destroyed,
    }
    readLines(
      socket,
      (message) => {
        if (isOurs(message, LOCAL_NAMESPACE)) {
          if (message.type === 'hello' && !introduced) introduce(message)
          else if (message.type === 'agent') this.#agents.receive(relayPeer, message)
          else if (message.type === 'synced' && handle) this.#synced(handle)
          return
        }
        // Durable before its first call is served: who may hold grants of this hub.
        if (introduce(undefined)) connection.receive(message)
      },
      onError,
    )
    socket.on('error', () => {})
    socket.on('close', () => {
      this.#sockets.delete(socket)
      this.#agents.gone(relayPeer)
      // Stopping hands the grants over instead: they stay in the snapshot.
      if (this.#stopped) return
      if (handle) this.#leave(handle, connection.holding())
      void connection.close()
    })
  }

  /** The store as the hub serves it: the post-crash wait, and the longest lease made durable. */
  #guarded(): Backend {
    const store = this.#store
    return forwardingBackend(store, {
      watch: (resource, onChange) => this.#watch(resource, onChange, store),
      acquire: (request: AcquireRequest) => this.#acquire(request, store),
    })
  }

  /** One connection's session on the store, its acquires and watches guarded as #guarded's. */
  #guardedSession(session: HubSession): HubSession {
    return {
      ...session,
      acquire: (request) => this.#acquire(request, session),
      watch: (resource, onChange) => this.#watch(resource, onChange, session),
    }
  }

  /** A watch (through `via`) that is also told when the post-crash wait ends early. */
  async #watch(
    resource: string,
    onChange: (change?: WatchChange) => void,
    via: Pick<Backend, 'watch'>,
  ): ReturnType<Backend['watch']> {
    const unwatch = await via.watch(resource, onChange)
    if (this.#graceUntil <= performance.now()) return unwatch
    this.#graceWatchers.add(onChange)
    return async () => {
      this.#graceWatchers.delete(onChange)
      await unwatch()
    }
  }

  /** An acquire as the hub serves it (through `via`: the store, or a connection's session). */
  async #acquire(request: AcquireRequest, via: Pick<Backend, 'acquire'>): Promise<AcquireResult> {
    const store = this.#store
    const waitMs = this.#graceUntil - performance.now()
    if (waitMs > 0) {
      const holders = await store.holders(request.resource)
      if (!holders.some((h) => h.candidate === request.candidate)) {
        return { acquired: false, holders, retryInMs: Math.ceil(waitMs) }
      }
    }
    // Stopped meanwhile (awaiting the holders above): the next hub owns the state file now.
    if (this.#stopped) {
      return { acquired: false, holders: [], retryInMs: 100 }
    }
    if (Number.isInteger(request.leaseMs) && request.leaseMs > this.#state.maxLeaseMs) {
      // Known to the next hub before any grant this long exists.
      this.#state.maxLeaseMs = request.leaseMs
      this.#persist()
    }
    return via.acquire(request)
  }
}

/** Removes our socket file; one already gone is fine. */
function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path)
  } catch {
    // Gone already.
  }
}
