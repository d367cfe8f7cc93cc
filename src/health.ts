/**
 * A health check for processes that lead (like client-go's leader-election watchdog). It
 * reports unhealthy when
 * - a term went past its deadline without stepping down: the process kept acting as leader
 *   after the instant another candidate could be granted the resource (its event loop stalled,
 *   or it was paused), seen either now (a term still considered held past its deadline) or
 *   recently (a term whose end came later than its deadline by more than the election's margin);
 * - the backend has been unreachable for longer than a bound: errors kept coming and nothing
 *   succeeded since (while errors go on, the check probes the backend with `holders()` to see
 *   when it answers again). The work's own errors (WorkError, `code` ERR_CONCLAVE_WORK: a
 *   `run()` or `every()` callback that threw) say nothing of the backend and are ignored.
 * `check()` is synchronous and cheap; `handler()` serves it over HTTP (200 or 503, JSON).
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Election } from './election.js'
import type { Term } from './term.js'
import { checkOptions, milliseconds } from './validate.js'

/** Options of `healthCheck()`. */
export interface HealthOptions {
  /** How long backend errors may go on, with no success, before the check fails. Default 30000. */
  unreachableMs?: number
  /**
   * How far past its deadline a term may end before that counts as a stall. Default: each
   * election's `marginMs` (beyond it, the backend may already have granted someone else).
   */
  toleranceMs?: number
  /** How long a late step-down keeps the check failing. Default 60000. */
  rememberMs?: number
  /** How often the backend is probed while its errors go on. Default 1000. */
  probeMs?: number
}

/** One election's part of a health report. */
export interface ElectionHealth {
  resource: string
  candidate: string
  leader: boolean
  /** The current term's token, while leading. */
  token: number | undefined
  /** Milliseconds to the current term's deadline (negative: past it). */
  remainingMs: number | undefined
  /** Milliseconds since the backend's errors began with no success since, if they go on. */
  failingForMs: number | undefined
  problems: string[]
}

/** What a health check answers: healthy or not, why, and each election's state. */
export interface HealthReport {
  healthy: boolean
  problems: string[]
  elections: ElectionHealth[]
}

interface Tracked {
  election: Election
  term: Term | undefined
  /** When the current run of errors began (election clock), if no success came since. */
  failingSince: number | undefined
  lastDeadline: number | undefined
  lateEnds: { at: number; message: string }[]
  probe: NodeJS.Timeout | undefined
  probing: boolean
  off: () => void
}

const OPTION_NAMES = ['unreachableMs', 'toleranceMs', 'rememberMs', 'probeMs']

function optionalMs(options: HealthOptions, name: keyof HealthOptions, fallback?: number) {
  const value = options[name] ?? fallback
  return value === undefined ? undefined : milliseconds(name, value, 0)
}

/** A health check over elections (see `healthCheck()`): `check()` and an HTTP `handler()`. */
export class HealthCheck {
  readonly #tracked = new Map<Election, Tracked>()
  readonly #unreachableMs: number
  readonly #toleranceMs: number | undefined
  readonly #rememberMs: number
  readonly #probeMs: number

  constructor(options: HealthOptions = {}) {
    checkOptions(options, OPTION_NAMES, 'health')
    this.#unreachableMs = optionalMs(options, 'unreachableMs', 30_000)!
    this.#toleranceMs = optionalMs(options, 'toleranceMs')
    this.#rememberMs = optionalMs(options, 'rememberMs', 60_000)!
    this.#probeMs = Math.max(1, optionalMs(options, 'probeMs', 1_000)!)
  }

  /** Watches an election (its events, its term's deadline). Returns a function to stop. */
  track(election: Election): () => void {
    const existing = this.#tracked.get(election)
    if (existing) return () => this.#untrack(election)
    const clock = election.options.clock
    const entry: Tracked = {
      election,
      term: election.term,
      failingSince: undefined,
      lastDeadline: election.term?.deadline,
      lateEnds: [],
      probe: undefined,
      probing: false,
      off: () => {},
    }
    const succeeded = () => this.#succeeded(entry)
    const onElected = (term: Term) => {
      entry.term = term
      entry.lastDeadline = term.deadline
      succeeded()
    }
    const onRevoked = (term: Term, reason: string) => {
      if (entry.term === term) entry.term = undefined
      const late = clock.now() - term.deadline
      const tolerance = this.#toleranceMs ?? election.options.marginMs
      // A term resigned or closed early is fine; one that ended after its deadline was held
      // while the backend could already have granted it to someone else.
      if (late > tolerance) {
        entry.lateEnds.push({
          at: clock.now(),
          message: `term ${term.token} on "${election.resource}" ended (${reason}) ${Math.round(late)} ms past its deadline (tolerance ${tolerance} ms): the event loop stalled or the process was paused while leading`,
        })
      }
    }
    const offError = onElectionError(election, (error) => {
      // A job that throws is the job's problem: the backend may be answering fine.
      if ((error as { code?: unknown }).code !== 'ERR_CONCLAVE_WORK') this.#failed(entry)
    })
    election.on('elected', onElected)
    election.on('revoked', onRevoked)
    election.on('leader', succeeded)
    entry.off = () => {
      offError()
      election.off('elected', onElected)
      election.off('revoked', onRevoked)
      election.off('leader', succeeded)
      this.#stopProbe(entry)
    }
    this.#tracked.set(election, entry)
    return () => this.#untrack(election)
  }

