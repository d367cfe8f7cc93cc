/**
 * Every benchmark scenario, defined once: one measuring procedure and one set of units, so the
 * rows of all subjects (conclave on each backend, each peer) line up. A scenario declares what
 * it needs from a subject; a subject offers what it can, and says why it cannot do the rest
 * (the table then shows "n/a" with that reason). Suites are lists of subjects × scenarios.
 *
 * Election scenarios (Subject): uncontended acquire, graceful handoff, crash failover (SIGKILL of
 * a holder process, in ms and in leases), takeover after server-side expiry, partitioned holder
 * (its network path black-holed), idle waiter cost, renewal of many held resources.
 * Agent scenarios (AgentSubject): call latency, call throughput, cluster metrics scrape (from the
 * primary, from a worker), metrics merge.
 */
import { startProxy } from '../testkit/proxy.js'
import {
  type HolderProcess,
  now,
  ownCpuMs,
  pool,
  sleep,
  uniqueKey,
  type WaiterProcess,
  within,
} from './probes.js'
import {
  type BenchRow,
  type Measurement,
  median,
  notAvailable,
  single,
  summarize,
} from './stats.js'

// ---- what scenarios need ----------------------------------------------------------------------

/** Gives a held resource back. */
export type Release = () => Promise<void>

/** One candidate with connections of its own, as a separate process would have. */
export interface Candidate {
  /** Takes `resource`, waiting while others hold it; resolves once held, with its release. */
  acquire(resource: string, leaseMs: number, signal?: AbortSignal): Promise<Release>
  /** How many of its holds ended without a release (lost to expiry, errors) so far. */
  lost?(): number
  /** Closes its connections. */
  close(): Promise<void>
}

/** Anything a scenario runs on: a name, and why it cannot run some scenarios. */
export interface Named {
  /** The row label, e.g. "conclave/redis". Rows of subjects starting "conclave" are the baseline. */
  readonly name: string
  /** Why a scenario (by id) or a metric (by `<scenario id>.<metric key>`) is n/a for it. */
  readonly cannot?: Readonly<Record<string, string>>
  /** Words added to a metric's note for this subject (by `<scenario id>.<metric>`). */
  readonly notes?: Readonly<Record<string, string>>
  /** Releases whatever the subject opened for the scenarios. */
  close?(): Promise<void>
}

/** An election subject: conclave on one backend, or a peer library. */
export interface Subject extends Named {
  /** A new candidate (its own connections). */
  candidate?(): Promise<Candidate>
  /**
   * Starts a holder in a separate process (bench/holder.ts) that takes `resource` and waits to
   * be killed; `via` connects it through a fault proxy instead of straight to the server.
   */
  spawnHolder?(resource: string, leaseMs: number, via?: { port: number }): Promise<HolderProcess>
  /**
   * When (see probes.now) the server let the killed holder's grant of `resource` go: called
   * before the kill, `killed` resolves right after it.
   */
  expiry?(resource: string, killed: Promise<void>): Promise<number>
  /** The server's port, for the partition scenario's proxy. */
  readonly serverPort?: number
  /** Requests the server has received from this subject's candidates and holders so far. */
  requests?(): Promise<number>
  /** The server's CPU time so far (ms). */
  serverCpuMs?(): Promise<number>
  /** Where the candidates run, when not in the scenario's process: their CPU time so far (ms). */
  clientCpuMs?(): Promise<number>
  /** How long each renewal round (one call renewing every grant) took since the last call (ms). */
  renewRounds?(): number[]
  /**
   * Starts a process of `count` candidates campaigning for `resource` on one backend of their own
   * (bench/waiters.ts), for the many-waiters scenario.
   */
  spawnWaiters?(
    resource: string,
    count: number,
    leaseMs: number,
    startInFlight: number,
  ): WaiterProcess
  /**
   * Requests the server itself has counted so far, from every process (not only this one's
   * candidates), less the bench's own probes: Redis INFO commandstats, etcd's gRPC messages
   * received, PostgreSQL's statements of the subjects' role.
   */
  serverRequests?(): Promise<number>
  /** Writes the server has committed so far, where it counts them apart (etcd: raft proposals). */
  serverWrites?(): Promise<number>
  /**
   * Starts a hub process for a fresh app that later candidates and holders join (conclave/local),
   * and returns it, to be SIGKILLed.
   */
  startHub?(): Promise<{ kill(): Promise<void> }>
}

/** Options every scenario run gets. */
export interface ScenarioOptions {
  /** Short runs for smoke checks. */
  quick: boolean
  log: (line: string) => void
  /** Overrides of the many-waiters scenario's sizes (`npm run bench -- --waiters 100 ...`). */
  many?: Partial<ManyWaitersOptions>
}

