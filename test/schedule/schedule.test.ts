// schedule(): leader-only cron on the memory backend with the manual clock (wall time = the
// manual clock, started at a real date), so fire instants, failovers and deploys are exact.
import { Cron } from 'croner'
import { afterEach, describe, expect, it } from 'vitest'
import type { Backend, WriteRecordRequest } from '../../src/backend.js'
import { MemoryBackend } from '../../src/backends/memory.js'
import { Election } from '../../src/election.js'
import { OptionsError } from '../../src/errors.js'
import { type FireContext, schedule, type Schedule, singletonCron } from '../../src/schedule.js'
import { ManualClock } from '../helpers/manual-clock.js'

const LEASE = 10_000
const HOUR = 3_600_000

interface Run {
  who: string
  fire: number
  at: number
  token: number
  attempt: number
}

/** Called before every record write (a test holds one on its way). */
let beforeWrite: ((who: string, request: WriteRecordRequest) => Promise<void>) | undefined

/** A handle on the store whose calls all fail once cut: a crashed or partitioned process. */
function cuttable(store: MemoryBackend, name: string): Backend & { cut(): void } {
  const handle = store.handle(name)
  let cut = false
  const guard =
    <A extends unknown[], R>(fn: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      if (cut) throw new Error(`${name} is cut off`)
      return fn(...args)
    }
  return {
    ...handle,
    name,
    acquire: guard(handle.acquire.bind(handle)),
    renew: guard(handle.renew.bind(handle)),
    release: guard(handle.release.bind(handle)),
    holders: guard(handle.holders.bind(handle)),
    watch: guard(handle.watch.bind(handle)),
    readRecord: guard(handle.readRecord!.bind(handle)),
    writeRecord: guard(async (request: WriteRecordRequest) => {
      await beforeWrite?.(name, request)
      return handle.writeRecord!(request)
    }),
    now: guard(handle.now!.bind(handle)),
    cut: () => void (cut = true),
  }
}

class World {
  readonly clock: ManualClock
  readonly store: MemoryBackend
  readonly runs: Run[] = []
  readonly events: { who: string; type: string; info: unknown }[] = []
  readonly schedules: Schedule[] = []
  readonly backends = new Map<string, ReturnType<typeof cuttable>>()

  constructor(
    startIso: string,
    readonly leaseMs = LEASE,
  ) {
    this.clock = new ManualClock(Date.parse(startIso))
    const clock = this.clock
    this.store = new MemoryBackend({ clock, wallClock: () => clock.now() })
  }

  start(
    who: string,
    expression: string,
    options: Parameters<typeof schedule>[3] = {},
    fn?: (context: FireContext) => unknown,
  ): Schedule {
    const backend = cuttable(this.store, who)
    this.backends.set(who, backend)
    const election = new Election(backend, 'jobs/cron', {
      id: who,
      leaseMs: this.leaseMs,
      clock: this.clock,
    })
    election.on('error', () => {})
    const job = schedule(
      election,
      expression,
      async (context) => {
        this.runs.push({
          who,
          fire: context.fireTime.getTime(),
          at: this.clock.now(),
          token: context.token,
          attempt: context.attempt,
        })
        await fn?.(context)
      },
      options,
    )
    for (const type of ['skipped', 'interrupted'] as const)
      job.on(type, (info: unknown) => this.events.push({ who, type, info }))
    job.on('error', (e) => process.env.DEBUG_CRON && console.log(who, e))
    this.schedules.push(job)
    return job
  }

  async advance(ms: number, step = 1_000): Promise<void> {
    for (let left = ms; left > 0; left -= step) await this.clock.advance(Math.min(step, left))
  }

  /** How many times each fire time ran. */
  counts(): Map<number, number> {
    const counts = new Map<number, number>()
    for (const run of this.runs) counts.set(run.fire, (counts.get(run.fire) ?? 0) + 1)
    return counts
  }

