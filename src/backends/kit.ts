/**
 * What every backend shares, so that each says and does these things the same way: the close
 * gate (close() ends every term held through the backend before the backend gives anything up,
 * and makes a closed backend's errors final), the deadline of one call and the BackendError that
 * names the server, the fan-out of one change to every watcher of a resource, loading an
 * optional peer dependency, and keeping passwords out of messages.
 */
import { createRequire } from 'node:module'
import type { Backend, WriteRecordRequest } from '../backend.js'
import {
  BackendClosedError,
  BackendError,
  BackendTimeoutError,
  ConclaveError,
  MissingPeerError,
} from '../errors.js'

/** Runs a backend's close in the contract's order: hooks (terms end, grants released), then teardown. */
export class CloseGate {
  readonly #name: string
  readonly #hooks = new Set<() => Promise<void>>()
  #closing: Promise<void> | undefined
  #closed = false

  constructor(backendName: string) {
    this.#name = backendName
  }

  /** True once close() began: no new watches or campaigns should start. */
  get closing(): boolean {
    return this.#closing !== undefined
  }

  /** The Backend contract's `onClose`: `hook` runs (and is awaited) first thing in close(). */
  onClose(hook: () => Promise<void>): () => void {
    const entry = () => hook()
    this.#hooks.add(entry)
    return () => void this.#hooks.delete(entry)
  }

  /** Throws the final BackendClosedError once the hooks have run and teardown began. */
  check(): void {
    if (this.#closed) throw new BackendClosedError(this.#name)
  }

  /** The backend's close(): idempotent; the hooks first (calls still work), then `teardown`. */
  close(teardown: () => Promise<void>): Promise<void> {
    this.#closing ??= (async () => {
      const hooks = [...this.#hooks]
      this.#hooks.clear()
      // A hook that fails must not keep the backend open; the core reports its own errors.
      await Promise.allSettled(hooks.map((hook) => hook()))
      this.#closed = true
      await teardown()
    })()
    return this.#closing
  }
}

// --- calls -----------------------------------------------------------------------------------

/** How messages name a backend's server: `etcd at 127.0.0.1:2379`, or the backend alone. */
export function serverLabel(backend: string, where?: string): string {
  return where ? `${backend} at ${where}` : backend
}

/** An error's own words; a connect failure to every address of a name (AggregateError) has none. */
export function errorText(error: unknown): string {
  if (!(error instanceof Error)) return String(error)
  if (error.message) return error.message
  const inner = (error as { errors?: unknown }).errors
  if (Array.isArray(inner) && inner.length > 0) return inner.map(errorText).join('; ')
  const code = (error as { code?: unknown }).code
  return typeof code === 'string' ? code : error.name
}

/**
 * A failed call as a BackendError naming the server (`label`, from serverLabel) and keeping the
 * client's error as `cause`, so a message says where without losing what; conclave's own errors
 * (a timeout, a closed backend) pass through unchanged.
 */
export function backendError(label: string, what: string, error: unknown): Error {
  if (error instanceof ConclaveError) return error
  return new BackendError(`${label}: ${what} failed: ${errorText(error)}`, { cause: error })
}

/** The BackendTimeoutError of a call that got no answer in time, naming the server. */
export function timeoutError(label: string, what: string, ms: number): BackendTimeoutError {
  return new BackendTimeoutError(`${label}: ${what} got no answer in ${ms} ms`)
}

/**
 * Settles as `promise` does, or rejects with `onTimeout()` after `ms`: a dead connection fails a
 * call instead of hanging it. The timer never keeps the process up, and a late outcome of
 * `promise` is dropped quietly (it was already reported as the timeout).
 */
