/**
 * Leader-only cron: `schedule(election, '0 3 * * *', fn, options)` runs `fn` on the holder of the
 * election's resource at each fire time of a cron expression, and each fire at most once across
 * the whole group. Where a fire stands (done up to which fire time, and the fire running now) is
 * a record on the backend, written by a fenced compare-and-set (Backend.writeRecord) with the
 * term's token before and after each run: a newer leader, after a failover or a deploy, reads
 * what ran, and a paused ex-leader can no longer claim a fire. Fire times are decided on the
 * backend's clock (Backend.now) where it has one. Cron parsing, time zones and DST: croner.
 */
import { EventEmitter } from 'node:events'
import { Cron } from 'croner'
import type { Backend, Json, StoredRecord } from './backend.js'
import { sleep } from './clock.js'
import { Election } from './election.js'
import { isFinal, LeadershipLostError, OptionsError, WorkError } from './errors.js'
import { backoff, type ElectionOptions } from './options.js'
import type { Term } from './term.js'
import { checkOptions, optionalMilliseconds, validateRecordKey } from './validate.js'

/** What `fn` gets for one fire. */
export interface FireContext {
  /** The fire's time (its idempotency key: one fire time runs once across the group). */
  fireTime: Date
  /** The fencing token of the term running it: pass it to fenced writes. */
  token: number
  /** Aborts when the term ends: stop the fire's side effects. */
  signal: AbortSignal
  /** 1, or more for a fire retried after its holder died mid-run (`retryInterrupted`). */
  attempt: number
  term: Term
}

/** What to do with fires that passed while nobody ran them (leaderless time, a deploy, a stall). */
export type MissedPolicy = 'skip' | 'once' | 'all'

/** The options of schedule() and singletonCron(). */
export interface ScheduleOptions {
  /** The IANA time zone the expression is read in (croner handles DST). Default: the host's. */
  timezone?: string
  /**
   * Fires that passed unrun, by more than `graceMs`: `skip` (default; a `skipped` event says
   * which), `once` (run the latest of them, once), `all` (run each, oldest first, at most
   * `maxCatchUp` of them; the older rest is skipped).
   */
  missed?: MissedPolicy
  /** With `missed: 'all'`: how many missed fires are run at most. Default 10. */
  maxCatchUp?: number
  /**
   * How late a fire may start and still count as on time (a failover, a slow run before it).
   * Default: the election's leaseMs.
   */
  graceMs?: number
  /**
   * A fire whose holder died (or lost its term) mid-run: run it again (up to this many more
   * attempts; `true` is 1), or (default `false`) only report it with an `interrupted` event.
   */
  retryInterrupted?: boolean | number
  /** The record's key on the backend (per resource). Default `cron`: one schedule per resource. */
  key?: string
  /** Stops the schedule (after the running fire), as `stop()` does. */
  signal?: AbortSignal
  /**
   * The wall clock fire times are decided on (ms since the epoch). Default: the backend's
   * `now()` when it has one (Redis TIME, PostgreSQL clock_timestamp()), else `Date.now`.
   */
  now?: () => number | Promise<number>
}

/** One record, as schedule() keeps it on the backend (JSON). */
interface CronRecord {
  /** Every fire up to this time (ms) was decided: run, skipped or reported. */
  cursor: number
  /** The fire being run, by which term. */
  running: { fire: number; token: number; attempt: number } | null
  /** The last fire that finished. */
  last: { fire: number; token: number; attempt: number; ok: boolean } | null
}

/** The events a Schedule emits, with their arguments. */
export interface ScheduleEvents {
  /** A fire starts on this process. */
  fire: [context: FireContext]
  /** A fire finished on this process (`ok` false: `fn` threw, reported as an error too). */
  done: [info: { fireTime: Date; token: number; attempt: number; ok: boolean }]
  /**
   * Fires that will never run (policy). `count` may exceed `fireTimes` (at most 100 listed);
   * `approximate` when a very long gap was counted by estimate.
   */
  skipped: [info: { fireTimes: Date[]; count: number; approximate: boolean; reason: 'missed' }]
  /** A fire was running when its holder's term ended; `retried` says whether it runs again. */
  interrupted: [info: { fireTime: Date; token: number; attempt: number; retried: boolean }]
  /** A throwing `fn` (WorkError) or a failed backend call (retried). */
  error: [error: Error]
}