  async close(): Promise<void> {
    const closing = Promise.all(this.schedules.map((s) => s.stop()))
    await this.clock.advance(this.leaseMs * 2)
    await closing
    await Promise.all(this.schedules.map((s) => s.election.close()))
  }
}

/** The fire times of `expression` in (from, to], from croner itself. */
function expected(expression: string, from: number, to: number, timezone?: string): number[] {
  const cron = new Cron(expression, { timezone, paused: true })
  const out: number[] = []
  for (let d = cron.nextRun(new Date(from)); d && d.getTime() <= to; d = cron.nextRun(d))
    out.push(d.getTime())
  return out
}

let world: World | undefined
afterEach(async () => {
  beforeWrite = undefined
  await world?.close()
  world = undefined
})

describe('schedule: fire instants', () => {
  it('fires at croner’s instants across the spring and autumn DST changes of Europe/Berlin', async () => {
    // A long lease: three days of renewals on the manual clock stay quick.
    world = new World('2026-03-28T22:00:00Z', HOUR)
    const start = world.clock.now()
    // 02:30 local does not exist on 29 March and happens twice on 25 October.
    world.start('a', '30 2 * * *', { timezone: 'Europe/Berlin' })
    await world.advance(28 * HOUR, HOUR)
    const spring = expected('30 2 * * *', start + 1_000, world.clock.now(), 'Europe/Berlin')
    expect(world.runs.map((r) => r.fire)).toEqual(spring)
    // The missing 02:30 of 29 March runs once, at 03:30 CEST (croner's choice).
    expect(spring.map((f) => new Date(f).toISOString())).toEqual([
      '2026-03-29T01:30:00.000Z',
      '2026-03-30T00:30:00.000Z',
    ])
    await world.close()
    world = new World('2026-10-24T22:00:00Z', HOUR)
    const autumnStart = world.clock.now()
    world.start('a', '30 2 * * *', { timezone: 'Europe/Berlin' })
    await world.advance(28 * HOUR, HOUR)
    const autumn = expected('30 2 * * *', autumnStart + 1_000, world.clock.now(), 'Europe/Berlin')
    // The doubled 02:30 of 25 October runs once (at 02:30 CET), not twice.
    expect(autumn.map((f) => new Date(f).toISOString())).toEqual([
      '2026-10-25T01:30:00.000Z',
      '2026-10-26T01:30:00.000Z',
    ])
    expect(world.runs.map((r) => r.fire)).toEqual(autumn)
    // Each run starts at its fire instant (within the step of the manual clock), never before.
    for (const run of world.runs) {
      expect(run.at).toBeGreaterThanOrEqual(run.fire)
      expect(run.at - run.fire).toBeLessThan(60_000)
    }
    // One run per local day, none doubled by the repeated hour.
    expect(new Set(world.runs.map((r) => r.fire)).size).toBe(world.runs.length)
  })

  it('reads the expression in the given time zone, seconds optional', async () => {
    world = new World('2026-07-01T06:00:00Z', HOUR)
    world.start('a', '0 3 * * *', { timezone: 'America/New_York', key: 'ny' })
    await world.advance(26 * HOUR, HOUR)
    expect(world.runs.map((r) => new Date(r.fire).toISOString())).toEqual([
      '2026-07-01T07:00:00.000Z',
      '2026-07-02T07:00:00.000Z',
    ])
    await world.close()
    world = new World('2026-07-01T00:00:00Z')
    world.start('a', '*/15 * * * * *')
    await world.advance(60_000, 500)
    expect(world.runs.map((r) => r.fire - Date.parse('2026-07-01T00:00:00Z'))).toEqual([
      15_000, 30_000, 45_000, 60_000,
    ])
  })
})

