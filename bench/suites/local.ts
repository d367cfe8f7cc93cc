// conclave/local across real processes: the hub is a separate process, the candidates talk to it
// over its unix socket, holders are processes of their own; plus the crash of the hub itself.
// Read beside the memory and cluster suites (`npm run bench -- --only memory,cluster,local`).
import { makeTempDir, removeDir } from '../../testkit/process.js'
import { electionScenarios, hubCrash } from '../scenarios.js'
import { localSubject } from '../subjects/local.js'
import { defineSuite } from '../suite.js'

/** The local suite: conclave/local × the election scenarios and the hub crash. */
export default defineSuite({
  name: 'local',
  scenarios: [...electionScenarios, hubCrash],
  async setup() {
    const dir = makeTempDir('bench-local')
    return {
      subjects: [{ name: 'conclave/local', open: () => localSubject(dir) }],
      teardown: () => removeDir(dir),
    }
  },
})
