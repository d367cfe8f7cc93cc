/**
 * A fenced register in memory: the reference semantics of every fence in this folder, and the
 * referee of the chaos harness. A write is applied when its token is >= the highest token the
 * key has seen (a term writes many times with one token), and refused otherwise.
 */
import { validateToken } from '../validate.js'
import { StaleTokenError } from '../errors.js'

/** What a fenced write returned: written, or refused as stale with the newest token seen. */
export type FenceResult<T> =
  { accepted: true; highest: number } | { accepted: false; highest: number; value: T | undefined }

/** An in-process fenced register: refuses writes with a token older than the newest seen (tests, examples). */
export class MemoryFence<T = unknown> {
  readonly #cells = new Map<string, { highest: number; value: T | undefined }>()

  /** Applies the write or reports why not, without throwing on a stale token. */
  tryWrite(key: string, token: number, value: T): FenceResult<T> {
    validateToken(token)
    const cell = this.#cells.get(key)
    if (cell && token < cell.highest) {
      return { accepted: false, highest: cell.highest, value: cell.value }
    }
    this.#cells.set(key, { highest: token, value })
    return { accepted: true, highest: token }
  }

  /** Applies the write, or throws StaleTokenError when a newer token has written. */
  write(key: string, token: number, value: T): void {
    const result = this.tryWrite(key, token, value)
    if (!result.accepted) throw new StaleTokenError(`key "${key}"`, token, result.highest)
  }

  /** The value of `key` and the highest token it has seen, or undefined if never written. */
  read(key: string): { value: T | undefined; highest: number } | undefined {
    const cell = this.#cells.get(key)
    return cell && { value: cell.value, highest: cell.highest }
  }
}
