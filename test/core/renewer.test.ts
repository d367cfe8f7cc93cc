// The renewal batch (src/renewer.ts) on the memory store and a manual clock: one tick per
// cadence for every member, and a member that joins with a due time (a grant handed on with
// less than a lease left) moves the next tick up to it, whether the batch idles or is mid-tick.
import { describe, expect, it } from 'vitest'
import type { Backend } from '../../src/backend.js'
import { MemoryBackend } from '../../src/backends/memory.js'
import { joinRenewals, type RenewalMember } from '../../src/renewer.js'
import { Faulty } from '../conformance/suite.js'
import { ManualClock, settle } from '../helpers/manual-clock.js'

const RENEW_MS = 300

/** A path to the store whose renewals are recorded (send time) and can be held up. */
class Renewals extends Faulty {
  sentAt: number[] = []
  hold: Promise<void> | undefined
  constructor(
    inner: Backend,
    readonly clock: ManualClock,
  ) {
    super(inner)
  }
  override async renew(...a: Parameters<Backend['renew']>) {
    this.sentAt.push(this.clock.now())
    await this.hold
    return super.renew(...a)
  }
}

async function setup() {
  const clock = new ManualClock()
  const store = new MemoryBackend({ clock })
  const path = new Renewals(store.handle(), clock)
  const member = async (resource: string) => {
    const result = await path.acquire({
      resource,
      candidate: 'c',
      tickets: 1,
      leaseMs: 1000,
      metadata: null,
    })
    if (!result.acquired) throw new Error('expected a grant')
    const renewedAt: number[] = []
    const m: RenewalMember = {
      request: { resource, candidate: 'c', token: result.token, leaseMs: 1000 },
      ended: false,
      renewed: (sentAt) => renewedAt.push(sentAt),
      lost: () => renewedAt.push(-1),
      failed: () => renewedAt.push(-2),
    }
    return { m, renewedAt }
  }
  return { clock, path, member }
}

describe('the renewal batch', () => {
  it('renews every member in one call per tick, a cadence apart', async () => {
    const { clock, path, member } = await setup()
    const a = await member('r/a')
    const b = await member('r/b')
    const leaveA = joinRenewals(path, clock, RENEW_MS, 100, a.m)
    await clock.advance(100)
    const leaveB = joinRenewals(path, clock, RENEW_MS, 100, b.m)
    await clock.advance(2 * RENEW_MS)
    expect(path.sentAt).toEqual([1300, 1600])
    expect(a.renewedAt).toEqual([1300, 1600])
    expect(b.renewedAt).toEqual([1300, 1600])
    leaveA()
    leaveB()
    expect(clock.pending).toBe(0)
  })

  it('a member due before the next tick brings that tick forward to its due time', async () => {
    const { clock, path, member } = await setup()
    const a = await member('r/a')
    const handed = await member('r/handed')
    const leaveA = joinRenewals(path, clock, RENEW_MS, 100, a.m)
    await clock.advance(50)
    // Due at 1100, before the tick at 1300: the tick comes at 1100, then a cadence later.
    const leaveH = joinRenewals(path, clock, RENEW_MS, 100, handed.m, 1100)
    await clock.advance(RENEW_MS + 100)
    expect(path.sentAt).toEqual([1100, 1400])
    expect(handed.renewedAt).toEqual([1100, 1400])
    // One due after the next tick changes nothing.
    const later = await member('r/later')
    const leaveL = joinRenewals(path, clock, RENEW_MS, 100, later.m, 1800)
    await clock.advance(RENEW_MS)
    expect(path.sentAt).toEqual([1100, 1400, 1700])
    // One due in the past: at once.
    const past = await member('r/past')
    const leaveP = joinRenewals(path, clock, RENEW_MS, 100, past.m, 0)
    await clock.advance(0)
    expect(path.sentAt).toEqual([1100, 1400, 1700, 1750])
    for (const leave of [leaveA, leaveH, leaveL, leaveP]) leave()
    expect(clock.pending).toBe(0)
  })

  it('a member due while a tick is out gets the next tick by its due time, not a cadence later', async () => {
    const { clock, path, member } = await setup()
    const a = await member('r/a')
    const handed = await member('r/handed')
    const leaveA = joinRenewals(path, clock, RENEW_MS, 100, a.m)
    let answer!: () => void
    path.hold = new Promise((resolve) => (answer = resolve))
    await clock.advance(RENEW_MS) // the tick at 1300 is out, unanswered
    expect(path.sentAt).toEqual([1300])
    const leaveH = joinRenewals(path, clock, RENEW_MS, 100, handed.m, 1350)
    await clock.advance(40)
    path.hold = undefined
    answer()
    await settle()
    // Answered at 1340: the next tick goes at 1350 (its due time), not at 1600.
    await clock.advance(10)
    expect(path.sentAt).toEqual([1300, 1350])
    expect(handed.renewedAt).toEqual([1350])
    leaveA()
    leaveH()
    expect(clock.pending).toBe(0)
  })
})
