// conclave/cluster across real forked workers: every call crosses node:cluster IPC, holders are
// workers of their own and a crash is a SIGKILLed worker.
import { fileURLToPath } from 'node:url'
import { electionScenarios } from '../scenarios.js'
import { defineSuite, hosted } from '../suite.js'

const host = fileURLToPath(new URL('../subjects/cluster-host.ts', import.meta.url))

/** The cluster suite: conclave/cluster × the election scenarios, in a forked cluster app. */
export default defineSuite({
  name: 'cluster',
  scenarios: electionScenarios,
  async setup() {
    return { subjects: [hosted(host, ['conclave/cluster'])], teardown: async () => {} }
  },
})
