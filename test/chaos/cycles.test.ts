// The orphan check, short: acquire / abort / crash cycles on every registered backend leave no
// grant behind once a lease has passed, and a newcomer wins every resource at once.
// (chaos/cycles.ts runs the full 10,000 cycles.)
import { describe, it } from 'vitest'
import { CHAOS_BACKENDS } from '../../chaos/backends.js'
import { runCycles } from '../../chaos/cycles.js'
import { lanes } from '../helpers/lanes.js'

// Three backends at a time: each run starts its own server and works on resources of its own
// (most of a run is its server's start and the lease it waits out at the end). The cluster and
// local runs are the only users of this process's hub of each kind.
const runLanes = lanes(3)

describe.concurrent('acquire / abort / crash cycles', () => {
  for (const backend of Object.keys(CHAOS_BACKENDS)) {
    const lane = runLanes.pick()
    it(
      `${backend}: no orphaned grant after 300 cycles`,
      ({ expect }) =>
        runLanes.run(lane, async () => {
          const result = await runCycles({ backend, cycles: 300, seed: 7, resources: 10 })
          expect(result.orphans).toEqual([])
          expect(result.blocked).toEqual([])
          // The cycles did what they claim: wins, aborts and crashes while holding all happened.
          expect(result.counts.acquired).toBeGreaterThan(0)
          expect(result.counts.aborted + result.counts.timedOut).toBeGreaterThan(0)
          expect(result.counts.crashed).toBeGreaterThan(0)
        }),
      // The runs ahead in its lane, then its own.
      240_000,
    )
  }
})
