import { ConclaveError } from '../errors.js'

/**
 * A write carried a fencing token smaller than the highest one the guarded resource has seen:
 * its writer's term is over (it was paused, partitioned or stalled past its lease) and a newer
 * leader has written since. Drop the write; do not retry it with the same token.
 */
export class StaleTokenError extends ConclaveError {
  /** What was guarded: a Redis key, a table row, a memory-fence key. */
  readonly target: string
  /** The token the write carried. */
  readonly token: number
  /** The highest token the target had seen (greater than `token`). */
  readonly highest: number
  constructor(target: string, token: number, highest: number) {
    super(
      'ERR_CONCLAVE_STALE_TOKEN',
      `Stale fencing token ${token} for ${target}: it has seen token ${highest}. A newer leader has written; this writer's term is over.`,
    )
    this.target = target
    this.token = token
    this.highest = highest
  }
}
