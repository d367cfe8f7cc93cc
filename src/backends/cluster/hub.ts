/**
 * Serves one backend to many connections (workers). Transport-independent: a connection is a
 * `send` function plus the messages handed to `receive`. When a connection closes (its worker
 * exited or disconnected), every grant acquired through it is released at once and its
 * watches are dropped, so a dead worker never holds a resource for a lease.
 *
 * With a `session` per connection (the memory store's), a release hands the freed ticket to the
 * next waiter in line itself: the hub records that grant as the waiter's connection's (as if it
 * had asked) and pushes it (the event's `granted`) to that connection only.
 */
import type {
  AcquireRequest,
  AcquireResult,
  Backend,
  ReleaseRequest,
  RenewRequest,
  Unwatch,
  WatchChange,
  WriteRecordRequest,
} from '../../backend.js'
import { CandidateInUseError, ProtocolError } from '../../errors.js'
import type { GrantRecord, MemorySession } from '../memory.js'
import { envelope, isId, isOurs } from '../../ipc/envelope.js'
import { eventMessage, NAMESPACE, parseRequest, type RequestMessage, toWire } from './protocol.js'

/** One peer (a worker, a socket) as the hub sees it: hand it messages, close it when it leaves. */
export interface HubConnection {
  /** Hand every message that arrived on the transport; messages that are not ours are ignored. */
  receive(message: unknown): void
  /** The peer is gone: release its grants and drop its watches. Idempotent. */
  close(): Promise<void>
  /** Whether a grant acquired or adopted through this connection is held (false once closed). */
  holding(): boolean
}

/** Options of a Hub. */
export interface HubOptions {
  /** The message key marking this hub's traffic. Default `conclave`. */
  namespace?: string
  /** Told about malformed messages and failed cleanups; the hub itself never throws. */
  onError?: (error: Error) => void
  /**
   * Serves the `adopt` op: installs a grant the peer held at a previous hub (the `local`
   * backend after a hub change); true when installed. Without it, `adopt` is refused.
   */
  adopt?: (grant: GrantRecord) => boolean
  /**
   * Whether a closed connection's grants are released at once (default true). True for
   * node:cluster IPC, whose channel closes only when the worker is gone. False for a socket,
   * which can close while its process lives on and still acts on its terms: the grants then
   * run out their leases, and the process re-registers them (`adopt`) when it reconnects.
   */
  releaseOnClose?: boolean
  /**
   * Makes each connection's view of the store (a MemoryBackend's `session()`): its acquires and
   * watches go through it, so the store knows which connection each waiter's place belongs to
   * and whether it listens, and a release can hand a freed ticket to a waiter in line
   * (`WatchChange.granted`). The hub ends it when the connection closes. Without it: no handoff.
   */
  session?: () => HubSession
  /**
   * Without a session: pass the grants a watch change names (`WatchChange.granted`) through as
   * they came. Only for a hub serving one peer's own backend (a driver relaying one process's
   * handle, whose changes name that process's grants only). Otherwise they are left out: the
   * hub cannot tell whose place a grant filled, so no connection is told it holds one it did
   * not ask for; the waiter is woken and asks again.
   */
  relayGrants?: boolean
}

/** One connection's view of the store (see `HubOptions.session`). */
export type HubSession = MemorySession

const MAX_WATCHES_PER_CONNECTION = 100_000

/** An optional Backend method of the served backend, or a ProtocolError saying it has none. */
function optional<K extends 'readRecord' | 'writeRecord' | 'now'>(
  backend: Backend,
  op: K,
): NonNullable<Backend[K]> {
  const fn = backend[op]
  if (typeof fn !== 'function')
    throw new ProtocolError(`The hub's ${backend.name} backend has no ${op}.`)
  return fn.bind(backend) as NonNullable<Backend[K]>
}

/** Serves a backend to peers over any message transport; drops a peer's grants when it leaves. */
export class Hub {
  readonly backend: Backend
  readonly namespace: string
  readonly #onError: (error: Error) => void
  /** Which connection holds each (resource, candidate): an id shared by two processes is refused. */
  readonly #owners = new Map<string, symbol>()
  readonly #releaseOnClose: boolean
  readonly #adopt: ((grant: GrantRecord) => boolean) | undefined
  readonly #session: (() => HubSession) | undefined
  readonly #relayGrants: boolean

  constructor(backend: Backend, options: HubOptions = {}) {
    this.backend = backend
    this.namespace = options.namespace ?? NAMESPACE
    this.#onError = options.onError ?? (() => {})
    this.#adopt = options.adopt
    this.#releaseOnClose = options.releaseOnClose ?? true
    this.#session = options.session
    this.#relayGrants = options.relayGrants ?? false
  }

