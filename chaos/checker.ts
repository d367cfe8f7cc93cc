/**
 * Reads the records of a chaos run and judges them. Invariants (any breach fails the run):
 * - at no instant more than `tickets` active terms, a term being active from its start until
 *   the earlier of its signal and its deadline (`term.active` reads the clock, so a holder knows
 *   by then), or until its process was SIGKILLed;
 * - no write accepted by the fence with a token below one it accepted before, and no fresh
 *   write refused;
 * - with one ticket, a term that starts after another ended carries a larger token;
 * - no grant left on the backend a lease after every candidate closed;
 * - at least one term.
 * Overlaps by signal time alone (a paused process cannot know its term is over; the fence must
 * catch it) are reported apart, split into those involving a paused or stalled process and
 * those caused by a late timer. Failover, leaderless time and write counts are reported, never
 * judged.
 */
import type {
  BlindRecord,
  ChaosRecords,
  FaultKind,
  FaultRecord,
  TermRecord,
  WriteRecord,
} from './records.js'

export interface Interval {
  proc: string
  token: number
  start: number
  end: number
}

export interface Overlap {
  start: number
  end: number
  count: number
  terms: { proc: string; token: number }[]
}

export interface FailoverStat {
  count: number
  /** Faults whose holder kept its term (nothing to fail over), or that hit no holder. */
  notMeasured: number
  /** Faults after which no new term started before the faults ended. */
  unrecovered: number
  medianMs: number | null
  maxMs: number | null
  medianLeases: number | null
  maxLeases: number | null
}

export interface FaultOutcome {
  kind: FaultKind
  variant?: string
  target?: string
  start: number
  /** ms from the fault to the next new term, or why not measured. */
  failoverMs: number | 'survived' | 'no-holder' | 'unrecovered'
}

export interface CheckReport {
  ok: boolean
  /** One line per broken invariant. */
  violations: string[]
  seed: number
  backend: string
  tickets: number
  leaseMs: number
  durationMs: number
  terms: number
  /** Most terms active at once (clamped at their deadlines): must be <= tickets. */
  maxActive: number
  overlaps: Overlap[]
  /** Most terms active at once counting each until its signal fired. */
  maxActiveBySignal: number
  signalOverlaps: {
    involvingBlind: { count: number; totalMs: number }
    lateSignal: { count: number; totalMs: number; worstMs: number }
  }
  writes: {
    total: number
    accepted: number
    rejected: number
    /** Refused writes of a process that was paused or stalled during that term: expected. */
    rejectedAfterBlind: number
    rejectedOther: number
  }
  staleAccepted: WriteRecord[]
  rejectedFresh: WriteRecord[]
  tokensOutOfOrder: { earlier: Interval; later: Interval }[]
  faults: Record<string, number>
  failover: Record<string, FailoverStat>
  faultOutcomes: FaultOutcome[]
  leaderlessMs: number
  leaderlessFraction: number
  leftBehind: { candidate: string; token: number }[]
  /** Grants the graceful close did not release at once (they expired within a lease). */
  heldAtClose: number
  candidateErrors: number
  harnessErrors: string[]
}

/** When each term's process stopped being able to act as its holder. */
export function termEnd(records: ChaosRecords, term: TermRecord): number {
  const proc = records.procs.find((p) => p.id === term.proc)
  const candidates = [term.end, proc?.killedAt, proc?.exitedAt, records.closingAt].filter(
    (t): t is number => t !== undefined,
  )
  return Math.min(...candidates)
}

/** Active intervals: from start until the earlier of the signal and the deadline. */
export function activeIntervals(records: ChaosRecords): Interval[] {
  return records.terms.map((term) => {
    const end = termEnd(records, term)
    const clamped = term.deadline === undefined ? end : Math.min(end, term.deadline)
    return {
      proc: term.proc,
      token: term.token,
      start: term.start,
      end: Math.max(term.start, clamped),
    }
  })
}

/** Intervals until the signal fired (or the process died). */
export function signalIntervals(records: ChaosRecords): Interval[] {
  return records.terms.map((term) => ({
    proc: term.proc,
    token: term.token,
    start: term.start,
    end: Math.max(term.start, termEnd(records, term)),
  }))
}

/** Sweeps the intervals; returns the most open at once and every stretch above `limit`. */
export function sweep(intervals: Interval[], limit: number): { max: number; above: Overlap[] } {
  const events: { t: number; delta: 1 | -1; i: number }[] = []
  intervals.forEach((interval, i) => {
    if (interval.end <= interval.start) return
    events.push({ t: interval.start, delta: 1, i }, { t: interval.end, delta: -1, i })
  })
  // At one instant, ends before starts: a term that ends when another starts is no overlap.
  events.sort((a, b) => a.t - b.t || a.delta - b.delta)
  const open = new Set<number>()
  let max = 0
  const above: Overlap[] = []
  let current: Overlap | undefined
  for (const event of events) {
    if (event.delta === 1) open.add(event.i)
    else open.delete(event.i)
    max = Math.max(max, open.size)
    if (open.size > limit) {
      const terms = [...open].map((i) => ({ proc: intervals[i]!.proc, token: intervals[i]!.token }))
      if (current) current.end = event.t
      current = { start: event.t, end: event.t, count: open.size, terms }
      above.push(current)
    } else if (current) {
      current.end = event.t
      current = undefined
    }
  }
  return { max, above: above.filter((o) => o.end > o.start) }
}