const MISSED: readonly MissedPolicy[] = ['skip', 'once', 'all']
/** Fires counted one by one before a gap is counted by estimate. */
const COUNT_LIMIT = 10_000
/** The longest single wait: wake up to read the backend's clock again at least this often. */
const MAX_WAIT_MS = 300_000

/**
 * A leader-only cron job; see `schedule()`. `stopped` resolves once it stopped (closing the
 * election stops it too).
 */
export class Schedule extends EventEmitter<ScheduleEvents> {
  readonly election: Election
  readonly expression: string
  readonly key: string
  /** Resolves when the schedule has stopped. */
  readonly stopped: Promise<void>
  readonly #cron: Cron
  readonly #fn: (context: FireContext) => unknown
  readonly #missed: MissedPolicy
  readonly #maxCatchUp: number
  readonly #graceMs: number
  readonly #retries: number
  readonly #now: () => Promise<number>
  readonly #store: Required<Pick<Backend, 'readRecord' | 'writeRecord'>>
  readonly #stop = new AbortController()
  readonly #owned: boolean
  /** Fires this process started, `token:fire:attempt`: never run twice by one term. */
  readonly #started = new Set<string>()
  #warned = false

  /** @internal Use schedule() or singletonCron(). */
  constructor(
    election: Election,
    expression: string,
    fn: (context: FireContext) => unknown,
    options: ScheduleOptions,
    owned: boolean,
  ) {
    super()
    this.election = election
    this.#owned = owned
    const backend = election.backend
    if (typeof backend.readRecord !== 'function' || typeof backend.writeRecord !== 'function') {
      throw new OptionsError(
        'election',
        backend.name,
        'schedule() keeps its fires on the backend: the backend needs readRecord and writeRecord (memory, cluster, redis, postgres and etcd have them; local does not: its hub keeps no records across a hub change).',
      )
    }
    this.#store = {
      readRecord: backend.readRecord.bind(backend),
      writeRecord: backend.writeRecord.bind(backend),
    }
    if (typeof fn !== 'function')
      throw new OptionsError('fn', fn, 'schedule() takes a function to run at each fire.')
    // With several holders at once, one could take another's running fire for an interrupted one.
    if (election.options.tickets !== 1)
      throw new OptionsError(
        'tickets',
        election.options.tickets,
        'schedule() runs each fire on one holder: use an election with tickets: 1.',
      )
    this.#fn = fn
    checkOptions(
      options,
      ['timezone', 'missed', 'maxCatchUp', 'graceMs', 'retryInterrupted', 'key', 'signal', 'now'],
      'schedule',
    )
    if (options.timezone !== undefined && typeof options.timezone !== 'string')
      throw new OptionsError(
        'timezone',
        options.timezone,
        'A time zone is an IANA name, e.g. "Europe/Berlin".',
      )
    if (typeof expression !== 'string')
      throw new OptionsError(
        'expression',
        expression,
        'A cron expression is a string, e.g. "0 3 * * *".',
      )
    try {
      this.#cron = new Cron(expression, { timezone: options.timezone, paused: true })
      this.#cron.nextRun(new Date(0)) // an unknown time zone throws only here
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error)
      throw new OptionsError(
        /time zone/i.test(message) ? 'timezone' : 'expression',
        /time zone/i.test(message) ? options.timezone : expression,
        `croner refused it: ${message} A cron expression has 5 fields (minute first) or 6 (seconds first).`,
      )
    }
    this.expression = expression
    this.#missed = options.missed ?? 'skip'
    if (!MISSED.includes(this.#missed))
      throw new OptionsError('missed', options.missed, `missed is one of ${MISSED.join(', ')}.`)
    const maxCatchUp = options.maxCatchUp ?? 10
    if (!Number.isSafeInteger(maxCatchUp) || maxCatchUp < 1)
      throw new OptionsError('maxCatchUp', options.maxCatchUp, 'maxCatchUp is a positive integer.')
    this.#maxCatchUp = maxCatchUp
    this.#graceMs = optionalMilliseconds('graceMs', options.graceMs, election.options.leaseMs, 0)
    const retry = options.retryInterrupted ?? false
    if (typeof retry !== 'boolean' && !(Number.isSafeInteger(retry) && retry >= 0))
      throw new OptionsError(
        'retryInterrupted',
        retry,
        'retryInterrupted is true, false or how many more attempts an interrupted fire gets.',
      )
    this.#retries = retry === true ? 1 : retry === false ? 0 : retry
    this.key = validateRecordKey(options.key ?? 'cron')
    if (options.now !== undefined && typeof options.now !== 'function')
      throw new OptionsError('now', options.now, 'now is a function returning ms since the epoch.')
    const now = options.now ?? (backend.now ? backend.now.bind(backend) : Date.now)
    this.#now = async () => Number(await now())
    const signal = options.signal
    if (signal?.aborted) this.#stop.abort()
    else signal?.addEventListener('abort', () => this.#stop.abort(), { once: true })
    this.stopped = election
      .run((term) => this.#serve(term), { signal: this.#stop.signal })
      .catch((error: unknown) => this.#report(error))
      .then(async () => {
        if (this.#owned) await election.close()
      })
  }

  /** The next fire times after `from` (default now, on this host's clock), for display. */
  nextFires(count = 1, from: Date = new Date()): Date[] {
    return this.#cron.nextRuns(count, from)
  }

  /** Stops: the running fire finishes (bounded by drainMs), the term is resigned. */
  async stop(): Promise<void> {
    this.#stop.abort()
    await this.stopped
  }

  /** Closes the schedule and, when schedule() made it (singletonCron), its election. */
  async close(): Promise<void> {
    await this.stop()
  }

  /** One term: read the record, run or skip what is due, wait for the next fire; repeat. */
  async #serve(term: Term): Promise<void> {
    let failures = 0
    while (term.active && !this.#stop.signal.aborted) {
      try {
        const waitMs = await this.#step(term)
        failures = 0
        if (waitMs > 0) await sleep(this.election.options.clock, waitMs, term.signal)
      } catch (error) {
        if (term.signal.aborted || this.#stop.signal.aborted) return
        if (isFinal(error)) throw error
        this.#report(error)
        const { retryMs, renewMs, clock } = this.election.options
        await sleep(clock, backoff(failures++, retryMs, renewMs), term.signal).catch(() => {})
      }
    }
  }

  /** Does the next thing due; returns how long to wait before the next step (0: at once). */
  async #step(term: Term): Promise<number> {
    const token = term.token
    const stored = await this.#store.readRecord(this.election.resource, this.key)
    const now = await this.#now()
    if (!stored) {
      // The first leader ever: nothing before now was promised to anyone.
      await this.#write(term, undefined, { cursor: now, running: null, last: null })
      return 0
    }
    const record = parseRecord(stored.value)
    const running = record.running
    if (running) {
      const id = `${running.token}:${running.fire}:${running.attempt}`
      if (running.token === token && !this.#started.has(id)) {
        // Our own claim whose answer we missed (or did not act on yet): it never ran.
        return this.#run(term, stored, running.fire, running.attempt)
      }
      if (running.token === token) {
        // It ran here but its end was not recorded (the write failed): record it now.
        await this.#write(term, stored, {
          ...record,
          running: null,
          last: { ...running, ok: true },
        })
        return 0
      }
      // Another term claimed it and never recorded its end: its holder died or lost the term.
      const retried = running.attempt <= this.#retries
      if (retried) {
        const claimed = await this.#claim(term, stored, record, running.fire, running.attempt + 1)
        if (!claimed) return 0
        this.#safeEmit('interrupted', {
          fireTime: new Date(running.fire),
          token: running.token,
          attempt: running.attempt,
          retried,
        })
        return this.#run(term, claimed, running.fire, running.attempt + 1, record)
      }
      if (await this.#write(term, stored, { ...record, running: null }))
        this.#safeEmit('interrupted', {
          fireTime: new Date(running.fire),
          token: running.token,
          attempt: running.attempt,
          retried,
        })
      return 0
    }
    const due = this.#due(record.cursor, now)
    if (due.fires.length === 0) {
      const next = this.#cron.nextRun(new Date(Math.max(record.cursor, now)))
      if (!next) return MAX_WAIT_MS // an expression with no future fire: idle
      return Math.max(1, Math.min(next.getTime() - now, MAX_WAIT_MS))
    }
    const { pick, skipped } = this.#plan(due.fires, now)
    const skippedCount = skipped.length + due.uncounted
    if (pick === undefined) {
      if (await this.#write(term, stored, { ...record, cursor: due.fires.at(-1)! }))
        this.#emitSkipped(skipped, skippedCount, due.uncounted > 0)
      return 0
    }
    const claimed = await this.#claim(term, stored, record, pick, 1)
    if (!claimed) return 0
    if (skippedCount > 0) this.#emitSkipped(skipped, skippedCount, due.uncounted > 0)
    return this.#run(term, claimed, pick, 1, record)
  }

  /** Claims `fire` (attempt `attempt`) for this term: the record written, or undefined. */
  async #claim(
    term: Term,
    stored: StoredRecord,
    record: CronRecord,
    fire: number,
    attempt: number,
  ): Promise<StoredRecord | undefined> {
    // A term that ended (a stalled process wakes up) never claims anything.
    if (!term.active) return undefined
    return this.#write(term, stored, {
      cursor: Math.max(record.cursor, fire),
      running: { fire, token: term.token, attempt },
      last: record.last,
    })
  }

  /** Runs `fn` for a fire this term claimed (record `stored`), then records its end. */
  async #run(
    term: Term,
    stored: StoredRecord,
    fire: number,
    attempt: number,
    before?: CronRecord,
  ): Promise<number> {
    const record = parseRecord(stored.value)
    if (!term.active) {
      // The term ended (a SIGTERM, a lost grant) while the claim was on its way: `fn` never
      // started, so hand the fire back (if nobody wrote since) for the next holder to run.
      if (before)
        await this.#write(term, stored, before, true).catch((error: unknown) => this.#report(error))
      return 0
    }
    const token = term.token
    this.#started.add(`${token}:${fire}:${attempt}`)
    const context: FireContext = {
      fireTime: new Date(fire),
      token,
      signal: term.signal,
      attempt,
      term,
    }
    this.#safeEmit('fire', context)
    let ok = true
    try {
      await this.#fn(context)
    } catch (error) {
      ok = false
      if (!(term.signal.aborted && isAbortLike(error, term.signal)))
        this.#report(new WorkError(this.election.resource, token, error))
    }
    // Recorded even after the term ended: a newer term has not written (or this is refused).
    const finished: CronRecord = {
      ...record,
      running: null,
      last: { fire, token, attempt, ok },
    }
    // Unknown or refused: the next step reads the record and finishes the bookkeeping.
    await this.#write(term, stored, finished, true).catch((error: unknown) => this.#report(error))
    this.#safeEmit('done', { fireTime: new Date(fire), token, attempt, ok })
    return 0
  }

  /** The fenced compare-and-set: the record as written, or undefined when refused. */
  async #write(
    term: Term,
    stored: StoredRecord | undefined,
    record: CronRecord,
    afterEnd = false,
  ): Promise<StoredRecord | undefined> {
    if (!afterEnd && !term.active) return undefined
    const value = record as unknown as Json
    const result = await this.#store.writeRecord({
      resource: this.election.resource,
      key: this.key,
      value,
      token: term.token,
      version: stored?.version ?? 0,
    })
    return result.written ? { value, token: term.token, version: result.version } : undefined
  }

  /** The fires in (cursor, now], oldest first; a very long gap's oldest part only counted. */
  #due(cursor: number, now: number): { fires: number[]; uncounted: number } {
    const fires: number[] = []
    let uncounted = 0
    let from = cursor
    for (;;) {
      const next = this.#cron.nextRun(new Date(from))
      if (!next || next.getTime() > now) break
      fires.push((from = next.getTime()))
      if (fires.length >= COUNT_LIMIT) {
        // Counting further one by one could take seconds: estimate the rest from the pace so
        // far, and keep only the newest part of the gap, which the policies look at.
        const pace = (from - cursor) / fires.length
        const jumpTo = now - pace * this.#maxCatchUp * 2 - this.#graceMs
        if (jumpTo > from) {
          uncounted += fires.length + Math.max(0, Math.round((jumpTo - from) / pace))
          fires.length = 0
          from = jumpTo
        }
      }
    }
    return { fires, uncounted }
  }

  /** Which due fire runs now (if any) and which are skipped for good. */
  #plan(fires: number[], now: number): { pick: number | undefined; skipped: number[] } {
    const latest = fires.at(-1)!
    if (this.#missed === 'all') {
      const excess = Math.max(0, fires.length - this.#maxCatchUp)
      return { pick: fires[excess], skipped: fires.slice(0, excess) }
    }
    if (this.#missed === 'once' || now - latest <= this.#graceMs)
      return { pick: latest, skipped: fires.slice(0, -1) }
    return { pick: undefined, skipped: fires }
  }

  #emitSkipped(fires: number[], count: number, approximate: boolean): void {
    this.#safeEmit('skipped', {
      fireTimes: fires.slice(-100).map((f) => new Date(f)),
      count,
      approximate,
      reason: 'missed',
    })
  }

  #safeEmit<K extends keyof ScheduleEvents>(event: K, ...args: ScheduleEvents[K]): void {
    try {
      ;(this.emit as (e: K, ...a: ScheduleEvents[K]) => boolean)(event, ...args)
    } catch (error) {
      if (event !== 'error') this.#report(error)
    }
  }

  #report(error: unknown): void {
    const err = error instanceof Error ? error : new Error(String(error))
    if (this.listenerCount('error') > 0) this.#safeEmit('error', err)
    else if (this.election.listenerCount('error') > 0) this.election.emit('error', err)
    else if (!this.#warned) {
      this.#warned = true
      process.emitWarning(
        `conclave: schedule on "${this.election.resource}" hit an error and has no 'error' listener: ${err.message}`,
        'ConclaveWarning',
      )
    }
  }
}

