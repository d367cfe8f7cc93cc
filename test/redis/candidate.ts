// A candidate in its own process, for tests and the benchmark that kill it: campaigns on the
// resource given in argv through redis and reports its terms to the parent over IPC.
//   argv: url resource leaseMs
//   sends: { type: 'elected', token, candidate } and { type: 'revoked', token, reason }
import { redisBackend } from '../../src/backends/redis/index.js'
import { Election } from '../../src/election.js'

const [url, resource, lease] = process.argv.slice(2)
if (!url || !resource || !lease) throw new Error('usage: candidate.ts url resource leaseMs')

const backend = redisBackend({ url })
const election = new Election(backend, resource, { leaseMs: Number(lease) })
election.on('error', () => {})
election.on('elected', (term) =>
  process.send?.({ type: 'elected', token: term.token, candidate: term.candidate }),
)
election.on('revoked', (term, reason) =>
  process.send?.({ type: 'revoked', token: term.token, reason }),
)
void election.run(async (term) => {
  await new Promise((resolve) => term.signal.addEventListener('abort', resolve))
})
process.on('disconnect', () => {
  void election.close().then(() => backend.close())
})
