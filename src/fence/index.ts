/**
 * `conclave/fence`: guards for the places a leader writes. A lease alone never gives mutual
 * exclusion (a paused process wakes up believing it still leads); every term carries a fencing
 * token, and these guards refuse a write whose token is smaller than the largest they have seen.
 */
export { StaleTokenError } from '../errors.js'
export { MemoryFence, type FenceResult } from './memory.js'
export {
  fencedWrite,
  fenceKeyFor,
  highestToken,
  type FencedWriteOptions,
  type RedisScriptClient,
} from './redis.js'
export {
  fencedUpdate,
  fencedUpdateSql,
  type FencedUpdateOptions,
  type PgQueryable,
} from './postgres.js'