export function withDeadline<T>(
  promise: Promise<T>,
  ms: number,
  onTimeout: () => Error,
): Promise<T> {
  // One promise and one timer per call (every backend call comes here): `promise` is observed
  // by the then() below, so a late rejection never goes unhandled, and settling twice is a no-op.
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(onTimeout()), ms)
    timer.unref()
    promise.then(
      (value) => {
        clearTimeout(timer)
        resolve(value)
      },
      (error: unknown) => {
        clearTimeout(timer)
        // Passed on as it came, as Promise.race did: it is the caller's to wrap.
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
        reject(error)
      },
    )
  })
}

// --- watchers --------------------------------------------------------------------------------

/**
 * Tells every listener of a change, each in its own microtask: a listener that throws (its own
 * business) or that unwatches another never keeps the news from the rest.
 */
export function fanOut(listeners: Iterable<() => void>): void {
  for (const listener of [...listeners]) {
    queueMicrotask(() => {
      try {
        listener()
      } catch {
        // The others still hear of the change.
      }
    })
  }
}

/** The Backend contract's Unwatch over `remove`: idempotent, so a second call is harmless. */
export function unwatchOnce(remove: () => void): () => Promise<void> {
  let done = false
  return async () => {
    if (done) return
    done = true
    remove()
  }
}

// --- peers and options ------------------------------------------------------------------------

/**
 * An optional peer dependency (CommonJS, so loaded synchronously), or a MissingPeerError naming
 * what needed it when it is not installed; any other failure to load it is thrown as it is.
 */
export function requirePeer<T>(name: string, neededBy: string): T {
  try {
    return createRequire(import.meta.url)(name) as T
  } catch (error) {
    const code = (error as { code?: unknown } | null)?.code
    const missing =
      (code === 'MODULE_NOT_FOUND' || code === 'ERR_MODULE_NOT_FOUND') &&
      error instanceof Error &&
      error.message.includes(`'${name}'`)
    if (!missing) throw error
    throw new MissingPeerError(name, neededBy, { cause: error })
  }
}

/**
 * A URL as it may appear in a message: the password of its user info (which ends at the last
 * `@` of the authority) and of a `password` or `sslpassword` parameter replaced by `***`.
 */
export function redactUrl(url: string): string {
  const match = /^([a-z][a-z0-9+.-]*:\/\/)([^/?#]*)(.*)$/is.exec(url)
  if (!match) return url
  const scheme = match[1]!
  let authority = match[2]!
  let rest = match[3]!
  const at = authority.lastIndexOf('@')
  const colon = authority.indexOf(':')
  if (at >= 0 && colon >= 0 && colon < at) {
    authority = `${authority.slice(0, colon)}:***${authority.slice(at)}`
  }
  rest = rest.replace(/([?&](?:ssl)?password=)[^&#]*/gi, '$1***')
  return scheme + authority + rest
}

/**
 * A backend that forwards every call to `inner` except the ones `overrides` replaces: the one
 * way to wrap a backend (metrics, tests, a guard), so a method added to the contract is never
 * silently dropped by a hand-written wrapper.
 */
export function forwardingBackend(inner: Backend, overrides: Partial<Backend> = {}): Backend {
  return {
    name: overrides.name ?? inner.name,
    acquire: overrides.acquire ?? ((request) => inner.acquire(request)),
    renew: overrides.renew ?? ((requests) => inner.renew(requests)),
    release: overrides.release ?? ((request) => inner.release(request)),
    holders: overrides.holders ?? ((resource) => inner.holders(resource)),
    watch: overrides.watch ?? ((resource, onChange) => inner.watch(resource, onChange)),
    onClose: overrides.onClose ?? ((hook) => inner.onClose(hook)),
    close: overrides.close ?? (() => inner.close()),
    // The optional capabilities, when the inner backend has them.
    ...(inner.readRecord && {
      readRecord: (resource: string, key: string) => inner.readRecord!(resource, key),
    }),
    ...(inner.writeRecord && {
      writeRecord: (request: WriteRecordRequest) => inner.writeRecord!(request),
    }),
    ...(inner.now && { now: () => inner.now!() }),
  }
}
