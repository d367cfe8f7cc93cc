/**
 * The deterministic simulation of the election core: random schedules of every API call and
 * fault on the manual clock, with the invariants checked at every step and at every term
 * start. Shared by the Vitest test (a short run) and `npm run sim` (a long one).
 */
import fc from 'fast-check'
import type { Term } from '../../src/term.js'
import { Election } from '../../src/election.js'
import { MemoryBackend } from '../../src/backends/memory.js'
import { ManualClock, settle } from '../helpers/manual-clock.js'
import { type CallLog, prng, SimBackend } from './world.js'

const CANDIDATES = 3
const RESOURCE = 'sim/resource'
const OPTIONS = { leaseMs: 1000, renewMs: 300, marginMs: 50, retryMs: 30, drainMs: 200 }

type Work = 'abort' | 'quick' | 'throw' | 'stubborn'
type Op = 'close' | 'resign' | 'abort'

/** One step of a schedule. */
export type Action =
  | { kind: 'campaign'; who: number; withSignal: boolean }
  | { kind: 'run'; who: number; work: Work; workMs: number }
  | { kind: 'resign'; who: number }
  | { kind: 'close'; who: number }
  | { kind: 'abort'; who: number }
  | { kind: 'cut'; who: number; ms: number }
  | { kind: 'lossy'; who: number; rate: number }
  | { kind: 'backendClose'; who: number }
  | { kind: 'restart'; who: number }
  | { kind: 'stall'; ms: number }
  | { kind: 'advance'; ms: number }
  | { kind: 'onElected'; who: number; op: Op; microtasks: number }

const who = fc.integer({ min: 0, max: CANDIDATES - 1 })

/** Schedules: mostly API calls and time, some faults. */
export const actionArbitrary: fc.Arbitrary<Action> = fc.oneof(
  {
    arbitrary: fc.record({ kind: fc.constant('campaign' as const), who, withSignal: fc.boolean() }),
    weight: 3,
  },
  {
    arbitrary: fc.record({
      kind: fc.constant('run' as const),
      who,
      work: fc.constantFrom<Work>('abort', 'quick', 'throw', 'stubborn'),
      workMs: fc.integer({ min: 0, max: 600 }),
    }),
    weight: 4,
  },
  { arbitrary: fc.record({ kind: fc.constant('resign' as const), who }), weight: 2 },
  { arbitrary: fc.record({ kind: fc.constant('close' as const), who }), weight: 2 },
  { arbitrary: fc.record({ kind: fc.constant('abort' as const), who }), weight: 2 },
  {
    arbitrary: fc.record({
      kind: fc.constant('cut' as const),
      who,
      ms: fc.integer({ min: 1, max: 2500 }),
    }),
    weight: 2,
  },
  {
    arbitrary: fc.record({
      kind: fc.constant('lossy' as const),
      who,
      rate: fc.constantFrom(0, 0, 0.2, 0.5),
    }),
    weight: 1,
  },
  { arbitrary: fc.record({ kind: fc.constant('backendClose' as const), who }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('restart' as const), who }), weight: 2 },
  {
    arbitrary: fc.record({
      kind: fc.constant('stall' as const),
      ms: fc.integer({ min: 1, max: 1500 }),
    }),
    weight: 1,
  },
  {
    arbitrary: fc.record({
      kind: fc.constant('advance' as const),
      ms: fc.integer({ min: 0, max: 1200 }),
    }),
    weight: 4,
  },
  {
    arbitrary: fc.record({
      kind: fc.constant('onElected' as const),
      who,
      op: fc.constantFrom<Op>('close', 'resign', 'abort'),
      microtasks: fc.integer({ min: 0, max: 8 }),
    }),
    weight: 3,
  },
)

/** A whole run: the world's seed, the tickets, the schedule. */
export const scenarioArbitrary: fc.Arbitrary<Scenario> = fc.record({
  seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
  tickets: fc.constantFrom(1, 1, 2),
  actions: fc.array(actionArbitrary, { minLength: 1, maxLength: 40 }),
})