  /** The state now. Never throws, never waits. */
  check(): HealthReport {
    const problems: string[] = []
    const elections: ElectionHealth[] = []
    for (const entry of this.#tracked.values()) {
      const { election } = entry
      const clock = election.options.clock
      const now = clock.now()
      const mine: string[] = []
      const term = entry.term
      let remainingMs: number | undefined
      // entry.term is cleared by 'revoked'. Read the deadline, not term.active or endReason:
      // those read the clock and end an overdue term, which would hide the stall from us.
      if (term) {
        remainingMs = term.deadline - now
        this.#noteDeadline(entry, term)
      }
      if (term && remainingMs !== undefined) {
        const tolerance = this.#toleranceMs ?? election.options.marginMs
        if (-remainingMs > tolerance) {
          mine.push(
            `term ${term.token} on "${election.resource}" is ${Math.round(-remainingMs)} ms past its deadline and has not stepped down: the event loop is stalled`,
          )
        }
      }
      entry.lateEnds = entry.lateEnds.filter((late) => now - late.at < this.#rememberMs)
      mine.push(...entry.lateEnds.map((late) => late.message))
      if (election.closed) entry.failingSince = undefined
      const failingForMs = entry.failingSince === undefined ? undefined : now - entry.failingSince
      if (failingForMs !== undefined && failingForMs >= this.#unreachableMs) {
        mine.push(
          `the ${election.backend.name} backend of "${election.resource}" has failed for ${Math.round(failingForMs)} ms with no success (bound ${this.#unreachableMs} ms)`,
        )
      }
      problems.push(...mine)
      elections.push({
        resource: election.resource,
        candidate: election.id,
        leader: remainingMs !== undefined && remainingMs > 0,
        token: remainingMs !== undefined ? term!.token : undefined,
        remainingMs,
        failingForMs,
        problems: mine,
      })
    }
    return { healthy: problems.length === 0, problems, elections }
  }

  /**
   * A node:http (or Express) handler: 200 with the report as JSON when healthy, 503 otherwise.
   * `server.on('request', health.handler())` or `app.get('/healthz', health.handler())`.
   */
  handler(): (request: IncomingMessage, response: ServerResponse) => void {
    return (_request, response) => {
      const report = this.check()
      const body = JSON.stringify(report)
      response.writeHead(report.healthy ? 200 : 503, {
        'content-type': 'application/json',
        'cache-control': 'no-store',
        'content-length': Buffer.byteLength(body),
      })
      response.end(body)
    }
  }

  /** Stops tracking everything (listeners and probes removed). */
  close(): void {
    for (const election of [...this.#tracked.keys()]) this.#untrack(election)
  }

  #untrack(election: Election): void {
    const entry = this.#tracked.get(election)
    if (!entry) return
    entry.off()
    this.#tracked.delete(election)
  }

  /** A renewal moved the deadline: the backend answered. */
  #noteDeadline(entry: Tracked, term: Term): void {
    if (entry.lastDeadline !== undefined && term.deadline > entry.lastDeadline)
      this.#succeeded(entry)
    entry.lastDeadline = term.deadline
  }

  #succeeded(entry: Tracked): void {
    entry.failingSince = undefined
    this.#stopProbe(entry)
  }

  #failed(entry: Tracked): void {
    const { election } = entry
    if (election.closed) return
    if (entry.term) this.#noteDeadline(entry, entry.term)
    entry.failingSince ??= election.options.clock.now()
    if (entry.probe) return
    // Errors say the backend failed; only a success says it is back. Ask it, while it fails.
    entry.probe = setInterval(() => {
      if (entry.probing) return
      if (election.closed) return this.#succeeded(entry)
      entry.probing = true
      election.backend.holders(election.resource).then(
        () => {
          entry.probing = false
          this.#succeeded(entry)
        },
        () => {
          entry.probing = false
        },
      )
    }, this.#probeMs)
    entry.probe.unref()
  }

  #stopProbe(entry: Tracked): void {
    if (entry.probe) clearInterval(entry.probe)
    entry.probe = undefined
  }
}

/** The listeners conclave's observers add to an election's `error` event. */
const observerListeners = new WeakSet<(...args: unknown[]) => void>()
const warnedElections = new WeakSet<Election>()

/**
 * Calls `fn` on each of the election's `error` events. An observer's listener must not silence
 * the election's own fallback (a process warning when nobody listens), so it gives that warning
 * itself when it is the only kind of listener there.
 * @internal
 */
export function onElectionError(election: Election, fn: (error: Error) => void): () => void {
  const listener = (error: Error) => {
    fn(error)
    const others = election
      .listeners('error')
      .filter((l) => !observerListeners.has(l as (...args: unknown[]) => void))
    if (others.length === 0 && !warnedElections.has(election)) {
      warnedElections.add(election)
      process.emitWarning(
        `conclave: election on "${election.resource}" hit an error and has no 'error' listener: ${error.message}`,
        'ConclaveWarning',
      )
    }
  }
  observerListeners.add(listener as (...args: unknown[]) => void)
  election.on('error', listener)
  return () => election.off('error', listener)
}

/** A HealthCheck watching these elections. */
export function healthCheck(elections: Iterable<Election> = [], options: HealthOptions = {}) {
  const health = new HealthCheck(options)
  for (const election of elections) health.track(election)
  return health
}
