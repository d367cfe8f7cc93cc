/**
 * What a chaos run records, shared by the harness, the candidates, the checker and the report.
 * Every time is in milliseconds on one host-wide clock: `performance.timeOrigin +
 * performance.now()` (monotonic within a process, comparable across the processes of a host).
 */

export const FAULT_KINDS = ['kill', 'pause', 'stall', 'partition', 'restart'] as const
export type FaultKind = (typeof FAULT_KINDS)[number]

/** The host-wide clock every record uses. */
export function now(): number {
  return performance.timeOrigin + performance.now()
}

export interface RunConfig {
  backend: string
  seed: number
  seconds: number
  procs: number
  tickets: number
  leaseMs: number
  /** How long a leader's write takes from its `term.active` check to landing at the fence. */
  workMs: number
  faults: FaultKind[]
  resource: string
}

export interface ProcRecord {
  /** The candidate id (also the lane in the timeline). */
  id: string
  pid: number
  spawnedAt: number
  /** When it was ready (its backend made, campaigning). */
  readyAt?: number
  exitedAt?: number
  /** Set when the harness SIGKILLed it. */
  killedAt?: number
  exit?: { code: number | null; signal: string | null }
}

export interface TermRecord {
  proc: string
  token: number
  /** When the candidate learned it won (its `elected` event). */
  start: number
  /** When the term's signal fired (its `revoked` event); undefined if it never did. */
  end?: number
  /** The term's deadline (host clock) when its signal fired. */
  deadline?: number
  reason?: string
}

export interface WriteRecord {
  /** Order of arrival at the fence (the referee). */
  seq: number
  proc: string
  token: number
  /** When the candidate checked `term.active` and started the write. */
  checkedAt: number
  /** When the fence decided. */
  at: number
  accepted: boolean
  /** The highest token the fence had seen after deciding. */
  highest: number
}

export interface FaultRecord {
  kind: FaultKind
  /** partition: reset, blackhole or delay; restart: the server. */
  variant?: string
  /** The candidate hit (none for restart). */
  target?: string
  start: number
  end: number
  /** Planned length, in leases. */
  leases?: number
}

/** An interval during which a process could not act or know (SIGSTOP, a blocked event loop). */
export interface BlindRecord {
  proc: string
  kind: 'pause' | 'stall'
  start: number
  end: number
}

export interface ChaosRecords {
  config: RunConfig
  startedAt: number
  /** When fault injection stopped (the quiet tail before the graceful close starts). */
  faultsEndedAt: number
  /** When the graceful close started: terms still open then are cut here. */
  closingAt: number
  endedAt: number
  procs: ProcRecord[]
  terms: TermRecord[]
  writes: WriteRecord[]
  faults: FaultRecord[]
  blind: BlindRecord[]
  /** Holders the backend listed right after every candidate closed gracefully. */
  heldAtClose: { candidate: string; token: number }[]
  /** Holders it still listed a lease later: grants that outlived their lease. */
  leftBehind: { candidate: string; token: number }[]
  /** Backend errors the candidates reported, counted per message. */
  candidateErrors: Record<string, number>
  /** Problems of the harness itself (a candidate that would not close, ...). */
  harnessErrors: string[]
}

// The candidates speak testkit/candidate.ts's protocol (IPC messages marked `kit: 1`).
export type { CandidateMessage, ParentMessage as HarnessMessage } from '../testkit/candidate.js'
export { isKitMessage as isChaosMessage } from '../testkit/candidate.js'
