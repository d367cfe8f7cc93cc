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
 */
import { unlinkSync } from 'node:fs'
import { createServer, type Server, type Socket } from 'node:net'
import type { AcquireRequest, AcquireResult, Backend } from '../../backend.js'
import { Hub, type HubConnection, type HubSession } from '../cluster/hub.js'
import type { Transport } from '../cluster/remote.js'
import { isOurs } from '../../ipc/envelope.js'
import { forwardingBackend } from '../kit.js'
import { LOCAL_NAMESPACE, parseIdentity, type ProcessIdentity, surelyDead } from './identity.js'
import { MemoryBackend } from '../memory.js'
import { AgentRelay, type RelayPeer } from './agent-relay.js'
import { type HubLock, tryLock } from './lock.js'
import type { LocalSettings } from './options.js'
import { probe, readLines, writeLine } from './socket.js'
import { readState, TOKEN_SPAN, writeState, type HubState } from './state.js'

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
  readonly graceUntil: number
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
    this.graceUntil = performance.now() + graceMs
    this.#store = new MemoryBackend({
      tokenFloor: state.epoch * TOKEN_SPAN,
      // A release hands its ticket to the next in line only when an acquire could be granted:
      // not within the post-crash grace, and not once the grants went into the state file.
      handoff: () => !this.#stopped && performance.now() >= this.graceUntil,
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
      const state: HubState = { epoch: old.epoch + 1, maxLeaseMs: old.maxLeaseMs, clean: null }
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
      const host = new HubHost(settings, lock, state, server, clean ? 0 : old.maxLeaseMs)
      if (clean) {
        const elapsed = Math.max(0, Date.now() - clean.at)
        for (const grant of clean.grants) {
          const remainingMs = grant.remainingMs - elapsed
          if (remainingMs > 0) host.#store.adopt({ ...grant, remainingMs })
        }
      }
      server.on('connection', (socket) => host.#serve(socket))
      hosted.set(settings.address, host)
      return host
    } catch (error) {
      lock.release()
      throw error
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

  /** An in-process connection to the hub (this process's own LocalBackends), as a Transport. */
  transport(): Transport {
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
      void connection.close()
      this.#agents.gone(peer)
      for (const closer of [...closers]) closer()
    }
    this.#local.add(close)
    return {
      send(message) {
        if (!open) throw new Error('the hub in this process has stopped')
        const copy = JSON.parse(JSON.stringify(message)) as unknown
        queueMicrotask(() => {
          if (isOurs(copy, LOCAL_NAMESPACE)) {
            if (copy.type === 'agent' && open) agents.receive(peer, copy)
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
    try {
      writeState(this.settings.statePath, {
        ...this.#state,
        clean: { at: Date.now(), grants: this.#store.snapshot() },
      })
    } catch (error) {
      this.settings.onError?.(error as Error)
    }
    for (const socket of this.#sockets) socket.destroy()
    for (const close of [...this.#local]) close()
    if (this.settings.lock !== 'pipe') {
      try {
        unlinkSync(this.settings.address)
      } catch {
        // Gone already.
      }
    }
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
    let introduced = false
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
          if (message.type === 'hello' && !introduced) {
            introduced = true
            peer = parseIdentity(message.identity)
          } else if (message.type === 'agent') this.#agents.receive(relayPeer, message)
          return
        }
        connection.receive(message)
      },
      onError,
    )
    socket.on('error', () => {})
    socket.on('close', () => {
      this.#sockets.delete(socket)
      this.#agents.gone(relayPeer)
      // Stopping hands the grants over instead: they stay in the snapshot.
      if (!this.#stopped) void connection.close()
    })
  }

  /** The store as the hub serves it: the post-crash wait, and the longest lease made durable. */
  #guarded(): Backend {
    const store = this.#store
    return forwardingBackend(store, {
      acquire: (request: AcquireRequest) => this.#acquire(request, store),
    })
  }

  /** One connection's session on the store, its acquires guarded as #guarded's. */
  #guardedSession(session: HubSession): HubSession {
    return { ...session, acquire: (request) => this.#acquire(request, session) }
  }

  /** An acquire as the hub serves it (through `via`: the store, or a connection's session). */
  async #acquire(request: AcquireRequest, via: Pick<Backend, 'acquire'>): Promise<AcquireResult> {
    const store = this.#store
    const waitMs = this.graceUntil - performance.now()
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
      writeState(this.settings.statePath, this.#state)
    }
    return via.acquire(request)
  }
}
