/**
 * What every backend shares. For now: the close gate, which makes `close()` end every term
 * held through the backend (the election core registers itself with `onClose`) before the
 * backend gives anything up, and makes a closed backend's errors final.
 */
import { BackendClosedError } from '../errors.js'

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
