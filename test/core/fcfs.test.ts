// First come, first served in the core (guarantee 12), on a manual clock: which waiter asks
// when, what keeps its place, and what wakes it.
import { describe, expect, it } from 'vitest'
import type { Backend, RenewRequest, WatchChange } from '../../src/backend.js'
import { MemoryBackend } from '../../src/backends/memory.js'
import { Election, type WaitingInfo } from '../../src/election.js'
import { Faulty } from '../conformance/suite.js'
import { ManualClock, settle } from '../helpers/manual-clock.js'

const RES = 'core/fcfs'
const OPTIONS = { leaseMs: 1000, marginMs: 50, renewMs: 300, retryMs: 100, drainMs: 500 }

/** One process's path to the store: counts its asks and renewals; can mute its watches. */
class Counting extends Faulty {
  asks = 0
  renewals: RenewRequest[][] = []
  /** Watches never fire: only the queued renewal can wake a waiter. */
  mute = false
  /** Renewals fail (unknown outcome); other calls work. */
  failRenew = false
  /** Queued renewals answer "place kept" from a stale view, whatever the store says. */
  staleQueued = false
  override async acquire(...a: Parameters<Backend['acquire']>) {
    this.asks++
    return super.acquire(...a)
  }
  override async renew(requests: RenewRequest[]) {
    this.renewals.push(requests)
    if (this.failRenew) throw new Error('injected fault: renewals are cut')
    if (!this.staleQueued) return super.renew(requests)
    const grants = await super.renew(requests.filter((r) => !r.queued))
    return requests.map((r) => (r.queued ? true : grants.shift()!))
  }
  override async watch(resource: string, onChange: (change?: WatchChange) => void) {
    return super.watch(resource, (change) => {
      if (!this.mute) onChange(change)
    })
  }
}

function setup(waiters: number) {
  const clock = new ManualClock()
  const store = new MemoryBackend({ clock })
  const errors: Error[] = []
  const make = () => {
    const backend = new Counting(store.handle())
    const election = new Election(backend, RES, { ...OPTIONS, clock })
    election.on('error', (e) => errors.push(e))
    return { backend, election }
  }
  const holder = make()
  return { clock, store, errors, holder, waiters: Array.from({ length: waiters }, make) }
}

/** Starts each campaign once the one before it has its place (its first `waiting`). */
async function campaignInOrder(elections: Election[], signal?: AbortSignal) {
  const waits = new Map<Election, WaitingInfo[]>()
  const campaigns = []
  for (const e of elections) {
    const seen: WaitingInfo[] = []
    waits.set(e, seen)
    e.on('waiting', (info) => seen.push(info))
    const campaign = e.campaign({ signal })
    campaign.catch(() => {})
    campaigns.push(campaign)
    for (let i = 0; i < 20 && seen.length === 0; i++) await settle()
    expect(seen.length).toBeGreaterThan(0)
  }
  return { campaigns, waits }
}