describe('schedule: once per fire across the group', () => {
  it('a failover between two fires neither repeats nor loses a fire', async () => {
    world = new World('2026-01-01T00:00:00Z')
    for (const who of ['a', 'b', 'c']) world.start(who, '0 * * * * *') // every minute
    await world.advance(5 * 60_000)
    const first = world.runs[0]!.who
    // The holder crashes right after a fire: its backend calls fail, its grant expires.
    world.backends.get(first)!.cut()
    await world.advance(10 * 60_000)
    const fires = expected('0 * * * * *', Date.parse('2026-01-01T00:00:00Z'), world.clock.now())
    expect([...world.counts().keys()]).toEqual(fires) // none lost (the gap is under graceMs)
    expect([...world.counts().values()].every((n) => n === 1)).toBe(true) // none repeated
    expect(new Set(world.runs.map((r) => r.who)).size).toBe(2)
  })

  it('a deploy that restarts every instance in turn runs each fire exactly once', async () => {
    world = new World('2026-01-01T00:00:00Z')
    const live: Schedule[] = []
    let n = 0
    for (let i = 0; i < 3; i++) live.push(world.start(`v0-${n++}`, '*/20 * * * * *'))
    await world.advance(60_000)
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 3; i++) {
        // Stop one instance (SIGTERM: close, drain, release), start its replacement.
        const old = live.shift()!
        const stopping = old.stop()
        await world.clock.advance(100)
        await stopping
        live.push(world.start(`v${round + 1}-${n++}`, '*/20 * * * * *'))
        await world.advance(30_000)
      }
    }
    await world.advance(40_000)
    const fires = expected(
      '*/20 * * * * *',
      Date.parse('2026-01-01T00:00:00Z'),
      world.clock.now() - 1_000,
    )
    const counts = world.counts()
    for (const fire of fires) expect(counts.get(fire), new Date(fire).toISOString()).toBe(1)
    expect(world.events.filter((e) => e.type === 'skipped')).toEqual([])
    expect(new Set(world.runs.map((r) => r.who)).size).toBeGreaterThan(2)
  })

  it('a fenced compare-and-set refuses a stale token and a write on an outdated version', async () => {
    const store = new MemoryBackend()
    const base = { resource: 'jobs/cron', key: 'cron' }
    const w1 = await store.writeRecord({ ...base, value: 1, token: 5, version: 0 })
    expect(w1).toEqual({ written: true, version: 1 })
    // Token 4 (a paused ex-leader) is refused even on the current version.
    expect(await store.writeRecord({ ...base, value: 2, token: 4, version: 1 })).toMatchObject({
      written: false,
      current: { value: 1, token: 5, version: 1 },
    })
    // A write on the version it read, after someone else wrote: refused.
    await store.writeRecord({ ...base, value: 3, token: 6, version: 1 })
    expect(await store.writeRecord({ ...base, value: 4, token: 7, version: 1 })).toMatchObject({
      written: false,
    })
    expect(await store.readRecord('jobs/cron', 'cron')).toEqual({ value: 3, token: 6, version: 2 })
    await expect(
      store.writeRecord({ ...base, value: 1, token: 0, version: 0 }),
    ).rejects.toBeInstanceOf(OptionsError)
  })

  it('a host clock ahead of the others may run a fire early but never twice', async () => {
    world = new World('2026-01-01T00:00:00Z')
    const clock = world.clock
    world.start('fast', '0 * * * * *', { now: () => clock.now() + 20_000 })
    world.start('ok', '0 * * * * *')
    await world.advance(3 * 60_000)
    world.backends.get(world.runs[0]!.who)!.cut()
    await world.advance(5 * 60_000)
    expect([...world.counts().values()].every((n) => n === 1)).toBe(true)
  })
})