/** A scenario: what it needs from a subject and its one procedure. */
export interface Scenario<S extends Named = Subject> {
  readonly id: string
  /** The scenario column of the table. */
  readonly title: string
  readonly needs: readonly string[]
  run(subject: S, options: ScenarioOptions): Promise<Measurement[]>
}

type Needing<S, K extends keyof S> = S & Required<Pick<S, K>>

function scenario<S extends Named, K extends keyof S & string>(definition: {
  id: string
  title: string
  needs: K[]
  run(subject: Needing<S, K>, options: ScenarioOptions): Promise<Measurement[]>
}): Scenario<S> {
  // Method parameters are bivariant: the narrower subject type is accepted as it is.
  return definition
}

/** Runs `scenarios` on `subject`, one after another: n/a and failed scenarios become rows too. */
export async function runScenarios<S extends Named>(
  subject: S,
  scenarios: readonly Scenario<S>[],
  options: ScenarioOptions,
): Promise<BenchRow[]> {
  const rows: BenchRow[] = []
  const place = (scenarioTitle: string, m: Measurement): BenchRow => ({
    scenario: scenarioTitle,
    subject: subject.name,
    ...m,
  })
  for (const s of scenarios) {
    const missing = s.needs.filter((k) => (subject as Record<string, unknown>)[k] === undefined)
    const reason =
      subject.cannot?.[s.id] ?? (missing.length ? `offers no ${missing.join(', ')}` : undefined)
    if (reason) {
      rows.push(place(s.title, notAvailable('', '', reason)))
      continue
    }
    const t0 = performance.now()
    try {
      const measured = await s.run(subject, options)
      for (const m of measured) {
        const na = subject.cannot?.[`${s.id}.${m.metric}`] ?? m.na
        const extra = subject.notes?.[`${s.id}.${m.metric}`]
        const note = [m.note, extra].filter(Boolean).join('; ')
        rows.push(
          place(
            s.title,
            na ? notAvailable(m.metric, m.unit, na) : { ...m, ...(note ? { note } : {}) },
          ),
        )
      }
      const seconds = ((performance.now() - t0) / 1000).toFixed(1)
      options.log(`${s.title} / ${subject.name}: ${seconds} s`)
    } catch (error) {
      options.log(`${s.title} / ${subject.name} failed: ${(error as Error).stack}`)
      rows.push(place(s.title, notAvailable('', '', `failed: ${(error as Error).message}`)))
    }
  }
  return rows
}

// ---- election scenarios -----------------------------------------------------------------------

/** The lease of every crash, takeover and partition run (etcd checks expiry every 0.5 s). */
export const CRASH_LEASE_MS = 2_000
/** The lease of held grants in the idle-waiter and renewal scenarios. */
export const HOLD_LEASE_MS = 3_000
/** The lease of the uncontended and handoff scenarios: long, nothing expires there. */
const LONG_LEASE_MS = 10_000

/** Acquires and releases a free resource; both are timed. */
export const uncontended = scenario<Subject, 'candidate'>({
  id: 'uncontended',
  title: 'uncontended acquire',
  needs: ['candidate'],
  async run(subject, { quick }) {
    const n = quick ? 100 : 1_000
    const warmup = 10
    const c = await subject.candidate()
    const acquire: number[] = []
    const release: number[] = []
    try {
      const resource = uniqueKey('uncontended')
      for (let i = 0; i < n + warmup; i++) {
        const t0 = performance.now()
        const give = await c.acquire(resource, LONG_LEASE_MS)
        const t1 = performance.now()
        await give()
        const t2 = performance.now()
        if (i < warmup) continue
        acquire.push(t1 - t0)
        release.push(t2 - t1)
      }
    } finally {
      await c.close()
    }
    return [summarize('acquire', acquire), summarize('release', release)]
  },
})

/** A holder releases while another candidate waits: from release() to the waiter holding. */
export const handoff = scenario<Subject, 'candidate'>({
  id: 'handoff',
  title: 'graceful handoff',
  needs: ['candidate'],
  async run(subject, { quick }) {
    const n = quick ? 10 : 100
    const [a, b] = [await subject.candidate(), await subject.candidate()]
    const samples: number[] = []
    try {
      const resource = uniqueKey('handoff')
      for (let i = 0; i < n + 1; i++) {
        const release = await a.acquire(resource, LONG_LEASE_MS)
        let heldAt = 0
        const waiting = b.acquire(resource, LONG_LEASE_MS).then((r) => ((heldAt = now()), r))
        waiting.catch(() => {}) // awaited below; not unhandled if it fails meanwhile
        // Waiting by now; a random pause so pollers are caught at any point of their cycle.
        await sleep(30 + Math.random() * 20)
        const releasedAt = now()
        await release()
        const next = await within(waiting, 30_000, 'waiter')
        if (i > 0) samples.push(heldAt - releasedAt) // the first round warms both up
        await next()
      }
    } finally {
      await Promise.all([a.close(), b.close()])
    }
    return [summarize('release → waiter holds', samples)]
  },
})

