// A separate process on a `local` app: it makes localBackend({ name, dir }) and lets its parent
// drive that backend through a Hub over the IPC channel (namespace `conclave-driver`), so every
// call the parent makes crosses the real unix socket (or reaches the hub this process hosts).
//   node --import tsx testkit/local-peer.ts <options JSON>
// Sends { 'peer-ready': true } once its backend has connected (or become the hub), and answers
// { 'peer-query': 'isHub' } with { 'peer-answer': boolean }.
import { Hub } from '../src/backends/cluster/hub.js'
import { localBackend, type LocalBackendOptions } from '../src/backends/local/index.js'

const options = JSON.parse(process.argv[2] ?? '{}') as LocalBackendOptions
const backend = localBackend(options)
const driver = new Hub(backend, { namespace: 'conclave-driver', relayGrants: true }).connect(
  (message) => {
    if (process.connected) process.send!(message)
  },
)
process.on('message', (message: unknown) => {
  driver.receive(message)
  if ((message as { 'peer-query'?: string })['peer-query'] === 'isHub') {
    process.send!({ 'peer-answer': backend.isHub })
  }
})
process.on('disconnect', () => void backend.close().then(() => process.exit(0)))
process.on('SIGTERM', () => void backend.close().then(() => process.exit(0)))
// Connect (or become the hub) before saying ready: the first call is then not a cold start. A
// first call that timed out is asked again (a short timeoutMs on a loaded disk: the hub writes
// a new handle into its state file, fsynced, before serving it).
const ready = async (): Promise<void> => {
  for (let attempt = 1; ; attempt++) {
    try {
      await backend.holders('conclave/peer-ready')
      return
    } catch (error) {
      if ((error as { code?: string }).code !== 'ERR_CONCLAVE_TIMEOUT' || attempt >= 20) throw error
    }
  }
}
void ready().then(
  () => process.send!({ 'peer-ready': true }),
  (error: Error) => {
    process.send!({ 'peer-error': error.message })
    process.exit(1)
  },
)