function parseRecord(value: Json): CronRecord {
  const v = (value ?? {}) as Partial<CronRecord>
  return {
    cursor: typeof v.cursor === 'number' ? v.cursor : 0,
    running: v.running ?? null,
    last: v.last ?? null,
  }
}

function isAbortLike(error: unknown, signal: AbortSignal): boolean {
  return (
    error === signal.reason ||
    error instanceof LeadershipLostError ||
    (error instanceof Error && error.name === 'AbortError')
  )
}

/**
 * Runs `fn` at each fire time of the cron `expression` on the holder of `election`'s resource,
 * each fire at most once across the group (see docs/cron.md). Runs `election.run()` until
 * `stop()`, the `signal`, or the election's close.
 *
 * ```ts
 * const nightly = schedule(election, '0 3 * * *', async ({ fireTime, token, signal }) => {
 *   await report.build({ day: fireTime, token, signal })
 * }, { timezone: 'Europe/Berlin', missed: 'once' })
 * nightly.on('skipped', ({ count }) => log.warn({ count }, 'fires skipped'))
 * ```
 */
export function schedule(
  election: Election,
  expression: string,
  fn: (context: FireContext) => unknown,
  options: ScheduleOptions = {},
): Schedule {
  if (!(election instanceof Election))
    throw new OptionsError('election', election, 'schedule() takes an Election first.')
  if (typeof options !== 'object' || options === null)
    throw new OptionsError('options', options, 'Schedule options must be an object.')
  return new Schedule(election, expression, fn, options, false)
}

/**
 * A cron job as a singleton: its own election on the resource `cron/<name>`, closed with it.
 * `close()` (or `stop()`) ends the term and closes the election.
 */
export function singletonCron(
  backend: Backend,
  name: string,
  expression: string,
  fn: (context: FireContext) => unknown,
  options: ScheduleOptions & { election?: ElectionOptions } = {},
): Schedule {
  if (typeof name !== 'string' || name.length === 0)
    throw new OptionsError('name', name, 'A cron job name is a non-empty resource name segment.')
  const { election: electionOptions, ...rest } = options
  const election = new Election(backend, `cron/${name}`, electionOptions)
  try {
    return new Schedule(election, expression, fn, rest, true)
  } catch (error) {
    void election.close()
    throw error
  }
}