interface KillRun {
  killedAt: number
  heldAt: number
  expiredAt?: number
}

/** A holder process is SIGKILLed at a random point of its renewal cycle while a candidate waits. */
async function killRuns(
  subject: Needing<Subject, 'candidate' | 'spawnHolder'>,
  n: number,
  probeExpiry: boolean,
): Promise<KillRun[]> {
  const leaseMs = CRASH_LEASE_MS
  const waiter = await subject.candidate()
  const runs: KillRun[] = []
  try {
    for (let i = 0; i < n; i++) {
      const resource = uniqueKey('crash')
      const holder = await subject.spawnHolder(resource, leaseMs)
      try {
        let heldAt = 0
        const waiting = waiter.acquire(resource, leaseMs).then((r) => ((heldAt = now()), r))
        waiting.catch(() => {}) // awaited below; not unhandled if it fails meanwhile
        await sleep(200 + Math.random() * leaseMs)
        let killed!: () => void
        const expiry = probeExpiry
          ? subject.expiry!(resource, new Promise<void>((resolve) => (killed = resolve)))
          : undefined
        const killedAt = now()
        await holder.kill()
        killed?.()
        const release = await within(waiting, 20 * leaseMs, 'waiter after the kill')
        runs.push({ killedAt, heldAt, ...(expiry ? { expiredAt: await expiry } : {}) })
        await release()
      } finally {
        await holder.kill()
      }
    }
  } finally {
    await waiter.close()
  }
  return runs
}

/** A holder process is SIGKILLed: from the kill to the waiter holding, in ms and in leases. */
export const crash = scenario<Subject, 'candidate' | 'spawnHolder'>({
  id: 'crash',
  title: 'crash failover',
  needs: ['candidate', 'spawnHolder'],
  async run(subject, { quick }) {
    const runs = await killRuns(subject, quick ? 3 : 8, false)
    const ms = runs.map((r) => r.heldAt - r.killedAt)
    const note = `lease ${CRASH_LEASE_MS} ms, SIGKILL at a random point of the renewal cycle`
    return [
      summarize('SIGKILL → waiter holds', ms, 'ms', note),
      summarize(
        'SIGKILL → waiter holds',
        ms.map((x) => x / CRASH_LEASE_MS),
        'leases',
      ),
    ]
  },
})

/**
 * The hub's process and the holder's are SIGKILLed together while a candidate waits (the worst
 * case of a hub crash: the new hub knows none of the old grants; it waits until every client
 * re-registered what it holds or is surely dead, at most one lease): from the kill to the
 * waiter holding, in ms and in leases.
 */
export const hubCrash = scenario<Subject, 'candidate' | 'spawnHolder' | 'startHub'>({
  id: 'hub-crash',
  title: 'hub crash failover',
  needs: ['candidate', 'spawnHolder', 'startHub'],
  async run(subject, { quick }) {
    const leaseMs = CRASH_LEASE_MS
    const ms: number[] = []
    for (let i = 0; i < (quick ? 3 : 8); i++) {
      const hub = await subject.startHub()
      const resource = uniqueKey('hub-crash')
      const holder = await subject.spawnHolder(resource, leaseMs)
      const waiter = await subject.candidate()
      try {
        let heldAt = 0
        const waiting = waiter.acquire(resource, leaseMs).then((r) => ((heldAt = now()), r))
        waiting.catch(() => {})
        await sleep(200 + Math.random() * leaseMs)
        const killedAt = now()
        await Promise.all([hub.kill(), holder.kill()])
        const release = await within(waiting, 20 * leaseMs, 'waiter after the hub crash')
        ms.push(heldAt - killedAt)
        await release()
      } finally {
        await holder.kill()
        await waiter.close()
      }
    }
    const note = `lease ${leaseMs} ms; the new hub grants nothing new until every client re-registered (or died), at most one lease`
    return [
      summarize('SIGKILL hub + holder → waiter holds', ms, 'ms', note),
      summarize(
        'SIGKILL hub + holder → waiter holds',
        ms.map((x) => x / leaseMs),
        'leases',
      ),
    ]
  },
})

