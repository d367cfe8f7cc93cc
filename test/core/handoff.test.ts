// A release on the memory store hands the freed ticket to the next waiter in line whose process
// listens, and names the grant (WatchChange.granted) only to that process; the core holds it
// without asking again, with its deadline counted from the refused ask that queued the place.
// On a manual clock, so every instant is exact.
import { describe, expect, it } from 'vitest'
import type { Backend, WatchChange } from '../../src/backend.js'
import { MemoryBackend } from '../../src/backends/memory.js'
import { Election } from '../../src/election.js'
import type { Term } from '../../src/term.js'
import { Faulty } from '../conformance/suite.js'
import { ManualClock, settle } from '../helpers/manual-clock.js'

const RES = 'core/handoff'
const OPTIONS = { leaseMs: 1000, marginMs: 50, renewMs: 300, retryMs: 100, drainMs: 500 }
const long = 60_000

/** One process's path to the store: counts its asks and when each was sent. */
class Asking extends Faulty {
  sentAt: number[] = []
  constructor(
    inner: Backend,
    readonly clock: ManualClock,
  ) {
    super(inner)
  }
  get asks(): number {
    return this.sentAt.length
  }
  override async acquire(...a: Parameters<Backend['acquire']>) {
    this.sentAt.push(this.clock.now())
    return super.acquire(...a)
  }
}

const ask = (b: Backend, candidate: string, leaseMs = long, metadata: unknown = null) =>
  b.acquire({ resource: RES, candidate, tickets: 1, leaseMs, metadata: metadata as null })

async function token(asked: ReturnType<typeof ask>): Promise<number> {
  const result = await asked
  if (!result.acquired) throw new Error('expected a grant')
  return result.token
}

