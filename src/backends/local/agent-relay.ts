/**
 * The process agent over `local`: the hub's process routes the agent's messages between the
 * app's processes, as the cluster primary does between its workers (the same router,
 * src/agent/primary-router.ts, over this hub's connections instead of node:cluster IPC). Every
 * process is a worker; the designated one is the holder of the agent's resource in this hub's
 * store, found by the candidate id its agent gave in its hello. Each agent namespace gets a
 * router of its own once a process greets in it; only processes that greeted are asked by a
 * gather. When the hub changes, the new hub's router starts empty and every agent greets again
 * (what was in flight at the old hub fails with AgentDisconnectedError).
 *
 * On the socket, agent messages travel wrapped: `{ 'conclave-local': 1, type: 'agent', ns,
 * resource, message }` to the hub, `{ 'conclave-local': 1, type: 'agent', ns, message }` back.
 */
import type { Backend, Holder } from '../../backend.js'
import { AgentDisconnectedError } from '../../errors.js'
import { envelope, isOurs } from '../../ipc/envelope.js'
import { Handlers } from '../../agent/handlers.js'
import { PrimaryRouter } from '../../agent/primary-router.js'
import type { AgentCore } from '../../agent/role.js'
import type { PoolWorker, WorkerPool } from '../../agent/transport.js'
import { LOCAL_NAMESPACE } from './identity.js'

/** Agent namespaces one hub routes at most: a peer cannot make it keep routers without end. */
export const MAX_AGENT_NAMESPACES = 32

/** One connection to the hub as the agent relay sees it. */
export interface RelayPeer {
  readonly id: number
  /** Its process id, as far as the hub knows (its hello). */
  pid(): number
  /** Sends one message on the connection (wrapped by the caller); throws when it is closed. */
  send(message: object): void
  connected(): boolean
}

interface Router {
  router: PrimaryRouter
  members: Map<number, RelayPeer>
  /** Candidate id of each member's designated election → member id. */
  candidates: Map<string, number>
  onMessage: Set<(worker: PoolWorker, message: unknown) => void>
  onGone: Set<(id: number) => void>
  /** Wakes the holders source (a new member may be the holder it could not name). */
  kick(): void
  stop: AbortController
}

/** Every agent router of one hub (see the module comment). */
export class AgentRelay {
  readonly #store: Backend
  readonly #report: (error: Error) => void
  readonly #routers = new Map<string, Router>()
  #nextId = 1

  constructor(store: Backend, report: (error: Error) => void) {
    this.#store = store
    this.#report = report
  }

  /** A number for a new connection (the workerId its agents get). */
  nextId(): number {
    return this.#nextId++
  }