describe('first come, first served in the core', () => {
  it('only the next in line asks at the holder’s expiry; the rest only keep their places', async () => {
    const { clock, holder, waiters, errors } = setup(3)
    const first = await holder.election.campaign()
    const { campaigns, waits } = await campaignInOrder(waiters.map((w) => w.election))
    expect(waiters.map((w) => waits.get(w.election)![0]!.ahead)).toEqual([0, 1, 2])
    expect(waits.get(waiters[1]!.election)![0]).toMatchObject({ code: 'held' })
    expect(waits.get(waiters[1]!.election)![0]!.reason).toMatch(/1 waiter ahead in line/)
    const asked = waiters.map((w) => w.backend.asks)
    await clock.advance(5000) // five leases while the holder renews
    expect(first.active).toBe(true)
    // The first waiter asks when the holder's grant could expire; the others never ask...
    expect(waiters[0]!.backend.asks).toBeGreaterThan(asked[0]!)
    expect(waiters[1]!.backend.asks).toBe(asked[1])
    expect(waiters[2]!.backend.asks).toBe(asked[2])
    // ...but keep their places in their renewal batches, every renewMs.
    for (const w of waiters.slice(1)) {
      const kept = w.backend.renewals.filter((batch) => batch.some((r) => r.queued))
      expect(kept.length).toBeGreaterThanOrEqual(10)
      expect(kept[0]).toEqual([
        { resource: RES, candidate: w.election.id, token: 0, leaseMs: 1000, queued: true },
      ])
    }
    // The holder resigns: only the first waiter is woken (and wins); the others stay quiet.
    await first.resign()
    await clock.advance(10)
    const t1 = await campaigns[0]!
    expect(waiters[1]!.backend.asks).toBe(asked[1])
    expect(waiters[2]!.backend.asks).toBe(asked[2])
    await t1.resign()
    await clock.advance(10)
    const t2 = await campaigns[1]!
    expect(t2.token).toBeGreaterThan(t1.token)
    expect(waiters[2]!.backend.asks).toBe(asked[2])
    await t2.resign()
    await clock.advance(10)
    expect((await campaigns[2]!).token).toBeGreaterThan(t2.token)
    // A winner leaves the batch: no queued renewal is sent for it any more.
    const sent = waiters[0]!.backend.renewals.length
    await clock.advance(1000)
    expect(waiters[0]!.backend.renewals.slice(sent).flat()).toEqual([])
    expect(errors).toEqual([])
    for (const w of [holder, ...waiters]) await w.election.close()
  })

  it('a waiter further back asks again within 16 leases when nothing ever tells it', async () => {
    const { clock, holder, waiters, errors } = setup(2)
    const first = await holder.election.campaign()
    const far = waiters[1]!
    // A backend whose view of the line went stale unseen: no push, and "place kept" forever.
    far.backend.mute = true
    far.backend.staleQueued = true
    const { campaigns } = await campaignInOrder(waiters.map((w) => w.election))
    const asked = far.backend.asks
    await clock.advance(15_000)
    expect(far.backend.asks).toBe(asked)
    await clock.advance(2_000)
    expect(far.backend.asks).toBeGreaterThan(asked)
    expect(first.active).toBe(true)
    expect(errors).toEqual([])
    for (const w of [holder, ...waiters]) await w.election.close()
    await Promise.allSettled(campaigns)
  })

  it('asks again when its queued renewal says so: a dead waiter ahead is skipped', async () => {
    const { clock, store, holder, waiters, errors } = setup(1)
    const w = waiters[0]!
    w.backend.mute = true // no push reaches it: only its renewal can tell it
    const first = await holder.election.campaign()
    // A waiter ahead that never keeps its place (its process died after asking).
    const dead = await store.acquire({
      resource: RES,
      candidate: 'dead',
      tickets: 1,
      leaseMs: 1000,
      metadata: null,
    })
    expect(dead).toMatchObject({ acquired: false, ahead: 0 })
    const { campaigns, waits } = await campaignInOrder([w.election])
    expect(waits.get(w.election)![0]!.ahead).toBe(1)
    await first.resign()
    await clock.advance(500)
    expect(w.election.isLeader).toBe(false) // the ticket is the dead waiter's turn
    const asked = w.backend.asks
    // The dead place expires 1000 ms after its ask; the next queued renewal says "ask again".
    await clock.advance(900)
    const term = await campaigns[0]!
    expect(term.active).toBe(true)
    expect(w.backend.asks).toBe(asked + 1)
    expect(errors).toEqual([])
    await holder.election.close()
    await w.election.close()
  })

  it('ignores a wake-up naming another waiter; the one named holds the grant pushed to it', async () => {
    const { clock, store, holder, waiters } = setup(2)
    const first = await holder.election.campaign()
    const { campaigns } = await campaignInOrder(waiters.map((w) => w.election))
    const asked = waiters.map((w) => w.backend.asks)
    // The holder's grant goes: the store hands it to the first waiter, and wakes only it.
    await store.release({ resource: RES, candidate: holder.election.id, token: first.token })
    await clock.advance(1)
    const t1 = await campaigns[0]!
    expect(waiters[0]!.backend.asks).toBe(asked[0])
    expect(waiters[1]!.backend.asks).toBe(asked[1])
    await t1.resign()
    await clock.advance(1)
    await campaigns[1]!
    // Neither asked again: each held the grant the release before it pushed.
    expect(waiters.map((w) => w.backend.asks)).toEqual(asked)
    for (const w of [holder, ...waiters]) await w.election.close()
  })

  it('reports a failed queued renewal and asks again after a backoff', async () => {
    const { clock, store, holder, waiters, errors } = setup(1)
    const w = waiters[0]!
    await holder.election.campaign()
    await store.acquire({
      resource: RES,
      candidate: 'ahead',
      tickets: 1,
      leaseMs: 60_000,
      metadata: null,
    })
    const { waits } = await campaignInOrder([w.election])
    expect(waits.get(w.election)![0]!.ahead).toBe(1)
    const asked = w.backend.asks
    w.backend.failRenew = true
    await clock.advance(300) // the first tick fails
    expect(errors.map((e) => e.message)).toEqual(['injected fault: renewals are cut'])
    await clock.advance(300) // within renewMs: the backoff's ask
    expect(w.backend.asks).toBeGreaterThan(asked)
    expect(waits.get(w.election)!.at(-1)!.ahead).toBe(1) // still behind, and still in line
    w.backend.failRenew = false
    for (const e of [holder.election, w.election]) await e.close()
  })

  it('says `queued` when the waiters ahead take the free tickets, and withdraws on abort', async () => {
    const { clock, store, holder, waiters } = setup(1)
    const w = waiters[0]!
    const first = await holder.election.campaign()
    await store.acquire({
      resource: RES,
      candidate: 'ahead',
      tickets: 1,
      leaseMs: 60_000,
      metadata: null,
    })
    await holder.election.resign()
    expect(first.active).toBe(false)
    const controller = new AbortController()
    const { campaigns, waits } = await campaignInOrder([w.election], controller.signal)
    expect(waits.get(w.election)![0]).toMatchObject({ code: 'queued', ahead: 1, holders: [] })
    expect(waits.get(w.election)![0]!.reason).toMatch(/1 waiter ahead in line/)
    controller.abort(new Error('gave up'))
    await expect(campaigns[0]!).rejects.toThrow('gave up')
    await clock.advance(1)
    // Its place is gone (a newcomer stands right behind `ahead`), and its renewals stopped.
    const late = await store.acquire({
      resource: RES,
      candidate: 'late',
      tickets: 1,
      leaseMs: 60_000,
      metadata: null,
    })
    expect(late).toMatchObject({ acquired: false, ahead: 1 })
    const sent = w.backend.renewals.length
    await clock.advance(1000)
    expect(w.backend.renewals.slice(sent).flat()).toEqual([])
    for (const e of [holder.election, w.election]) await e.close()
  })
})
