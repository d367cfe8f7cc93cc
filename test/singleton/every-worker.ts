// A candidate process for the every() tests: campaigns on the backend URL given and runs a
// 50 ms job while it holds, reporting each run (with the wall clock, shared by every process
// on this machine) and each term's end to the test over IPC.
import { backendFromUrl } from '../../src/cli/backends.js'
import { Election } from '../../src/election.js'
import { every } from '../../src/singleton.js'

const [url, resource, id] = process.argv.slice(2)
const send = (message: object) => {
  if (process.connected) process.send!(message)
}
const backend = await backendFromUrl(url!)
const election = new Election(backend, resource!, { leaseMs: 1_500, id: id! })
election.on('error', () => {}) // retried; the test judges by the runs
election.on('revoked', (term, reason) => send({ revoked: term.token, reason, id, at: Date.now() }))
process.on('disconnect', () => process.exit(0))
send({ ready: id })
await every(election, 50, async ({ token, startedAt }) => {
  // When every() started the run (right after its check of the term), on the wall clock: a
  // pause caught between that check and this line must not move the run's start past it.
  send({ run: token, id, at: Date.now() - (performance.now() - startedAt) })
  await new Promise((resolve) => setTimeout(resolve, 20))
})
