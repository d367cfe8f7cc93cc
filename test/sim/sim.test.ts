// The deterministic simulation, short run: 1,000 schedules inside `npm test` (`npm run sim`, 10,000 by
// default, or SIM_RUNS=N here, runs it longer). A failure
// prints the seed and path; replay with SIM_SEED=... SIM_PATH=... npx vitest run test/sim.
import fc from 'fast-check'
import { expect, it } from 'vitest'
import { simStats, simulationProperty } from './simulation.js'

const runs = Number(process.env.SIM_RUNS ?? 1000)

it(`keeps every invariant over ${runs} random schedules of API calls and faults`, async () => {
  const seed = process.env.SIM_SEED === undefined ? undefined : Number(process.env.SIM_SEED)
  const path = process.env.SIM_PATH
  const result = await fc.check(simulationProperty, {
    numRuns: runs,
    ...(seed === undefined ? {} : { seed }),
    ...(path === undefined ? {} : { path }),
  })
  expect(result.failed ? fc.defaultReportMessage(result) : 'all runs passed').toBe(
    'all runs passed',
  )
  // The pushed handoff is exercised: some terms took a grant a release handed them.
  if (seed === undefined && runs >= 100) expect(simStats.pushedTerms).toBeGreaterThan(0)
}, 600_000)
