import { defineConfig } from 'vitest/config'

/**
 * Files of pure logic: no server, no child process that takes part in an election, no real
 * timer in an assertion (the manual clock, type checks, parsers). They run 2 at a time in
 * worker threads, first; everything else runs after them in forks (node:cluster and signals
 * need processes), one file at a time on a small machine: faults and leases stay unshared.
 */
const PURE = [
  'test/agent/units.test.ts',
  'test/chaos/checker.test.ts',
  'test/cli/backends.test.ts',
  'test/cli/report.test.ts',
  'test/core/election.test.ts',
  'test/core/fcfs.test.ts',
  'test/core/races.test.ts',
  'test/docs/api-reference.test.ts',
  'test/docs/error-codes.test.ts',
  'test/docs/snippets.test.ts',
  'test/fence/memory.test.ts',
  'test/postgres/sql.test.ts',
  'test/redis/scripts.test.ts',
  'test/redis/sentinel-url.test.ts',
  'test/schedule/schedule.test.ts',
  'test/sim/sim.test.ts',
  'test/validate/options.test.ts',
]

export default defineConfig({
  test: {
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: ['default', './test/helpers/summary-reporter.ts'],
    setupFiles: ['test/helpers/fail-on-unhandled.ts'],
    poolOptions: { threads: { maxThreads: 2, minThreads: 1 } },
    projects: [
      {
        extends: true,
        test: {
          name: 'pure',
          include: PURE,
          pool: 'threads',
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: 'servers',
          include: ['test/**/*.test.ts'],
          exclude: PURE,
          // Real processes and servers: forks, not threads, so node:cluster and signals behave.
          pool: 'forks',
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
})