/**
 * The crash run again, timed from when the server lets the dead grant go: how long a waiter
 * takes to notice an expiry (a poll, a push, a scheduled wake-up).
 */
export const takeover = scenario<Subject, 'candidate' | 'spawnHolder' | 'expiry'>({
  id: 'takeover',
  title: 'takeover after server-side expiry',
  needs: ['candidate', 'spawnHolder', 'expiry'],
  async run(subject, { quick }) {
    const runs = await killRuns(subject, quick ? 3 : 8, true)
    return [
      summarize(
        'expiry → waiter holds',
        runs.map((r) => r.heldAt - r.expiredAt!),
        'ms',
        `lease ${CRASH_LEASE_MS} ms`,
      ),
    ]
  },
})

/**
 * A holder's network path is black-holed (a partition, a hung host: no socket closes): from the
 * cut to the waiter holding, and how long before that the old holder knew it had lost.
 */
export const partition = scenario<Subject, 'candidate' | 'spawnHolder' | 'serverPort'>({
  id: 'partition',
  title: 'partitioned holder',
  needs: ['candidate', 'spawnHolder', 'serverPort'],
  async run(subject, { quick }) {
    const leaseMs = CRASH_LEASE_MS
    const n = quick ? 1 : 3
    const capMs = 5 * leaseMs
    const proxy = await startProxy({ targetPort: subject.serverPort })
    const waiter = await subject.candidate()
    const took: number[] = []
    const leads: number[] = []
    let capped = 0
    try {
      for (let i = 0; i < n; i++) {
        const resource = uniqueKey('partition')
        const holder = await subject.spawnHolder(resource, leaseMs, { port: proxy.port })
        const controller = new AbortController()
        let heldAt = 0
        const waiting = waiter
          .acquire(resource, leaseMs, controller.signal)
          .then((r) => ((heldAt = now()), r))
        waiting.catch(() => {}) // awaited below; not unhandled if it fails meanwhile
        let release: Release | undefined
        try {
          await sleep(200 + Math.random() * leaseMs)
          const cutAt = now()
          proxy.cut({ mode: 'blackhole' })
          release = await Promise.race([waiting, sleep(capMs).then(() => undefined)])
          if (!release) {
            capped++
            continue
          }
          took.push(heldAt - cutAt)
          // A holder may learn of its loss after the waiter holds (two leaders meanwhile).
          for (let t = 0; holder.lostAt() === undefined && t < leaseMs; t += 50) await sleep(50)
          const lostAt = holder.lostAt()
          if (lostAt !== undefined) leads.push(heldAt - lostAt)
          await release()
        } finally {
          await holder.kill()
          // Drop the black-holed connections (a session lock is then freed), then forward again.
          proxy.cut({ mode: 'reset' })
          proxy.restore()
          if (!release) {
            controller.abort()
            await within(waiting, 30_000, 'waiter after the cap').then(
              (r) => r(),
              () => {},
            )
          }
        }
      }
    } finally {
      await waiter.close()
      await proxy.close()
    }
    const note = `lease ${leaseMs} ms${capped ? `; ${capped} of ${n} still held at the ${capMs / 1000} s cap` : ''}`
    if (!took.length) {
      return [
        single('cut → waiter holds', capMs, 'ms', n, `> cap: ${note}`),
        single('cut → waiter holds', capMs / leaseMs, 'leases', n, '> cap'),
        notAvailable('old holder stepped down first by', 'ms', 'no waiter held within the cap'),
      ]
    }
    return [
      summarize('cut → waiter holds', took, 'ms', note),
      summarize(
        'cut → waiter holds',
        took.map((x) => x / leaseMs),
        'leases',
      ),
      leads.length
        ? summarize(
            'old holder stepped down first by',
            leads,
            'ms',
            `positive: it knew before the waiter held, negative: two holders for that long${leads.length < took.length ? `; ${took.length - leads.length} not told` : ''}`,
          )
        : notAvailable(
            'old holder stepped down first by',
            'ms',
            'the holder was not told it lost, even a lease after the waiter held',
          ),
    ]
  },
})

/** Requests received during `windowMs` from what `subject` has running. */
async function requestsDuring(subject: Needing<Subject, 'requests'>, windowMs: number) {
  const r0 = await subject.requests()
  await sleep(windowMs)
  return (await subject.requests()) - r0
}

/**
 * What one waiting candidate costs the server: requests per second with 10 waiters on a held
 * resource, less the holder's own, per waiter.
 */