function blindDuring(blind: BlindRecord[], proc: string, start: number, end: number): boolean {
  return blind.some((b) => b.proc === proc && b.start <= end && b.end >= start)
}

function median(values: number[]): number | null {
  if (values.length === 0) return null
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

function failoverOf(
  records: ChaosRecords,
  active: Interval[],
  fault: FaultRecord,
): FaultOutcome['failoverMs'] {
  const held = active.filter(
    (t) =>
      t.start <= fault.start &&
      t.end >= fault.start &&
      (fault.target === undefined || t.proc === fault.target),
  )
  if (held.length === 0) return 'no-holder'
  // A holder whose term outlived the fault had nothing to fail over.
  if (held.every((t) => t.end >= fault.end)) return 'survived'
  const oldTokens = new Set(held.map((t) => t.token))
  const next = active
    .filter((t) => t.start > fault.start && !oldTokens.has(t.token) && t.start <= records.closingAt)
    .sort((a, b) => a.start - b.start)[0]
  return next ? next.start - fault.start : 'unrecovered'
}

export function check(records: ChaosRecords): CheckReport {
  const { tickets, leaseMs } = records.config
  const violations: string[] = []
  const active = activeIntervals(records)
  const bySignal = signalIntervals(records)

  const activeSweep = sweep(active, tickets)
  if (activeSweep.max > tickets) {
    const total = activeSweep.above.reduce((sum, o) => sum + (o.end - o.start), 0)
    const first = activeSweep.above[0]
    violations.push(
      `${activeSweep.max} terms active at once (tickets ${tickets}) over ${total.toFixed(1)} ms in ${activeSweep.above.length} stretch(es)` +
        (first
          ? `; first at +${(first.start - records.startedAt).toFixed(1)} ms: ${first.terms.map((t) => `${t.proc}#${t.token}`).join(', ')}`
          : ''),
    )
  }

  const signalSweep = sweep(bySignal, tickets)
  const signalOverlaps = {
    involvingBlind: { count: 0, totalMs: 0 },
    lateSignal: { count: 0, totalMs: 0, worstMs: 0 },
  }
  for (const overlap of signalSweep.above) {
    const ms = overlap.end - overlap.start
    const blind = overlap.terms.some((t) => {
      const term = bySignal.find((i) => i.proc === t.proc && i.token === t.token)
      return term && blindDuring(records.blind, t.proc, term.start, overlap.end)
    })
    if (blind) {
      signalOverlaps.involvingBlind.count++
      signalOverlaps.involvingBlind.totalMs += ms
    } else {
      signalOverlaps.lateSignal.count++
      signalOverlaps.lateSignal.totalMs += ms
      signalOverlaps.lateSignal.worstMs = Math.max(signalOverlaps.lateSignal.worstMs, ms)
    }
  }

  // Replay the fence's decisions in the order it made them.
  const writes = [...records.writes].sort((a, b) => a.seq - b.seq)
  const staleAccepted: WriteRecord[] = []
  const rejectedFresh: WriteRecord[] = []
  let highest = 0
  let rejectedAfterBlind = 0
  for (const write of writes) {
    if (write.accepted) {
      if (write.token < highest) staleAccepted.push(write)
      highest = Math.max(highest, write.token)
    } else {
      if (write.token >= highest) rejectedFresh.push(write)
      const term = records.terms.find((t) => t.proc === write.proc && t.token === write.token)
      if (blindDuring(records.blind, write.proc, term?.start ?? write.checkedAt, write.at)) {
        rejectedAfterBlind++
      }
    }
  }
  if (staleAccepted.length > 0) {
    const w = staleAccepted[0]!
    violations.push(
      `${staleAccepted.length} stale write(s) accepted by the fence; first: seq ${w.seq} from ${w.proc} with token ${w.token} after a higher one`,
    )
  }
  if (rejectedFresh.length > 0) {
    const w = rejectedFresh[0]!
    violations.push(
      `${rejectedFresh.length} fresh write(s) refused by the fence; first: seq ${w.seq} from ${w.proc} with token ${w.token}`,
    )
  }

  // With one ticket, grants are sequential: a term starting after another ended has a larger
  // token. Skipped: empty terms, and terms whose process was blind just before it learned.
  const tokensOutOfOrder: CheckReport['tokensOutOfOrder'] = []
  if (tickets === 1) {
    const real = active.filter((t) => t.end > t.start)
    for (const later of real) {
      if (blindDuring(records.blind, later.proc, later.start - leaseMs, later.start)) continue
      for (const earlier of real) {
        if (earlier.end > later.start) continue
        if (earlier.proc === later.proc && earlier.token === later.token) continue
        if (later.token <= earlier.token) tokensOutOfOrder.push({ earlier, later })
      }
    }
    if (tokensOutOfOrder.length > 0) {
      const { earlier, later } = tokensOutOfOrder[0]!
      violations.push(
        `${tokensOutOfOrder.length} term(s) with a token not above an earlier term's: ${later.proc}#${later.token} started after ${earlier.proc}#${earlier.token} ended`,
      )
    }
  }

  if (records.leftBehind.length > 0) {
    violations.push(
      `${records.leftBehind.length} grant(s) left on the backend a lease after every candidate closed: ${records.leftBehind.map((h) => `${h.candidate}#${h.token}`).join(', ')}`,
    )
  }
  if (records.terms.length === 0) violations.push('no term was ever won')

  const faults: Record<string, number> = {}
  const failover: Record<string, FailoverStat> = {}
  const faultOutcomes: FaultOutcome[] = []
  const measured: Record<string, number[]> = {}
  for (const fault of records.faults) {
    faults[fault.kind] = (faults[fault.kind] ?? 0) + 1
    const failoverMs = failoverOf(records, active, fault)
    faultOutcomes.push({
      kind: fault.kind,
      ...(fault.variant ? { variant: fault.variant } : {}),
      ...(fault.target ? { target: fault.target } : {}),
      start: fault.start,
      failoverMs,
    })
    const stat = (failover[fault.kind] ??= {
      count: 0,
      notMeasured: 0,
      unrecovered: 0,
      medianMs: null,
      maxMs: null,
      medianLeases: null,
      maxLeases: null,
    })
    stat.count++
    if (typeof failoverMs === 'number') (measured[fault.kind] ??= []).push(failoverMs)
    else if (failoverMs === 'unrecovered') stat.unrecovered++
    else stat.notMeasured++
  }
  const all: number[] = []
  for (const [kind, values] of Object.entries(measured)) {
    const stat = failover[kind]!
    stat.medianMs = median(values)
    stat.maxMs = Math.max(...values)
    stat.medianLeases = stat.medianMs! / leaseMs
    stat.maxLeases = stat.maxMs / leaseMs
    all.push(...values)
  }
  if (records.faults.length > 0) {
    failover.all = {
      count: records.faults.length,
      notMeasured: Object.values(failover).reduce((s, f) => s + f.notMeasured, 0),
      unrecovered: Object.values(failover).reduce((s, f) => s + f.unrecovered, 0),
      medianMs: median(all),
      maxMs: all.length ? Math.max(...all) : null,
      medianLeases: all.length ? median(all)! / leaseMs : null,
      maxLeases: all.length ? Math.max(...all) / leaseMs : null,
    }
  }

  // Leaderless: from the first term on, the time no term was active, until the close began.
  const firstStart = Math.min(...active.map((t) => t.start))
  let leaderlessMs = 0
  if (Number.isFinite(firstStart)) {
    const spans = active
      .map((t) => ({
        start: Math.max(t.start, firstStart),
        end: Math.min(t.end, records.closingAt),
      }))
      .filter((s) => s.end > s.start)
      .sort((a, b) => a.start - b.start)
    let cursor = firstStart
    for (const span of spans) {
      if (span.start > cursor) leaderlessMs += span.start - cursor
      cursor = Math.max(cursor, span.end)
    }
    if (records.closingAt > cursor) leaderlessMs += records.closingAt - cursor
  }
  const window = Number.isFinite(firstStart) ? records.closingAt - firstStart : 0

  return {
    ok: violations.length === 0,
    violations,
    seed: records.config.seed,
    backend: records.config.backend,
    tickets,
    leaseMs,
    durationMs: records.endedAt - records.startedAt,
    terms: records.terms.length,
    maxActive: activeSweep.max,
    overlaps: activeSweep.above,
    maxActiveBySignal: signalSweep.max,
    signalOverlaps,
    writes: {
      total: writes.length,
      accepted: writes.filter((w) => w.accepted).length,
      rejected: writes.filter((w) => !w.accepted).length,
      rejectedAfterBlind,
      rejectedOther: writes.filter((w) => !w.accepted).length - rejectedAfterBlind,
    },
    staleAccepted,
    rejectedFresh,
    tokensOutOfOrder,
    faults,
    failover,
    faultOutcomes,
    leaderlessMs,
    leaderlessFraction: window > 0 ? leaderlessMs / window : 0,
    leftBehind: records.leftBehind,
    heldAtClose: records.heldAtClose.length,
    candidateErrors: Object.values(records.candidateErrors).reduce((s, n) => s + n, 0),
    harnessErrors: records.harnessErrors,
  }
}