  /**
   * Opens a connection for one peer: `send` carries the hub's messages to it; feed its messages
   * to the returned connection, and close it when the peer goes (its grants go with it, unless
   * `releaseOnClose` is false).
   */
  connect(
    send: (message: object) => void,
    options: {
      /**
       * Asked when the connection closes, instead of the hub's `releaseOnClose`: true when its
       * peer is surely gone, so its grants are released at once (the `local` hub asks whether
       * the peer's process is dead). A grant someone took over meanwhile (adopted, or acquired
       * by the same candidate) is not released.
       */
      releaseOnClose?: () => boolean | Promise<boolean>
    } = {},
  ): HubConnection {
    const ns = this.namespace
    const releaseOnClose = options.releaseOnClose ?? this.#releaseOnClose
    const backend = this.backend
    const onError = this.#onError
    const owners = this.#owners
    const adopt = this.#adopt
    const self = Symbol('connection')
    const session = this.#session?.()
    const relayGrants = this.#relayGrants
    const acquire = (request: AcquireRequest): Promise<AcquireResult> =>
      session ? session.acquire(request) : backend.acquire(request)
    const watches = new Map<string, Promise<Unwatch | undefined>>()
    const held = new Map<string, { resource: string; candidate: string; token: number }>()
    /** Places in line taken through this connection (withdrawn with its grants on close). */
    const queued = new Map<string, { resource: string; candidate: string }>()
    let closed = false
    /** Set by close(): whether this peer's grants are released (a grant handed after it too). */
    let freeing: Promise<boolean> | undefined

    /**
     * Grants a release handed to this connection's places (WatchChange.granted): recorded as
     * its own, as for an acquire it sent, so its disconnect frees them the same way. One whose
     * id another connection holds now is not this peer's (it is left out of the event); one made
     * as the peer left is released once the close decided so, never left to block the line.
     */
    const took = (resource: string, granted: { candidate: string; token: number }[]) => {
      const mine: { candidate: string; token: number }[] = []
      for (const g of granted) {
        const key = `${resource}\n${g.candidate}`
        const owner = owners.get(key)
        if (owner !== undefined && owner !== self) continue
        if (closed) {
          const grant = { resource, candidate: g.candidate, token: g.token }
          void (freeing ?? Promise.resolve(false)).then(async (free) => {
            if (free && !owners.has(key)) await backend.release(grant).catch(onError)
          })
          continue
        }
        owners.set(key, self)
        held.set(key, { resource, candidate: g.candidate, token: g.token })
        queued.delete(key)
        mine.push(g)
      }
      return mine
    }

    const reply = (
      id: string | null,
      result: { ok: true; value: unknown } | { ok: false; error: unknown },
    ) => {
      if (closed) return
      try {
        send(
          result.ok
            ? envelope(ns, { type: 'response', id, ok: true, value: result.value ?? null })
            : envelope(ns, { type: 'response', id, ok: false, error: toWire(result.error) }),
        )
      } catch (error) {
        onError(error as Error)
      }
    }

    const handle = async (request: RequestMessage): Promise<unknown> => {
      const args = request.args as Record<string, unknown>
      if (
        request.op !== 'renew' &&
        request.op !== 'now' &&
        (typeof args !== 'object' || args === null || Array.isArray(args))
      ) {
        throw new ProtocolError(
          `Invalid args for ${request.op}: ${JSON.stringify(request.args)}. Expected an object.`,
        )
      }
      switch (request.op) {
        case 'acquire': {
          const req = args as unknown as AcquireRequest
          const key = `${String(req.resource)}\n${String(req.candidate)}`
          const owner = owners.get(key)
          if (owner !== undefined && owner !== self) {
            // Two processes using one candidate id would both be told they hold the grant.
            throw new CandidateInUseError(String(req.resource), req.candidate)
          }
          owners.set(key, self) // reserved now, so a concurrent acquire cannot slip in
          let result: Awaited<ReturnType<Backend['acquire']>>
          try {
            result = await acquire(req)
          } catch (error) {
            if (!held.has(key) && owners.get(key) === self) owners.delete(key)
            throw error
          }
          // After the peer left, another connection may have taken the id over (the peer came
          // back): what that one holds is not ours to give back.
          const stillOurs = () => {
            const now = owners.get(key)
            return now === undefined || now === self
          }
          if (!result.acquired && result.ahead !== undefined) {
            queued.set(key, { resource: req.resource, candidate: req.candidate })
            // Queued after the peer left: withdraw the place, or it would block the line.
            if (closed && releaseOnClose && stillOurs()) {
              await backend.release({ resource: req.resource, candidate: req.candidate })
              queued.delete(key)
            }
          } else queued.delete(key)
          if (result.acquired) {
            held.set(key, { resource: req.resource, candidate: req.candidate, token: result.token })
            // Acquired after the peer left: give that grant (its token only) straight back.
            if (closed) {
              if (stillOurs()) {
                await backend.release({
                  resource: req.resource,
                  candidate: req.candidate,
                  token: result.token,
                })
              }
              held.delete(key)
              if (owners.get(key) === self) owners.delete(key)
            }
          } else if (!held.has(key) && owners.get(key) === self) {
            owners.delete(key)
          }
          return result
        }
        case 'renew':
          if (!Array.isArray(request.args)) {
            throw new ProtocolError(
              `Invalid args for renew: ${JSON.stringify(request.args)}. Expected an array of renew requests.`,
            )
          }
          return backend.renew(request.args as RenewRequest[])
        case 'release': {
          const req = args as unknown as ReleaseRequest
          await backend.release(req)
          const key = `${req.resource}\n${req.candidate}`
          if (req.token === undefined) queued.delete(key)
          // Still held means the release named an older token: the grant and its owner stay.
          const still = await backend.holders(req.resource)
          if (!still.some((h) => h.candidate === req.candidate)) {
            held.delete(key)
            if (owners.get(key) === self) owners.delete(key)
          }
          return null
        }
        case 'adopt': {
          if (!adopt) throw new ProtocolError('This hub does not adopt grants (op "adopt").')
          const grant = args as unknown as GrantRecord
          const key = `${String(grant.resource)}\n${String(grant.candidate)}`
          const owner = owners.get(key)
          if (owner !== undefined && owner !== self) return false
          if (!adopt(grant)) return false
          owners.set(key, self)
          held.set(key, {
            resource: grant.resource,
            candidate: grant.candidate,
            token: grant.token,
          })
          return true
        }
        case 'holders':
          return backend.holders(args.resource as string)
        case 'watch': {
          const watch = args.watch
          if (!isId(watch) || watches.has(watch)) {
            throw new ProtocolError(
              `Invalid watch id: ${JSON.stringify(watch)}. A watch id is a new string of 1 to 128 characters.`,
            )
          }
          if (watches.size >= MAX_WATCHES_PER_CONNECTION) {
            throw new ProtocolError(`Too many watches on one connection (${watches.size}).`)
          }
          const resource = args.resource as string
          const watchVia = session ?? backend
          const pending = watchVia.watch(resource, (change) => {
            // With a session the grants named are this connection's: recorded, then sent.
            // Without one they are left out (HubOptions.relayGrants), unless relayed as is.
            if (change?.granted) {
              if (session) {
                const granted = took(resource, change.granted)
                change = granted.length ? { ...change, granted } : withoutGranted(change)
              } else if (!relayGrants) change = withoutGranted(change)
            }
            if (closed) return
            try {
              send(envelope(ns, eventMessage(watch, change)))
            } catch (error) {
              onError(error as Error)
            }
          })
          watches.set(
            watch,
            pending.catch(() => undefined),
          )
          let unwatch: Unwatch
          try {
            unwatch = await pending
          } catch (error) {
            watches.delete(watch)
            throw error
          }
          if (closed) await unwatch()
          return null
        }
        case 'unwatch': {
          const pending = watches.get(args.watch as string)
          watches.delete(args.watch as string)
          const unwatch = await pending
          if (unwatch) await unwatch()
          return null
        }
        case 'readRecord':
          return (
            (await optional(backend, 'readRecord')(String(args.resource), String(args.key))) ?? null
          )
        case 'writeRecord':
          return optional(backend, 'writeRecord')(args as unknown as WriteRecordRequest)
        case 'now':
          return optional(backend, 'now')()
      }
    }

    return {
      holding: () => held.size > 0,
      receive(message: unknown): void {
        if (closed || !isOurs(message, ns)) return
        let request: RequestMessage
        try {
          request = parseRequest(message)
        } catch (error) {
          onError(error as Error)
          reply(isId(message.id) ? message.id : null, { ok: false, error })
          return
        }
        handle(request).then(
          (value) => reply(request.id, { ok: true, value }),
          (error: unknown) => reply(request.id, { ok: false, error }),
        )
      },
      async close(): Promise<void> {
        if (closed) return
        closed = true
        // No place of this peer takes a handoff from now on.
        session?.end()
        const grants = [...held.entries()]
        held.clear()
        const places = [...queued.entries()]
        queued.clear()
        // Unowned either way: the peer may reconnect and adopt the grant it still holds.
        for (const [key] of grants) if (owners.get(key) === self) owners.delete(key)
        const release = async (decide: boolean | Promise<boolean>) => {
          if (!(await decide)) return
          // Taken over meanwhile (while a decision was awaited): no longer this peer's.
          await Promise.all([
            ...grants
              .filter(([key]) => !owners.has(key))
              .map(([, h]) => backend.release(h).catch(onError)),
            // A gone peer's places too; not one another connection now holds under that id.
            ...places
              .filter(([key]) => !owners.has(key))
              .map(([, q]) =>
                backend.release({ resource: q.resource, candidate: q.candidate }).catch(onError),
              ),
          ])
        }
        freeing =
          typeof releaseOnClose === 'function'
            ? Promise.resolve()
                .then(releaseOnClose)
                .catch((error: unknown) => (onError(error as Error), false))
            : Promise.resolve(releaseOnClose)
        const releases = release(freeing)
        const unwatches = [...watches.values()].map(async (pending) => {
          const unwatch = await pending
          if (unwatch) await unwatch().catch(onError)
        })
        watches.clear()
        await Promise.all([releases, ...unwatches])
      },
    }
  }
}

/** The change minus its `granted` (none of them is the receiver's). */
function withoutGranted(change: WatchChange): WatchChange {
  const rest = { ...change }
  delete rest.granted
  return rest
}
