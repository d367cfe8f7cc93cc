// A process that holds a resource (60 s lease) and installs closeOnSignals(): the lifecycle
// tests SIGTERM it. Mode `drain`: the work ends on its signal. Mode `hang`: the work ignores
// its signal and drainMs is 60 s, so only the shutdown's timeoutMs can end the process.
import { backendFromUrl } from '../../src/cli/backends.js'
import { Election } from '../../src/election.js'
import { closeOnSignals } from '../../src/lifecycle.js'

const [url, resource, mode, timeoutMs] = process.argv.slice(2)
const backend = await backendFromUrl(url!)
const election = new Election(backend, resource!, {
  leaseMs: 60_000,
  drainMs: mode === 'hang' ? 60_000 : 5_000,
})
election.on('error', () => {})
closeOnSignals([election], { timeoutMs: Number(timeoutMs) })
void election.run(async (term) => {
  process.send!({ elected: term.token })
  if (mode === 'hang') await new Promise(() => setInterval(() => {}, 1_000))
  else await new Promise((resolve) => term.signal.addEventListener('abort', resolve))
})