describe('schedule: missed fires', () => {
  /** A leader runs 2 fires and leaves; nobody leads for 5 fires; then `who` starts. */
  async function gap(options: Parameters<typeof schedule>[3]): Promise<World> {
    const w = new World('2026-01-01T00:00:00Z')
    const first = w.start('a', '0 * * * * *', options)
    await w.advance(2 * 60_000 + 500)
    const stopping = first.stop()
    await w.clock.advance(100)
    await stopping
    await w.advance(5 * 60_000 + 30_000)
    w.start('b', '0 * * * * *', options)
    await w.advance(1_000, 100)
    return w
  }

  it("skip (default): the missed fires do not run; a 'skipped' event lists them", async () => {
    world = await gap({})
    expect(world.runs.filter((r) => r.who === 'b')).toEqual([])
    const skipped = world.events.filter((e) => e.type === 'skipped')
    expect(skipped).toHaveLength(1)
    expect(skipped[0]!.info).toMatchObject({ count: 5, approximate: false, reason: 'missed' })
    await world.advance(60_000)
    expect(world.runs.filter((r) => r.who === 'b')).toHaveLength(1) // the next fire runs
  })

  it('once: the latest missed fire runs once, the older are reported skipped', async () => {
    world = await gap({ missed: 'once' })
    const b = world.runs.filter((r) => r.who === 'b')
    expect(b.map((r) => new Date(r.fire).toISOString())).toEqual(['2026-01-01T00:07:00.000Z'])
    expect(world.events.filter((e) => e.type === 'skipped')[0]!.info).toMatchObject({ count: 4 })
  })

  it('all: every missed fire runs, oldest first, at most maxCatchUp', async () => {
    world = await gap({ missed: 'all', maxCatchUp: 3 })
    const b = world.runs.filter((r) => r.who === 'b')
    expect(b.map((r) => new Date(r.fire).toISOString())).toEqual([
      '2026-01-01T00:05:00.000Z',
      '2026-01-01T00:06:00.000Z',
      '2026-01-01T00:07:00.000Z',
    ])
    expect(world.events.filter((e) => e.type === 'skipped')[0]!.info).toMatchObject({ count: 2 })
    expect([...world.counts().values()].every((n) => n === 1)).toBe(true)
  })

  it('a fire late by less than graceMs (a failover) still runs under skip', async () => {
    world = new World('2026-01-01T00:00:00Z')
    const a = world.start('a', '0 * * * * *', { graceMs: 30_000 })
    await world.advance(59_000)
    const stopping = a.stop()
    await world.clock.advance(100)
    await stopping
    await world.advance(20_000) // the fire at 00:01 passes with nobody leading
    world.start('b', '0 * * * * *', { graceMs: 30_000 })
    await world.advance(1_000, 100)
    expect(world.runs.map((r) => [r.who, new Date(r.fire).toISOString()])).toEqual([
      ['b', '2026-01-01T00:01:00.000Z'],
    ])
  })
})

describe('schedule: a holder killed mid-fire', () => {
  async function killedMidFire(retryInterrupted: boolean): Promise<World> {
    const w = new World('2026-01-01T00:00:00Z')
    for (const who of ['a', 'b'])
      w.start(who, '0 * * * * *', { retryInterrupted }, async ({ signal, attempt }) => {
        // The first attempt hangs until its term ends (the holder is cut off mid-run).
        if (attempt === 1 && w.runs.length === 1)
          await new Promise((resolve) => signal.addEventListener('abort', resolve))
      })
    await w.advance(60_000, 500)
    expect(w.runs).toHaveLength(1)
    w.backends.get(w.runs[0]!.who)!.cut()
    await w.advance(30_000, 500)
    return w
  }

  it('is reported (interrupted event) and not run again by default', async () => {
    world = await killedMidFire(false)
    const interrupted = world.events.filter((e) => e.type === 'interrupted')
    expect(interrupted).toHaveLength(1)
    expect(interrupted[0]!.info).toMatchObject({
      fireTime: new Date('2026-01-01T00:01:00Z'),
      attempt: 1,
      retried: false,
    })
    expect(world.counts().get(Date.parse('2026-01-01T00:01:00Z'))).toBe(1)
    await world.advance(60_000)
    expect(world.counts().get(Date.parse('2026-01-01T00:02:00Z'))).toBe(1)
  })

  it('with retryInterrupted, runs again on the new holder as attempt 2', async () => {
    world = await killedMidFire(true)
    const runs = world.runs.filter((r) => r.fire === Date.parse('2026-01-01T00:01:00Z'))
    expect(runs.map((r) => r.attempt)).toEqual([1, 2])
    expect(runs[0]!.who).not.toBe(runs[1]!.who)
    expect(runs[1]!.token).toBeGreaterThan(runs[0]!.token)
    expect(world.events.filter((e) => e.type === 'interrupted')[0]!.info).toMatchObject({
      retried: true,
    })
  })
})

