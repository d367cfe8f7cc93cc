// A worker whose primary has no agent yet: its calls fail with a clear timeout; once the
// primary starts its agent, the worker (still greeting every second) is served.
import { afterAll, describe, expect, it } from 'vitest'
import { serveCluster } from '../../src/backends/cluster/index.js'
import { startAgent, stopAgent } from '../../src/agent/index.js'
import {
  failure,
  forkWorker,
  setupAgentPrimary,
  stopWorker,
  type TestWorker,
  value,
} from './fixture.js'

setupAgentPrimary('json')
serveCluster()
let worker: TestWorker | undefined

afterAll(async () => {
  if (worker) await stopWorker(worker.worker)
  await stopAgent()
})

describe('agent started late in the primary', () => {
  it('times out with a hint, then serves once the primary’s agent starts', async () => {
    worker = await forkWorker({ TEST_EARLY_READY: '1' })
    const early = failure(await worker.run('call', { name: 'echo', args: [1], timeoutMs: 700 }))
    expect(early).toMatchObject({ className: 'AgentTimeoutError', retryable: true })
    expect(early.message).toMatch(/Is the agent started in the primary/)

    startAgent({ onError: () => {} })
    const late = value(await worker.run('call', { name: 'echo', args: ['now'], timeoutMs: 10_000 }))
    expect(late).toBe('now')
  })
})
