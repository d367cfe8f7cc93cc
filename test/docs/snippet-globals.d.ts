// The names the README's and docs' TypeScript blocks use without defining them: the reader's
// own code (a logger, a queue, the work to do) and values an earlier block of the same page
// made. test/docs/snippets.test.ts type-checks each block with these in scope.
import type { ServerResponse } from 'node:http'
import type { Redis } from 'ioredis'
import type { Backend, Closable, Election } from 'conclave'

/** What the examples' work functions take. */
interface Work {
  signal: AbortSignal
  fencingToken?: number
  token?: number
  /** A cron fire's time (docs/cron.md). */
  day?: Date
}

declare global {
  // The reader's logger.
  const log: {
    info(...args: unknown[]): void
    warn(...args: unknown[]): void
    error(...args: unknown[]): void
  }
  // Made by an earlier block, or by the reader's setup.
  const backend: Backend
  const election: Election
  const otherElection: Election
  const mailer: Closable
  const signal: AbortSignal
  const redis: Redis
  const res: ServerResponse
  // The reader's work.
  const batches: unknown[]
  function write(batch: unknown, options: { token: number; signal: AbortSignal }): Promise<void>
  function nightlyReport(work: Work): Promise<void>
  function runReports(work: Work): Promise<void>
  function buildReport(options: Work): Promise<unknown>
  // The reader's report builder (the cron pages).
  const reports: { build(work: Work): Promise<void> }
  function compactIndexes(work: Work): Promise<void>
  function purgeExpired(work: Work): Promise<void>
  const queue: { consume(work: Work): Promise<void>; drain(): Promise<void> }
}
export {}