export const idleWaiter = scenario<Subject, 'candidate' | 'requests'>({
  id: 'idle-waiter',
  title: 'idle waiter',
  needs: ['candidate', 'requests'],
  async run(subject, { quick }) {
    const waiters = 10
    const windowMs = quick ? 3_000 : 15_000
    const resource = uniqueKey('idle')
    const holder = await subject.candidate()
    const candidates = await Promise.all(Array.from({ length: waiters }, () => subject.candidate()))
    const controller = new AbortController()
    let waiting: Promise<void>[] = []
    try {
      const release = await holder.acquire(resource, HOLD_LEASE_MS)
      await sleep(1_000)
      const alone = await requestsDuring(subject, windowMs)
      waiting = candidates.map((c) =>
        c.acquire(resource, HOLD_LEASE_MS, controller.signal).then(
          (r) => r(),
          () => {},
        ),
      )
      await sleep(1_000) // past the waiters' first asks
      const loaded = await requestsDuring(subject, windowMs)
      controller.abort()
      await release()
      const perSecond = ((loaded - alone) / waiters / windowMs) * 1_000
      return [
        single(
          'requests per waiter',
          Math.max(0, perSecond),
          'req/s',
          waiters,
          `${waiters} waiters, holder lease ${HOLD_LEASE_MS} ms, ${windowMs / 1000} s windows`,
        ),
      ]
    } finally {
      controller.abort()
      await within(Promise.all(waiting), 30_000, 'waiters').catch(() => {})
      await Promise.all([holder, ...candidates].map((c) => c.close()))
    }
  },
})

/**
 * One candidate holds many resources: what keeping them renewed costs (requests and CPU per
 * second on both sides), and how long one renewal round of all of them takes where there is one.
 */
export const renewMany = scenario<Subject, 'candidate' | 'requests'>({
  id: 'renew-many',
  title: 'renewal of many held resources',
  needs: ['candidate', 'requests'],
  async run(subject, { quick, log }) {
    const n = quick ? 2_000 : 10_000
    const windowMs = quick ? 3_000 : 6_000
    const c = await subject.candidate()
    const releases: Release[] = []
    let retried = 0
    try {
      const prefix = uniqueKey('renew')
      const t0 = performance.now()
      await pool(n, 20, async (i) => {
        for (let attempt = 1; ; attempt++) {
          try {
            return releases.push(await c.acquire(`${prefix}/${i}`, HOLD_LEASE_MS))
          } catch (error) {
            // A hold whose first lease runs out while thousands start may fail: ask again.
            if (attempt === 3) throw error
            retried++
          }
        }
      })
      const setupS = (performance.now() - t0) / 1000
      log(`${subject.name}: ${n} held in ${setupS.toFixed(1)} s (${retried} retried)`)
      await sleep(HOLD_LEASE_MS) // past the acquires' own traffic, renewals in step
      const lost0 = c.lost?.() ?? 0
      subject.renewRounds?.()
      const clientCpu = () => (subject.clientCpuMs ? subject.clientCpuMs() : ownCpuMs())
      const [r0, client0, server0] = [
        await subject.requests(),
        await clientCpu(),
        await subject.serverCpuMs?.(),
      ]
      await sleep(windowMs)
      const [r1, client1, server1] = [
        await subject.requests(),
        await clientCpu(),
        await subject.serverCpuMs?.(),
      ]
      const rounds = subject.renewRounds?.()
      const perSecond = (x: number) => (x / windowMs) * 1_000
      const lost = (c.lost?.() ?? 0) - lost0
      const note = `${n} held, lease ${HOLD_LEASE_MS} ms, ${windowMs / 1000} s window, ${lost} lost`
      return [
        single('requests/s', perSecond(r1 - r0), 'req/s', n, note),
        single('client CPU', perSecond(client1 - client0), 'ms CPU/s', n),
        server0 === undefined || server1 === undefined
          ? notAvailable('server CPU', 'ms CPU/s', 'no server process')
          : single('server CPU', perSecond(server1 - server0), 'ms CPU/s', n),
        rounds?.length
          ? summarize('renewal round', rounds, 'ms', `${rounds.length} rounds of ${n} grants`)
          : notAvailable(
              'renewal round',
              'ms',
              rounds ? 'no round in the window' : 'each hold renews on its own timer',
            ),
      ]
    } finally {
      await pool(releases.length, 100, (i) => releases[i]!().catch(() => {}))
      await c.close()
    }
  },
})

