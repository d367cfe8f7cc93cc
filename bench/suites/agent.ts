// The process agent against @midwayjs/process-agent (calls to the primary) and prom-client
// (cluster metrics), each group in a 4-worker cluster app of its own (bench/subjects/agent-host.ts).
import { fileURLToPath } from 'node:url'
import { type AgentSubject, agentScenarios } from '../scenarios.js'
import { defineSuite, hosted } from '../suite.js'
import { AGENT_SUBJECTS } from '../subjects/agent.js'

const host = fileURLToPath(new URL('../subjects/agent-host.ts', import.meta.url))

/** The agent suite: agent subjects × agent scenarios, in two forked cluster apps. */
export default defineSuite<AgentSubject>({
  name: 'agent',
  scenarios: agentScenarios,
  async setup() {
    return {
      subjects: [
        // Designated primary: Midway's topology (worker → primary), so the peers share its app.
        hosted(host, [AGENT_SUBJECTS.primary, AGENT_SUBJECTS.midway, AGENT_SUBJECTS.prom]),
        hosted(host, [AGENT_SUBJECTS.worker]),
        hosted(host, [AGENT_SUBJECTS.local]),
      ],
      teardown: async () => {},
    }
  },
  order: [
    AGENT_SUBJECTS.primary,
    AGENT_SUBJECTS.worker,
    AGENT_SUBJECTS.local,
    AGENT_SUBJECTS.midway,
    AGENT_SUBJECTS.prom,
  ],
})
