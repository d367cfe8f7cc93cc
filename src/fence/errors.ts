/** A shim for src/fence/redis.ts, which imports from here: StaleTokenError lives in src/errors.ts. */
export { StaleTokenError } from '../errors.js'
