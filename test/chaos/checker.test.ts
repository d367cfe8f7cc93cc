// The checker on hand-made records: each invariant it claims to check must catch a breach.
import { describe, expect, it } from 'vitest'
import { check } from '../../chaos/checker.js'
import type { ChaosRecords, TermRecord, WriteRecord } from '../../chaos/records.js'

function records(parts: Partial<ChaosRecords> & { tickets?: number } = {}): ChaosRecords {
  const { tickets = 1, ...rest } = parts
  return {
    config: {
      backend: 'test',
      seed: 1,
      seconds: 10,
      procs: 3,
      tickets,
      leaseMs: 1_000,
      workMs: 100,
      faults: ['kill', 'pause'],
      resource: 'chaos/test',
    },
    startedAt: 0,
    faultsEndedAt: 9_000,
    closingAt: 10_000,
    endedAt: 10_500,
    procs: ['a', 'b', 'c'].map((id, i) => ({ id, pid: 100 + i, spawnedAt: 0, exitedAt: 10_100 })),
    terms: [],
    writes: [],
    faults: [],
    blind: [],
    heldAtClose: [],
    leftBehind: [],
    candidateErrors: {},
    harnessErrors: [],
    ...rest,
  }
}

const term = (proc: string, token: number, start: number, end: number, deadline = end + 50) =>
  ({ proc, token, start, end, deadline, reason: 'expired' }) satisfies TermRecord

let seq = 0
const write = (proc: string, token: number, at: number, accepted: boolean): WriteRecord => ({
  seq: ++seq,
  proc,
  token,
  checkedAt: at - 100,
  at,
  accepted,
  highest: token,
})

describe('chaos checker', () => {
  it('passes a clean run: sequential terms, growing tokens, monotonic fence', () => {
    const report = check(
      records({
        terms: [term('a', 1, 100, 3_000), term('b', 2, 3_100, 6_000), term('c', 3, 6_200, 10_000)],
        writes: [write('a', 1, 500, true), write('b', 2, 3_500, true), write('c', 3, 7_000, true)],
      }),
    )
    expect(report.violations).toEqual([])
    expect(report.ok).toBe(true)
    expect(report.maxActive).toBe(1)
    expect(report.terms).toBe(3)
    // Gaps: 3000..3100 and 6000..6200.
    expect(report.leaderlessMs).toBeCloseTo(300)
  })

  it('detects two active terms at once (tickets 1) and where', () => {
    const report = check(records({ terms: [term('a', 1, 100, 3_000), term('b', 2, 2_500, 6_000)] }))
    expect(report.ok).toBe(false)
    expect(report.maxActive).toBe(2)
    expect(report.overlaps).toEqual([
      {
        start: 2_500,
        end: 3_000,
        count: 2,
        terms: [
          { proc: 'a', token: 1 },
          { proc: 'b', token: 2 },
        ],
      },
    ])
    expect(report.violations.join('\n')).toMatch(/2 terms active at once \(tickets 1\)/)
  })

  it('counts a term until its deadline when its signal fired late, and reports the rest apart', () => {
    // a was paused from 500 to 4000: its deadline (1000) passed, its signal fired at 4010.
    const report = check(
      records({
        terms: [term('a', 1, 100, 4_010, 1_000), term('b', 2, 1_100, 6_000)],
        blind: [{ proc: 'a', kind: 'pause', start: 500, end: 4_000 }],
        writes: [write('b', 2, 1_300, true), write('a', 1, 4_005, false)],
      }),
    )
    expect(report.violations).toEqual([])
    expect(report.maxActive).toBe(1)
    expect(report.maxActiveBySignal).toBe(2)
    expect(report.signalOverlaps.involvingBlind).toEqual({ count: 1, totalMs: 2_910 })
    expect(report.signalOverlaps.lateSignal.count).toBe(0)
    expect(report.writes).toMatchObject({ rejected: 1, rejectedAfterBlind: 1, rejectedOther: 0 })
  })

  it('reports a late signal of a process that was never paused as a late timer', () => {
    const report = check(
      records({ terms: [term('a', 1, 100, 1_200, 1_000), term('b', 2, 1_100, 6_000)] }),
    )
    expect(report.ok).toBe(true)
    expect(report.signalOverlaps.lateSignal).toEqual({ count: 1, totalMs: 100, worstMs: 100 })
  })

  it('detects a stale write the fence accepted, and a fresh one it refused', () => {
    const stale = check(
      records({
        terms: [term('a', 1, 100, 3_000), term('b', 2, 3_100, 6_000)],
        writes: [write('b', 2, 3_500, true), write('a', 1, 3_600, true)],
      }),
    )
    expect(stale.ok).toBe(false)
    expect(stale.staleAccepted.map((w) => w.token)).toEqual([1])
    expect(stale.violations.join('\n')).toMatch(/1 stale write\(s\) accepted/)

    const refused = check(
      records({
        terms: [term('a', 1, 100, 3_000)],
        writes: [write('a', 1, 500, true), write('a', 1, 600, false)],
      }),
    )
    expect(refused.ok).toBe(false)
    expect(refused.rejectedFresh).toHaveLength(1)
  })

  it('detects a term whose token is not above an earlier term', () => {
    const report = check(records({ terms: [term('a', 5, 100, 3_000), term('b', 4, 3_100, 6_000)] }))
    expect(report.ok).toBe(false)
    expect(report.tokensOutOfOrder).toHaveLength(1)
    // The same candidate winning its own grant back keeps its token: no breach.
    const again = check(records({ terms: [term('a', 5, 100, 3_000), term('a', 5, 3_100, 6_000)] }))
    expect(again.tokensOutOfOrder).toEqual([])
  })

  it('detects a grant left behind and a run without any term', () => {
    const left = check(
      records({ terms: [term('a', 1, 100, 3_000)], leftBehind: [{ candidate: 'a', token: 1 }] }),
    )
    expect(left.violations.join('\n')).toMatch(/1 grant\(s\) left on the backend/)
    expect(check(records()).violations).toEqual(['no term was ever won'])
  })

  it('ends a killed holder term at the kill and measures the failover from it', () => {
    const r = records({
      terms: [{ proc: 'a', token: 1, start: 100 }, term('b', 2, 2_100, 6_000)],
      faults: [{ kind: 'kill', target: 'a', start: 2_000, end: 2_020 }],
    })
    r.procs[0]!.killedAt = 2_000
    r.procs[0]!.exitedAt = 2_020
    const report = check(r)
    expect(report.violations).toEqual([])
    expect(report.faultOutcomes).toEqual([
      { kind: 'kill', target: 'a', start: 2_000, failoverMs: 100 },
    ])
    expect(report.failover.kill).toMatchObject({ count: 1, medianMs: 100, medianLeases: 0.1 })
  })

  it('allows tickets holders at once and no more', () => {
    const two = [term('a', 1, 100, 5_000), term('b', 2, 200, 5_000)]
    expect(check(records({ tickets: 2, terms: two })).ok).toBe(true)
    const three = check(records({ tickets: 2, terms: [...two, term('c', 3, 300, 400)] }))
    expect(three.ok).toBe(false)
    expect(three.maxActive).toBe(3)
  })
})