/** A whole run: the world's seed, the tickets, the schedule. */
export interface Scenario {
  seed: number
  tickets: number
  actions: Action[]
}

interface TermRecord {
  term: Term
  who: number
  revoked: boolean
  reason?: string
  revokedAt?: number
}

interface Candidate {
  backend: SimBackend
  election: Election
  caller: AbortController
  armed: { op: Op; microtasks: number } | undefined
  /** The work functions started by this election that have not settled yet. */
  working: Map<Promise<unknown>, TermRecord | undefined>
  settling: Promise<unknown>[]
  /** Set once close() resolved: only then may a new election take the same candidate id. */
  closedDone: boolean
  closeCalledAt?: number
}

/**
 * What the runs so far exercised (summed over every scenario of this process): terms that took
 * a grant a release pushed (WatchChange.granted) without asking, and terms in all.
 */
export const simStats = { terms: 0, pushedTerms: 0 }

/** Thrown when an invariant breaks; the message says which and when. */
export class Violation extends Error {}

/** Runs one scenario to the end and throws a Violation if any invariant broke. */
export async function runScenario(
  scenario: Scenario,
  trace: (line: string) => void = () => {},
): Promise<void> {
  const clock = new ManualClock()
  const store = new MemoryBackend({ clock })
  const random = prng(scenario.seed)
  const log: CallLog = { releases: new Map(), answered: new Set() }
  const terms: TermRecord[] = []
  const violations: string[] = []
  const unhandled: unknown[] = []
  const onUnhandled = (error: unknown) => unhandled.push(error)
  process.on('unhandledRejection', onUnhandled)
  const tokens = new Set<number>()
  const fail = (what: string) => violations.push(`at ${clock.now()} ms: ${what}`)

  const isActive = (r: TermRecord) => !r.revoked && clock.now() < r.term.deadline
  const checkHolders = (when: string) => {
    const active = terms.filter(isActive)
    if (active.length > scenario.tickets) {
      fail(
        `${active.length} active terms with tickets ${scenario.tickets} (${when}): ${active
          .map((r) => `#${r.who} token ${r.term.token} deadline ${r.term.deadline}`)
          .join(', ')}`,
      )
    }
  }

  const candidates: Candidate[] = []
  const makeBackend = (i: number) => {
    const backend = new SimBackend(clock, store, `c${i}`, random, log)
    backend.maxDelayMs = Math.floor(random() * 40)
    backend.deaf = random() < 0.25
    return backend
  }
  const makeElection = (i: number, backend: SimBackend): Candidate => {
    const election = new Election(backend, RESOURCE, {
      ...OPTIONS,
      tickets: scenario.tickets,
      id: `c${i}`,
      clock,
    })
    election.on('error', () => {})
    const candidate: Candidate = {
      backend,
      election,
      caller: new AbortController(),
      armed: undefined,
      working: new Map(),
      settling: [],
      closedDone: false,
    }
    election.on('elected', (term) => {
      // Answers arrive out of order, so terms start out of token order; but no two terms may
      // ever share a token.
      if (tokens.has(term.token)) fail(`#${i} won token ${term.token}, which an earlier term had`)
      tokens.add(term.token)
      simStats.terms++
      if (!log.answered.has(term.token)) simStats.pushedTerms++
      trace(`${clock.now()} #${i} elected token ${term.token} deadline ${term.deadline}`)
      terms.push({ term, who: i, revoked: false })
      checkHolders(`#${i} elected with token ${term.token}`)
      const armed = candidate.armed
      if (armed) {
        candidate.armed = undefined
        let p = Promise.resolve()
        for (let k = 0; k < armed.microtasks; k++) p = p.then(() => {})
        void p.then(() => perform(i, armed.op))
      }
    })
    election.on('revoked', (term, reason) => {
      trace(`${clock.now()} #${i} revoked token ${term.token} (${reason})`)
      const record = terms.find((r) => r.term === term)
      if (record) {
        record.revoked = true
        record.reason = reason
        record.revokedAt = clock.now()
      }
    })
    election.on('renewed', () => checkHolders('after a renewal'))
    return candidate
  }
  for (let i = 0; i < CANDIDATES; i++) candidates.push(makeElection(i, makeBackend(i)))

  const expected = (error: unknown) => {
    const code = (error as { code?: string } | null)?.code
    return (
      code === 'ERR_CONCLAVE_BUSY' ||
      code === 'ERR_CONCLAVE_CLOSED' ||
      code === 'ERR_CONCLAVE_LEADERSHIP_LOST' ||
      (error as Error | null)?.name === 'AbortError'
    )
  }

  const work = (i: number, c: Candidate, kind: Work, ms: number) => (term: Term) => {
    const record = terms.find((r) => r.term === term)
    if (term.signal.aborted || !record || record.revoked) {
      fail(`#${i}'s run() handed fn a term that had already ended (token ${term.token})`)
    }
    const body = (async () => {
      switch (kind) {
        case 'abort':
          await new Promise<void>((resolve) =>
            term.signal.addEventListener('abort', () => resolve(), { once: true }),
          )
          return
        case 'quick':
          await new Promise<void>((resolve) => clock.setTimeout(resolve, ms))
          return
        case 'throw':
          await new Promise<void>((resolve) => clock.setTimeout(resolve, ms))
          throw new Error('sim: the work failed')
        case 'stubborn':
          await new Promise<void>((resolve) => clock.setTimeout(resolve, ms))
      }
    })()
    c.working.set(body, record)
    void body.then(
      () => c.working.delete(body),
      () => c.working.delete(body),
    )
    return body
  }

  const closeElection = (i: number) => {
    const c = candidates[i]!
    // close() is idempotent: the drain is measured from the first call.
    c.closeCalledAt ??= clock.now()
    const calledAt = c.closeCalledAt
    const closing = c.election.close().then(() => {
      c.closedDone = true
      // Work may outlive its term only once the drain (from the term's end, or from this
      // call for work that outlived an earlier term) is over.
      for (const record of c.working.values()) {
        const since = clock.now() - Math.min(record?.revokedAt ?? calledAt, calledAt)
        if (since < OPTIONS.drainMs) {
          fail(
            `#${i}'s close() resolved while its work still ran, ${since} ms into the drain (drainMs ${OPTIONS.drainMs})`,
          )
        }
      }
    })
    c.settling.push(closing)
  }

  function perform(i: number, op: Op): void {
    const c = candidates[i]!
    if (op === 'close') closeElection(i)
    else if (op === 'resign') c.settling.push(c.election.resign().catch(() => {}))
    else c.caller.abort()
  }

  const track = (i: number, promise: Promise<unknown>, what: string) => {
    const c = candidates[i]!
    c.settling.push(
      promise.then(
        () => {},
        (error: unknown) => {
          if (!expected(error)) fail(`#${i}'s ${what} rejected with ${String(error)}`)
        },
      ),
    )
  }

  try {
    for (const action of scenario.actions) {
      const c = 'who' in action ? candidates[action.who]! : undefined
      trace(`${clock.now()} action ${JSON.stringify(action)}`)
      switch (action.kind) {
        case 'campaign': {
          const signal = action.withSignal ? c!.caller.signal : undefined
          const p = c!.election.campaign(signal ? { signal } : {})
          track(action.who, p, 'campaign()')
          break
        }
        case 'run':
          track(
            action.who,
            c!.election.run(work(action.who, c!, action.work, action.workMs), {
              signal: c!.caller.signal,
            }),
            'run()',
          )
          break
        case 'resign':
        case 'close':
        case 'abort':
          perform(action.who, action.kind)
          break
        case 'cut':
          c!.backend.cutUntil = clock.now() + action.ms
          break
        case 'lossy':
          c!.backend.lossRate = action.rate
          break
        case 'backendClose':
          c!.settling.push(c!.backend.close())
          break
        case 'restart':
          // A new election for the same candidate id, as a restarted process would be, once
          // the old one has closed (ids are unique among live candidates).
          if (c!.closedDone) {
            const backend = c!.backend.closing ? makeBackend(action.who) : c!.backend
            const next = makeElection(action.who, backend)
            next.settling = c!.settling
            candidates[action.who] = next
          }
          break
        case 'stall':
          clock.jump(action.ms)
          break
        case 'advance':
          await clock.advance(action.ms)
          break
        case 'onElected':
          c!.armed = { op: action.op, microtasks: action.microtasks }
          break
      }
      await clock.advance(Math.floor(random() * 50))
      checkHolders(`after ${action.kind}`)
    }
    // First come, first served never starves the line: once the faults stop (and places left
    // by the faulty part have expired), a ticket never stays free for a lease while someone
    // stands in line. A waiter not next in line sets no timer, so this is what catches a
    // waiter nobody wakes.
    for (const c of candidates) {
      c.backend.cutUntil = 0
      c.backend.lossRate = 0
    }
    await clock.advance(2 * OPTIONS.leaseMs)
    let starvedSince: number | undefined
    for (let step = 0; step < 60; step++) {
      // Hand the tickets on now and then, so the line has to move (run() asks again).
      if (step % 10 === 5) {
        for (const c of candidates)
          if (c.election.isLeader) c.settling.push(c.election.resign().catch(() => {}))
      }
      await clock.advance(50)
      const free = (await store.holders(RESOURCE)).length < scenario.tickets
      const line = store.lineOf(RESOURCE)
      if (!free || line.length === 0) {
        starvedSince = undefined
        continue
      }
      starvedSince ??= clock.now()
      if (clock.now() - starvedSince >= OPTIONS.leaseMs) {
        fail(
          `a ticket stayed free for ${clock.now() - starvedSince} ms while ${line.join(', ')} stood in line`,
        )
        break
      }
    }
    // Wind down: close everything, let every timer fire, then nothing may be left.
    for (let i = 0; i < CANDIDATES; i++) {
      closeElection(i)
      candidates[i]!.settling.push(candidates[i]!.backend.close())
    }
    for (let round = 0; round < 20; round++) await clock.advance(1000)
    let unsettled = 0
    const all = candidates.flatMap((c) => c.settling)
    const flags = all.map(() => false)
    all.forEach(
      (p, k) =>
        void p.then(
          () => (flags[k] = true),
          () => (flags[k] = true),
        ),
    )
    await settle()
    unsettled = flags.filter((f) => !f).length
    if (unsettled > 0) fail(`${unsettled} campaign/run/close promises never settled`)
    for (const record of terms) {
      if (!record.revoked) fail(`term ${record.term.token} of #${record.who} never ended`)
      const released = log.releases.get(record.term.token) ?? 0
      if (record.reason !== 'lost' && released !== 1) {
        fail(
          `term ${record.term.token} (${record.reason}) was released ${released} times, not once`,
        )
      }
      if (record.reason === 'lost' && released > 0)
        fail(`lost term ${record.term.token} was released`)
    }
    if (clock.pending > 0) fail(`${clock.pending} timers left behind after everything closed`)
    if (unhandled.length > 0) fail(`unhandled rejections: ${unhandled.map(String).join('; ')}`)
  } finally {
    process.off('unhandledRejection', onUnhandled)
  }
  if (violations.length > 0) throw new Violation(violations.join('\n'))
}

/** fast-check's property over scenarios. */
export const simulationProperty = fc.asyncProperty(scenarioArbitrary, (scenario) =>
  runScenario(scenario),
)