/** The sizes of the many-waiters scenario. */
export interface ManyWaitersOptions {
  /** Waiting candidates, besides the first holder (which is in the bench's own process). */
  waiters: number
  /** Processes the waiters are spread over (each has one backend). */
  processes: number
  leaseMs: number
  /** Releases measured, one after another (each leaves one waiter fewer). */
  rounds: number
  /** Leases of the idle window (nobody releases). */
  idleLeases: number
  /**
   * Campaigns each process starts at once, the next as one is answered: hundreds of first asks
   * at once on a loaded host time out, and this measures waiting, not a start-up storm.
   */
  startInFlight: number
}

/** The many-waiters sizes of a run: issue 18's (500 in 5 processes, lease 10 s), or short ones. */
export function manyWaitersOptions(options: ScenarioOptions): ManyWaitersOptions {
  const base: ManyWaitersOptions = options.quick
    ? { waiters: 50, processes: 2, leaseMs: 3_000, rounds: 3, idleLeases: 2, startInFlight: 5 }
    : { waiters: 500, processes: 5, leaseMs: 10_000, rounds: 10, idleLeases: 2, startInFlight: 5 }
  return { ...base, ...options.many }
}

/** How long to wait for the first of `processes` to report an election after a release. */
function nextElected(processes: WaiterProcess[], ms: number): Promise<number> {
  return within(
    new Promise<number>((resolve) => {
      for (const p of processes) p.onElected(resolve)
    }),
    ms,
    'the next waiter after a release',
  )
}

/**
 * Many candidates in several processes wait for one resource (issue 18's herd): what a release
 * costs (the time to the next holder, the server's requests in the second after it), and what
 * waiting costs when nobody releases (server requests per waiter per lease, the waiting
 * processes' CPU). The first holder is in this process; the waiters are in child processes
 * (bench/waiters.ts), each with one backend for all its candidates, as an app would have. Times
 * across processes are `now()` (performance.timeOrigin + performance.now(), comparable between
 * the processes of one host to well under a millisecond); requests are counted by the server.
 */
