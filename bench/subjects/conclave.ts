/**
 * conclave as a subject, whatever the backend: candidates are Elections on a backend of their
 * own, every backend call is counted (the request count of in-process and IPC backends) and
 * every renewal round timed.
 */
import type { Backend } from '../../src/backend.js'
import { Election } from '../../src/election.js'
import { type HolderConfig, type HolderProcess, now } from '../probes.js'
import type { Candidate, Subject } from '../scenarios.js'

/** A backend for one candidate, and how to give it up. */
export interface Opened {
  backend: Backend
  close: () => Promise<void>
}

/** What a backend's subject adds to the common conclave subject. */
export interface ConclaveSubjectOptions extends Omit<Subject, 'candidate' | 'renewRounds'> {
  /** A backend with connections of its own, for one candidate. */
  open: () => Opened | Promise<Opened>
}

const COUNTED = new Set(['acquire', 'renew', 'release', 'holders', 'watch'])

/** `inner` with each call counted in `calls` and each renew call's duration added to `rounds`. */
function instrument(inner: Backend, calls: { n: number }, rounds: number[]): Backend {
  // Each method wrapped once, not at every call: the counting must not add to what is timed.
  const wrapped = new Map<PropertyKey, { of: unknown; fn: unknown }>()
  return new Proxy(inner, {
    get(target, property) {
      // Read on the backend itself: its getters and methods use private fields.
      const value = Reflect.get(target, property) as unknown
      if (typeof value !== 'function') return value
      const known = wrapped.get(property)
      if (known?.of === value) return known.fn
      const method = (value as (...args: unknown[]) => unknown).bind(target)
      const fn = !COUNTED.has(String(property))
        ? method
        : property !== 'renew'
          ? (...args: unknown[]) => {
              calls.n++
              return method(...args)
            }
          : async (...args: unknown[]) => {
              calls.n++
              const t0 = performance.now()
              const result = await method(...args)
              rounds.push(performance.now() - t0)
              return result
            }
      wrapped.set(property, { of: value, fn })
      return fn
    },
  })
}

/** A candidate of Elections on one backend; an idle Election is reused for its resource. */
export function conclaveCandidate(opened: Opened): Candidate {
  const idle = new Map<string, Election[]>()
  const all = new Set<Election>()
  let lost = 0
  return {
    async acquire(resource, leaseMs, signal) {
      const slot = `${resource}\n${leaseMs}`
      const free = idle.get(slot) ?? []
      idle.set(slot, free)
      let e = free.pop()
      if (!e) {
        e = new Election(opened.backend, resource, { leaseMs })
        e.on('error', () => {})
        e.on('revoked', (_, reason) => reason !== 'resigned' && reason !== 'closed' && lost++)
        all.add(e)
      }
      const election = e
      try {
        const term = await election.campaign(signal ? { signal } : {})
        return async () => {
          await term.resign()
          free.push(election)
        }
      } catch (error) {
        free.push(election)
        throw error
      }
    },
    lost: () => lost,
    async close() {
      await Promise.all([...all].map((e) => e.close()))
      await opened.close()
    },
  }
}

/** conclave on the backend `options.open()` makes. */
export function conclaveSubject(options: ConclaveSubjectOptions): Subject {
  const calls = { n: 0 }
  const rounds: number[] = []
  const { open, ...rest } = options
  return {
    ...rest,
    requests: options.requests ?? (async () => calls.n),
    renewRounds: () => rounds.splice(0),
    async candidate() {
      const opened = await open()
      return conclaveCandidate({
        backend: instrument(opened.backend, calls, rounds),
        close: opened.close,
      })
    },
  }
}

/** In a holder process: an Election with the holder's id on `backend`, campaigned and held. */
export async function holdWithElection(
  backend: Backend,
  config: HolderConfig,
  onLost: () => void,
): Promise<void> {
  const election = new Election(backend, config.resource, {
    leaseMs: config.leaseMs,
    id: config.id,
  })
  election.on('error', () => {})
  election.on('revoked', onLost)
  await election.campaign()
}

/**
 * The expiry probe of a backend that reports remaining lease time: asks right after the kill
 * what is left of the holder's grant (the holder's id per resource is in `ids`).
 */
export function expiryFromHolders(
  probe: () => Backend,
  ids: Map<string, string>,
): NonNullable<Subject['expiry']> {
  return async (resource, killed) => {
    await killed
    const askedAt = now()
    const holders = await probe().holders(resource)
    const dead = holders.find((h) => h.candidate === ids.get(resource))
    if (!dead) throw new Error(`the killed holder of ${resource} had no grant left`)
    return askedAt + dead.remainingMs
  }
}

/** Holder ids the expiry probes can find again among a resource's holders. */
export const holderId = () => `holder-${process.pid}-${Math.random().toString(36).slice(2, 8)}`

/** The spawnHolder of a subject whose holders are plain forked processes. */
export type SpawnHolder = (
  resource: string,
  leaseMs: number,
  via?: { port: number },
) => Promise<HolderProcess>
