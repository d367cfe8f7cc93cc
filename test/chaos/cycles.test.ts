// The orphan check, short: acquire / abort / crash cycles on every registered backend leave no
// grant behind once a lease has passed, and a newcomer wins every resource at once.
// (chaos/cycles.ts runs the full 10,000 cycles.)
import { describe, expect, it } from 'vitest'
import { CHAOS_BACKENDS } from '../../chaos/backends.js'
import { runCycles } from '../../chaos/cycles.js'

describe('acquire / abort / crash cycles', () => {
  for (const backend of Object.keys(CHAOS_BACKENDS)) {
    it(`${backend}: no orphaned grant after 300 cycles`, async () => {
      const result = await runCycles({ backend, cycles: 300, seed: 7, resources: 10 })
      expect(result.orphans).toEqual([])
      expect(result.blocked).toEqual([])
      // The cycles did what they claim: wins, aborts and crashes while holding all happened.
      expect(result.counts.acquired).toBeGreaterThan(0)
      expect(result.counts.aborted + result.counts.timedOut).toBeGreaterThan(0)
      expect(result.counts.crashed).toBeGreaterThan(0)
    }, 120_000)
  }
})