export const manyWaiters = scenario<Subject, 'candidate' | 'spawnWaiters'>({
  id: 'many-waiters',
  title: 'many waiters',
  needs: ['candidate', 'spawnWaiters'],
  async run(subject, options) {
    const { waiters, processes, leaseMs, rounds, idleLeases, startInFlight } =
      manyWaitersOptions(options)
    const { log } = options
    const resource = uniqueKey('many')
    const counters = async () => ({
      requests: await subject.serverRequests?.(),
      writes: await subject.serverWrites?.(),
    })
    const holder = await subject.candidate()
    const children: WaiterProcess[] = []
    let release: Release | undefined
    try {
      release = await holder.acquire(resource, leaseMs)
      // The holder's own upkeep, to take out of the waiters' idle cost.
      const alone0 = await counters()
      await sleep(leaseMs)
      const alone1 = await counters()
      const t0 = performance.now()
      for (let i = 0; i < processes; i++) {
        const count = Math.floor(waiters / processes) + (i < waiters % processes ? 1 : 0)
        if (count) children.push(subject.spawnWaiters(resource, count, leaseMs, startInFlight))
      }
      const readyMs = 60_000 + waiters * 300
      await within(Promise.all(children.map((c) => c.ready)), readyMs, 'waiters answered').catch(
        (error: Error) => {
          const counts = children.map((c) => c.progress())
          const answered = counts.reduce((sum, c) => sum + c.answered, 0)
          const errors = counts.reduce((sum, c) => sum + c.errors, 0)
          throw new Error(
            `${answered} of ${waiters} waiters answered after ${readyMs / 1000} s (${errors} errors): ${error.message}`,
          )
        },
      )
      log(
        `${subject.name}: ${waiters} waiters in ${children.length} processes answered in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
      )
      await sleep(Math.min(2_000, leaseMs / 2)) // past their first asks' follow-ups

      // Idle: nobody releases for `idleLeases` leases.
      const idleMs = idleLeases * leaseMs
      const cpu0 = await Promise.all(children.map((c) => c.cpuMs()))
      const idle0 = await counters()
      const w0 = performance.now()
      await sleep(idleMs)
      const idle1 = await counters()
      const cpu1 = await Promise.all(children.map((c) => c.cpuMs()))
      const idleWindow = performance.now() - w0
      const cpuMs = cpu1.reduce((sum, ms, i) => sum + ms - cpu0[i]!, 0)
      const perWaiterPerLease = (x0?: number, x1?: number, a0?: number, a1?: number) =>
        x0 === undefined || x1 === undefined
          ? undefined
          : Math.max(0, (x1 - x0 - ((a1! - a0!) * idleWindow) / leaseMs) / waiters / idleLeases)
      const idleRequests = perWaiterPerLease(
        idle0.requests,
        idle1.requests,
        alone0.requests,
        alone1.requests,
      )
      const idleWrites = perWaiterPerLease(idle0.writes, idle1.writes, alone0.writes, alone1.writes)

      // Releases: the holder resigns; the first election anywhere after it is the handoff.
      const handoffs: number[] = []
      const afterRequests: number[] = []
      const afterWrites: number[] = []
      for (let round = 0; round < rounds; round++) {
        const next = nextElected(children, 30_000 + 3 * leaseMs)
        next.catch(() => {})
        const c0 = await counters()
        const sentAt = performance.now()
        let releasedAt: number
        if (round === 0) {
          releasedAt = now()
          await release!()
          release = undefined
        } else {
          const owner = children.find((c) => c.holding() > 0)
          if (!owner) throw new Error('no waiter process holds after the last handoff')
          releasedAt = await owner.resign()
        }
        const electedAt = await next
        handoffs.push(electedAt - releasedAt)
        await sleep(Math.max(0, sentAt + 1_000 - performance.now()))
        const c1 = await counters()
        if (c0.requests !== undefined) afterRequests.push(c1.requests! - c0.requests)
        if (c0.writes !== undefined) afterWrites.push(c1.writes! - c0.writes)
        await sleep(200 + Math.random() * 300) // the new holder settles; a fresh point of the cycles
      }
      const range = (xs: number[]) => `${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)}`
      const sizes = `${waiters} waiters in ${children.length} processes (one backend each, first asks ${startInFlight} at a time each), lease ${leaseMs / 1000} s`
      const noCounter = 'the server counts no requests the bench can read'
      return [
        summarize(
          'release → next waiter holds',
          handoffs,
          'ms',
          `${sizes}; ${rounds} releases (one waiter fewer each), range ${range(handoffs)} ms`,
        ),
        afterRequests.length
          ? summarize(
              'server requests in the second after a release',
              afterRequests,
              'requests',
              `range ${range(afterRequests)}, ${(median(afterRequests) / waiters).toFixed(2)} per waiter (p50)`,
            )
          : notAvailable('server requests in the second after a release', 'requests', noCounter),
        ...(afterWrites.length
          ? [
              summarize(
                'server writes in the second after a release',
                afterWrites,
                'writes',
                `range ${range(afterWrites)}`,
              ),
            ]
          : []),
        idleRequests === undefined
          ? notAvailable('idle requests per waiter per lease', 'req/waiter/lease', noCounter)
          : single(
              'idle requests per waiter per lease',
              idleRequests,
              'req/waiter/lease',
              waiters,
              `${idleLeases} leases without a release, the holder's own upkeep taken out`,
            ),
        ...(idleWrites === undefined
          ? []
          : [
              single(
                'idle writes per waiter per lease',
                idleWrites,
                'writes/waiter/lease',
                waiters,
              ),
            ]),
        single(
          'idle CPU of the waiting processes',
          (cpuMs / idleWindow) * 100,
          '% of a core',
          children.length,
          `summed over ${children.length} processes, ${(idleWindow / 1000).toFixed(0)} s`,
        ),
      ]
    } finally {
      await release?.().catch(() => {})
      const closed = await Promise.all(children.map((c) => c.close()))
      const total = closed.reduce((sum, c) => sum + c.errors, 0)
      const first = closed.find((c) => c.firstError)?.firstError
      if (total) log(`${subject.name}: the waiters emitted ${total} errors, first: ${first}`)
      await holder.close()
    }
  },
})

/** The election scenarios, in table order. */
export const electionScenarios: readonly Scenario<Subject>[] = [
  uncontended,
  handoff,
  crash,
  takeover,
  partition,
  idleWaiter,
  renewMany,
  manyWaiters,
]

// ---- agent scenarios (run in the primary of a forked cluster app) ------------------------------

/** A loop a worker runs around one of its subject's operations: timed calls, or a call count. */
export type WorkerLoop =
  | { kind: 'sequential'; n: number; warmup: number }
  | { kind: 'in-flight'; ms: number; inFlight: number }

/** Runs `loop` around `op` in this process (a worker): the samples (ms), or the calls made. */
export async function runLoop(
  op: (i: number) => Promise<unknown>,
  loop: WorkerLoop,
): Promise<number[] | number> {
  if (loop.kind === 'sequential') {
    for (let i = 0; i < loop.warmup; i++) await op(i)
    const samples: number[] = []
    for (let i = 0; i < loop.n; i++) {
      const t = performance.now()
      await op(i)
      samples.push(performance.now() - t)
    }
    return samples
  }
  let count = 0
  const end = performance.now() + loop.ms
  await Promise.all(
    Array.from({ length: loop.inFlight }, async (_, k) => {
      while (performance.now() < end) {
        await op(k)
        count++
      }
    }),
  )
  return count
}

