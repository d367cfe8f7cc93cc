// `npm run sim -- --runs 100000 [--seed N] [--path P]`: the simulation's long mode. Prints
// progress, runs per second and, on failure, the seed and path that replay it.
import fc from 'fast-check'
import { parseArgs } from 'node:util'
import { runScenario, type Scenario, simStats, simulationProperty } from './simulation.js'

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '10000' },
    seed: { type: 'string' },
    path: { type: 'string' },
  },
})
const runs = Number(values.runs)
if (!Number.isInteger(runs) || runs < 1) {
  console.error(`sim: Invalid --runs: ${values.runs}. --runs is a positive integer.`)
  process.exit(2)
}
const started = performance.now()
let done = 0
const progress = setInterval(() => {
  const secs = (performance.now() - started) / 1000
  console.log(`sim: ${done}/${runs} runs, ${(done / secs).toFixed(0)} runs/s`)
}, 10_000)
progress.unref()
const property = simulationProperty.beforeEach(async (previous) => {
  done++
  await previous()
})
const result = await fc.check(property, {
  numRuns: runs,
  ...(values.seed === undefined ? {} : { seed: Number(values.seed) }),
  ...(values.path === undefined ? {} : { path: values.path }),
})
const secs = (performance.now() - started) / 1000
console.log(
  `sim: ${simStats.terms} terms, ${simStats.pushedTerms} of them took a grant a release pushed`,
)
console.log(
  `sim: ${result.numRuns} runs in ${secs.toFixed(1)} s (${(result.numRuns / secs).toFixed(0)} runs/s)`,
)
if (result.failed) {
  console.error(fc.defaultReportMessage(result))
  console.error(
    `sim: violated: ${(result.errorInstance as Error | undefined)?.message ?? String(result.errorInstance)}`,
  )
  // The shrunk counterexample once more, with a trace of every action and event.
  const [scenario] = result.counterexample as [Scenario]
  console.error('sim: the counterexample, traced:')
  await runScenario(scenario, (line) => console.error(`  ${line}`)).catch(() => {})
  process.exit(1)
}
console.log('sim: every invariant held')
