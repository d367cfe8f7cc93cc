import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Real processes and servers: forks, not threads, so node:cluster and signals behave.
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: ['default', './test/helpers/summary-reporter.ts'],
    setupFiles: ['test/helpers/fail-on-unhandled.ts'],
  },
})