/** An operation the subject runs in its app's workers (not in the designated process). */
export interface InWorkers {
  /** How many workers can run it. */
  readonly workers: number
  /** Runs `loop` around the operation in worker `index`. */
  run(index: number, loop: WorkerLoop): Promise<number[] | number>
}

/** An agent subject: conclave's agent or a peer, in the primary of a 4-worker cluster app. */
export interface AgentSubject extends Named {
  /** A call to the designated process (a small object answer, as a cache lookup gives). */
  call?: InWorkers
  /** One scrape of every worker's metrics, merged, from the primary. */
  scrape?(): Promise<string>
  /** The same scrape from a worker. */
  scrapeFromWorker?: InWorkers
  /** Merges 4 workers' getMetricsAsJSON() output into Prometheus text, in process. */
  prepareMerge?(): Promise<() => unknown>
}

/** Sequential calls from one worker. */
export const callLatency = scenario<AgentSubject, 'call'>({
  id: 'call-latency',
  title: 'call latency, 1 worker, sequential',
  needs: ['call'],
  async run(subject, { quick }) {
    const n = quick ? 300 : 3_000
    const samples = (await subject.call.run(0, {
      kind: 'sequential',
      n,
      warmup: Math.min(200, n),
    })) as number[]
    return [summarize('call', samples)]
  },
})

/** Calls per second from 3 workers with 16 calls in flight each. */
export const callThroughput = scenario<AgentSubject, 'call'>({
  id: 'call-throughput',
  title: 'call throughput, 3 workers x 16 in flight',
  needs: ['call'],
  async run(subject, { quick }) {
    const ms = quick ? 500 : 3_000
    const callers = Math.min(3, subject.call.workers)
    const counts = await Promise.all(
      Array.from(
        { length: callers },
        (_, i) => subject.call.run(i, { kind: 'in-flight', ms, inFlight: 16 }) as Promise<number>,
      ),
    )
    const total = counts.reduce((a, b) => a + b, 0)
    return [single('calls', total / (ms / 1000), 'calls/s', total, `${callers} callers`)]
  },
})

/** A whole-cluster scrape from the primary. */
export const scrape = scenario<AgentSubject, 'scrape'>({
  id: 'scrape',
  title: 'cluster metrics scrape, 4 workers, from the primary',
  needs: ['scrape'],
  async run(subject, { quick }) {
    const n = quick ? 30 : 300
    let bytes = 0
    const samples = (await runLoop(async () => (bytes = (await subject.scrape()).length), {
      kind: 'sequential',
      n,
      warmup: 10,
    })) as number[]
    return [summarize('scrape', samples, 'ms', `${bytes} bytes`)]
  },
})

/** A whole-cluster scrape from a worker. */
export const scrapeFromWorker = scenario<AgentSubject, 'scrapeFromWorker'>({
  id: 'scrape-worker',
  title: 'cluster metrics scrape, 4 workers, from a worker',
  needs: ['scrapeFromWorker'],
  async run(subject, { quick }) {
    const n = quick ? 30 : 300
    const samples = (await subject.scrapeFromWorker.run(0, {
      kind: 'sequential',
      n,
      warmup: 10,
    })) as number[]
    return [summarize('scrape', samples)]
  },
})

/** The part of a scrape where implementations differ by construction, without IPC or scheduling. */
export const merge = scenario<AgentSubject, 'prepareMerge'>({
  id: 'merge',
  title: "merge + render 4 workers' metrics, in process",
  needs: ['prepareMerge'],
  async run(subject, { quick }) {
    const render = await subject.prepareMerge()
    const samples = (await runLoop(async () => render(), {
      kind: 'sequential',
      n: quick ? 200 : 2_000,
      warmup: 100,
    })) as number[]
    return [summarize('merge + render', samples)]
  },
})

/** The agent scenarios, in table order. */
export const agentScenarios: readonly Scenario<AgentSubject>[] = [
  callLatency,
  callThroughput,
  scrape,
  scrapeFromWorker,
  merge,
]

/**
 * The `cannot` of a baseline subject (a backend's cheapest write round trip, named
 * "baseline: ..."): every election scenario is n/a but the uncontended one, where the table
 * prints conclave's ratio to it.
 */
export function baselineOnly(): Record<string, string> {
  return Object.fromEntries(
    electionScenarios
      .filter((s) => s.id !== 'uncontended')
      .map((s) => [s.id, 'a baseline write round trip, not an election']),
  )
}