describe('schedule: a claim whose term ends before fn starts', () => {
  it('is handed back, and the next holder runs that fire', async () => {
    world = new World('2026-01-01T00:00:00Z')
    const a = world.start('a', '0 * * * * *')
    await world.advance(2_000, 100)
    // Hold a's claim of the next fire on its way, end a's term meanwhile (a SIGTERM), then let
    // the claim land: fn must not start, and the fire must not be lost.
    let release!: () => void
    const held = new Promise<void>((resolve) => (release = resolve))
    let claiming = false
    beforeWrite = async (who, request) => {
      if (who === 'a' && (request.value as { running?: unknown }).running && !claiming) {
        claiming = true
        await held
      }
    }
    await world.advance(58_500, 100)
    expect(claiming).toBe(true)
    const stopping = a.stop()
    await world.clock.advance(10)
    release()
    await world.clock.advance(100)
    await stopping
    world.start('b', '0 * * * * *')
    await world.advance(2_000, 100)
    expect(world.runs.map((r) => [r.who, new Date(r.fire).toISOString()])).toEqual([
      ['b', '2026-01-01T00:01:00.000Z'],
    ])
    expect(world.events.filter((e) => e.type === 'interrupted')).toEqual([])
  })
})

describe('schedule: options', () => {
  it('refuses bad input with the field named', () => {
    const store = new MemoryBackend()
    const election = new Election(store, 'jobs/x')
    const fn = () => {}
    expect(() => schedule(election, 'not cron', fn)).toThrow(/Invalid expression/)
    expect(() => schedule(election, '* * * * *', fn, { timezone: 'Mars/Olympus' })).toThrow(
      /Invalid timezone/,
    )
    expect(() => schedule(election, '* * * * *', fn, { missed: 'some' as 'all' })).toThrow(
      /Invalid missed/,
    )
    expect(() => schedule(election, '* * * * *', fn, { maxCatchUp: 0 })).toThrow(
      /Invalid maxCatchUp/,
    )
    expect(() => schedule(election, '* * * * *', fn, { bogus: 1 } as object)).toThrow(/bogus/)
    const bare = { ...store.handle(), readRecord: undefined, writeRecord: undefined }
    expect(() => schedule(new Election(bare, 'jobs/y'), '* * * * *', fn)).toThrow(
      /readRecord and writeRecord/,
    )
    expect(() => singletonCron(store, '', '* * * * *', fn)).toThrow(/Invalid name/)
    expect(() => schedule(new Election(store, 'jobs/z', { tickets: 2 }), '* * * * *', fn)).toThrow(
      /Invalid tickets/,
    )
  })

  it('singletonCron owns its election on cron/<name> and closes it', async () => {
    world = new World('2026-01-01T00:00:00Z')
    const runs: number[] = []
    const job = singletonCron(
      world.store,
      'nightly',
      '0 * * * * *',
      ({ fireTime }) => void runs.push(fireTime.getTime()),
      { election: { leaseMs: LEASE, clock: world.clock } },
    )
    expect(job.election.resource).toBe('cron/nightly')
    await world.advance(60_000, 500)
    expect(runs).toEqual([Date.parse('2026-01-01T00:01:00Z')])
    const stopping = job.close()
    await world.clock.advance(100)
    await stopping
    expect(job.election.closed).toBe(true)
  })
})
