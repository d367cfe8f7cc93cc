// A real node:cluster worker for tests: its clusterBackend() talks to the hub in the test
// process (the primary) over IPC; the test drives that backend through a second hub on the
// same channel (namespace `conclave-driver`), so every call crosses the real IPC twice.
import { clusterBackend } from '../../src/backends/cluster/index.js'
import { Hub } from '../../src/backends/cluster/hub.js'

const backend = clusterBackend({ timeoutMs: 3_000 })
const driver = new Hub(backend, { namespace: 'conclave-driver', relayGrants: true }).connect(
  (message) => {
    if (process.connected) process.send!(message)
  },
)

process.on('message', (message: unknown) => {
  driver.receive(message)
  // Test-only: send raw messages to the primary's hub and report what came back.
  const raw = (message as { 'test-raw'?: unknown[] })['test-raw']
  if (Array.isArray(raw)) {
    const replies: unknown[] = []
    const collect = (reply: unknown) => {
      if ((reply as { conclave?: number }).conclave === 1) replies.push(reply)
    }
    process.on('message', collect)
    for (const m of raw) process.send!(m)
    setTimeout(() => {
      process.off('message', collect)
      process.send!({ 'test-raw-result': replies })
    }, 500)
  }
})
process.send!({ 'test-ready': true })
