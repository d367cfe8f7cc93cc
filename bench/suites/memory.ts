// conclave/memory alone, in this process: the floor every backend's rows are read against.
import { electionScenarios } from '../scenarios.js'
import { defineSuite } from '../suite.js'
import { memorySubject } from '../subjects/memory.js'

/** The memory suite: conclave/memory × the election scenarios. */
export default defineSuite({
  name: 'memory',
  scenarios: electionScenarios,
  async setup() {
    return {
      subjects: [{ name: 'conclave/memory', open: memorySubject }],
      teardown: async () => {},
    }
  },
})