describe('the memory store hands a released ticket to the next in line', () => {
  it('grants the first listening place: a larger token, its metadata, what is left of its life', async () => {
    const clock = new ManualClock()
    const store = new MemoryBackend({ clock })
    const [mine, other] = [store.handle(), store.handle()]
    const seen: WatchChange[] = []
    const others: WatchChange[] = []
    await mine.watch(RES, (c) => c && seen.push(c))
    await other.watch(RES, (c) => c && others.push(c))
    const a = await token(ask(other, 'a'))
    await ask(mine, 'w1', 2000, { m: 1 })
    await ask(mine, 'w2')
    clock.jump(500)
    const [from, fromOthers] = [seen.length, others.length]
    await other.release({ resource: RES, candidate: 'a', token: a })
    await settle()
    const holders = await store.holders(RES)
    expect(holders.map((h) => [h.candidate, h.metadata, h.remainingMs])).toEqual([
      ['w1', { m: 1 }, 1500], // its place's life: 2000 ms from its ask, not a fresh lease
    ])
    expect(holders[0]!.token).toBeGreaterThan(a)
    expect(store.lineOf(RES)).toEqual(['w2'])
    // Named to the process whose ask took the place; the others are only told whom it wakes.
    expect(seen.slice(from)).toEqual([
      {
        wake: ['w1'],
        ended: [{ candidate: 'a', token: a }],
        granted: [{ candidate: 'w1', token: holders[0]!.token }],
      },
    ])
    expect(others.slice(fromOthers)).toEqual([
      { wake: ['w1'], ended: [{ candidate: 'a', token: a }] },
    ])
    // Its next ask extends the grant it was given: the same token.
    expect(await token(ask(mine, 'w1'))).toBe(holders[0]!.token)
  })

  it('grants no place whose process does not listen, nor one behind it: they ask when woken', async () => {
    const clock = new ManualClock()
    const store = new MemoryBackend({ clock })
    const [listening, deaf] = [store.handle(), store.handle()]
    const seen: WatchChange[] = []
    await listening.watch(RES, (c) => c && seen.push(c))
    const a = await token(ask(listening, 'a'))
    await ask(deaf, 'w1') // no watch through this handle: it takes no handoff
    await ask(listening, 'w2')
    await listening.release({ resource: RES, candidate: 'a', token: a })
    await settle()
    expect(await store.holders(RES)).toEqual([])
    expect(store.lineOf(RES)).toEqual(['w1', 'w2'])
    expect(seen.at(-1)).toEqual({ wake: ['w1'], ended: [{ candidate: 'a', token: a }] })
    expect(await token(ask(deaf, 'w1'))).toBeGreaterThan(a)
  })

  it('a closed handle’s places take no handoff', async () => {
    const clock = new ManualClock()
    const store = new MemoryBackend({ clock })
    const [b, gone] = [store.handle(), store.handle()]
    await gone.watch(RES, () => {})
    const a = await token(ask(b, 'a'))
    await ask(gone, 'w1')
    await gone.close()
    await b.release({ resource: RES, candidate: 'a', token: a })
    expect(await store.holders(RES)).toEqual([])
  })

  it('an Election in line holds the handed grant without asking, its deadline from the ask that queued it', async () => {
    const clock = new ManualClock()
    const store = new MemoryBackend({ clock })
    const holder = new Election(store.handle(), RES, { ...OPTIONS, clock })
    const path = new Asking(store.handle(), clock)
    const waiter = new Election(path, RES, { ...OPTIONS, clock })
    const first = await holder.campaign()
    const inLine = new Promise((resolve) => waiter.once('waiting', resolve))
    const waiting = waiter.campaign()
    await settle()
    await inLine
    const asked = path.asks
    const placedAt = path.sentAt.at(-1)!
    await clock.advance(200) // a queued renewal comes and goes: the deadline still counts from the ask
    await first.resign()
    await clock.advance(1)
    const term = await waiting
    expect(path.asks).toBe(asked)
    expect(term.deadline).toBe(placedAt + OPTIONS.leaseMs - OPTIONS.marginMs)
    const [held] = await store.holders(RES)
    expect(held).toMatchObject({ candidate: waiter.id, token: term.token })
    // The store's expiry of the grant comes after the holder's deadline.
    expect(clock.now() + held!.remainingMs).toBeGreaterThan(term.deadline)
    // It renews it as any grant.
    await clock.advance(OPTIONS.renewMs + 1)
    expect(term.deadline).toBeGreaterThan(placedAt + OPTIONS.leaseMs - OPTIONS.marginMs)
    expect(term.active).toBe(true)
    await holder.close()
    await waiter.close()
    expect(await store.holders(RES)).toEqual([])
  })

  it('a handed grant whose deadline comes before the next renewal tick is renewed at once: its term runs on, nobody else is elected', async () => {
    const clock = new ManualClock()
    const store = new MemoryBackend({ clock })
    const make = (id: string) => {
      const e = new Election(store.handle(), RES, { ...OPTIONS, id, clock })
      e.on('error', () => {})
      return e
    }
    const [holder, w, x] = [make('h'), make('w'), make('x')]
    const elected: string[] = []
    const revoked: string[] = []
    let handedLeft = Infinity
    w.once('elected', (t: Term) => (handedLeft = t.deadline - clock.now()))
    for (const e of [w, x]) {
      e.on('elected', (t: Term) => elected.push(t.candidate))
      e.on('revoked', (t: Term, reason: string) => revoked.push(`${t.candidate} ${reason}`))
    }
    const first = await holder.campaign()
    const wInLine = new Promise((resolve) => w.once('waiting', resolve))
    const wTerm = w.campaign()
    await settle()
    await wInLine
    await clock.advance(10)
    const xInLine = new Promise((resolve) => x.once('waiting', resolve))
    void x.campaign().catch(() => {})
    await settle()
    await xInLine
    // The release comes 905 ms after w's ask: the handed grant's deadline (950) is before the
    // renewal batch's next tick (every 300 ms since the holder's term began: 1200).
    await clock.advance(895)
    await first.resign()
    await clock.advance(1)
    const term = await wTerm
    // Handed on with 45 ms of its lease left (the deadline counts from w's ask).
    expect(handedLeft).toBeLessThan(OPTIONS.renewMs)
    await clock.advance(OPTIONS.renewMs)
    expect(term.active).toBe(true)
    expect(revoked).toEqual([])
    expect(elected).toEqual(['w'])
    await Promise.all([holder.close(), w.close(), x.close()])
    expect(clock.pending).toBe(0)
  })

  // The race: a release hands the ticket to a campaign whose abort lands a few microtasks before
  // or after it. Whatever the order, that grant goes back (withdrawn, or resigned) and the next in
  // line holds within a short while, never two terms at once, never a term on a dropped grant.
  for (let k = 0; k <= 12; k += 2) {
    it(`a grant pushed to a campaign aborted ${k} microtasks after the release is handed on`, async () => {
      const clock = new ManualClock()
      const store = new MemoryBackend({ clock })
      const make = (id: string) => {
        const e = new Election(store.handle(), RES, { ...OPTIONS, id, clock })
        e.on('error', () => {})
        return e
      }
      const [holder, gone, next] = [make('holder'), make('gone'), make('next')]
      const terms: Term[] = []
      for (const e of [gone, next]) e.on('elected', (t) => terms.push(t))
      const first = await holder.campaign()
      const stop = new AbortController()
      const queued = (e: Election) => new Promise((resolve) => e.once('waiting', resolve))
      const goneInLine = queued(gone)
      const aborted = gone.campaign({ signal: stop.signal })
      aborted.catch(() => {})
      await settle()
      await goneInLine
      const nextInLine = queued(next)
      const waiting = next.campaign()
      await settle()
      await nextInLine
      const resigned = first.resign()
      let p = Promise.resolve()
      for (let i = 0; i < k; i++) p = p.then(() => {})
      await p
      stop.abort()
      await resigned
      // Won before the abort came: the caller has the term, and hands it on itself.
      const won = await aborted.catch(() => undefined)
      if (won) await won.resign()
      await clock.advance(20) // far less than a lease: only the release, not an expiry, moves it
      const term = await waiting
      expect(term.active).toBe(true)
      expect(gone.isLeader).toBe(false)
      expect(terms.filter((t) => t.active)).toEqual([term])
      const holders = await store.holders(RES)
      expect(holders.map((h) => [h.candidate, h.token])).toEqual([['next', term.token]])
      await Promise.all([holder.close(), gone.close(), next.close()])
      expect(await store.holders(RES)).toEqual([])
      expect(clock.pending).toBe(0)
    })
  }
})