  /** A message of `peer` in the local namespace with type `agent`. */
  receive(peer: RelayPeer, wrapper: Record<string, unknown>): void {
    const { ns, resource, message } = wrapper
    if (typeof ns !== 'string' || ns === '' || ns.length > 128 || !isOurs(message, ns)) return
    let r = this.#routers.get(ns)
    if (!r) {
      if (typeof resource !== 'string' || resource === '' || resource.length > 1024) return
      if (this.#routers.size >= MAX_AGENT_NAMESPACES) {
        this.#report(
          new Error(
            `local: an agent namespace beyond the ${MAX_AGENT_NAMESPACES} this hub routes (${ns.slice(0, 40)}); its messages are dropped`,
          ),
        )
        return
      }
      r = this.#start(ns, resource)
    }
    if (!r.members.has(peer.id)) r.members.set(peer.id, peer)
    if (message.type === 'hello' && typeof message.candidate === 'string') {
      r.candidates.set(message.candidate, peer.id)
      r.kick()
    }
    const worker = this.#worker(ns, peer)
    for (const listener of [...r.onMessage]) listener(worker, message)
  }

  /** `peer`'s connection closed: every router forgets it (its calls and gathers settle). */
  gone(peer: RelayPeer): void {
    for (const r of this.#routers.values()) {
      if (!r.members.delete(peer.id)) continue
      for (const [candidate, id] of r.candidates) if (id === peer.id) r.candidates.delete(candidate)
      for (const listener of [...r.onGone]) listener(peer.id)
    }
  }

  /** The hub stops: every router stops (its workers reconnect to the next hub). */
  close(): void {
    // What was in flight here is lost with the hub, as when its connection drops: the callers'
    // retryable AgentDisconnectedError, not a bare error they cannot tell apart.
    const lost = new AgentDisconnectedError(
      'The local hub stopped (its process is shutting down) while the call was in flight; it may or may not have run.',
    )
    for (const r of this.#routers.values()) {
      r.stop.abort()
      r.router.close(lost)
    }
    this.#routers.clear()
  }

  #worker(ns: string, peer: RelayPeer): PoolWorker {
    return {
      id: peer.id,
      pid: peer.pid(),
      isConnected: () => peer.connected() && (this.#routers.get(ns)?.members.has(peer.id) ?? false),
      send(message, onFail) {
        try {
          peer.send(envelope(LOCAL_NAMESPACE, { type: 'agent', ns, message }))
        } catch (error) {
          onFail(error as Error)
        }
      },
    }
  }

  #start(ns: string, resource: string): Router {
    const stop = new AbortController()
    let wake: (() => void) | undefined
    let dirty = true
    const kick = () => {
      dirty = true
      wake?.()
    }
    const r: Router = {
      router: undefined as unknown as PrimaryRouter,
      members: new Map(),
      candidates: new Map(),
      onMessage: new Set(),
      onGone: new Set(),
      kick,
      stop,
    }
    const pool: WorkerPool = {
      workers: () =>
        [...r.members.values()]
          .filter((p) => p.connected())
          .sort((a, b) => a.id - b.id)
          .map((p) => this.#worker(ns, p)),
      get: (id) => {
        const peer = r.members.get(id)
        return peer ? this.#worker(ns, peer) : undefined
      },
      onMessage: (listener) => (r.onMessage.add(listener), () => r.onMessage.delete(listener)),
      onGone: (listener) => (r.onGone.add(listener), () => r.onGone.delete(listener)),
    }
    const store = this.#store
    const report = this.#report
    // The holders of `resource`, each named by the member whose agent campaigns as it.
    async function* holders(signal: AbortSignal): AsyncIterable<Holder[]> {
      const unwatch = await store.watch(resource, kick)
      try {
        while (!signal.aborted) {
          if (!dirty) {
            await new Promise<void>((resolve) => {
              wake = resolve
              signal.addEventListener('abort', () => resolve(), { once: true })
            })
            wake = undefined
            continue
          }
          dirty = false
          const list = await store.holders(resource)
          yield list.map((h) => {
            const id = r.candidates.get(h.candidate)
            const peer = id === undefined ? undefined : r.members.get(id)
            return { ...h, metadata: peer ? { workerId: peer.id, pid: peer.pid() } : null }
          })
        }
      } finally {
        await unwatch().catch(() => {})
      }
    }
    const self = { workerId: 0, pid: process.pid }
    const core: AgentCore = {
      self,
      settings: {
        designated: 'worker',
        timeoutMs: 10_000,
        gatherTimeoutMs: 5_000,
        leaseMs: 10_000,
        resource,
        namespace: ns,
        onError: undefined,
        backend: undefined,
      },
      // Never the designated process itself (no member is numbered 0): no handler runs here.
      handlers: new Handlers(
        self,
        () => 'json',
        (error) => report(error as Error),
      ),
      election: undefined as never,
      stop: stop.signal,
      campaign: () => {},
      report: (error) => report(error instanceof Error ? error : new Error(String(error))),
    }
    r.router = new PrimaryRouter(core, { pool, holders, serialization: 'json' })
    this.#routers.set(ns, r)
    return r
  }
}
