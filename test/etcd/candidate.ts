// A candidate in its own process, for tests and the benchmark that kill it: campaigns on the
// resource given in argv through etcd and reports its terms to the parent over IPC.
//   argv: endpoint prefix resource leaseMs
//   sends: { type: 'elected', token, candidate } and { type: 'revoked', token, reason }
import { etcdBackend } from '../../src/backends/etcd/index.js'
import { Election } from '../../src/election.js'

const [endpoint, prefix, resource, lease] = process.argv.slice(2)
if (!endpoint || !prefix || !resource || !lease)
  throw new Error('usage: candidate.ts endpoint prefix resource leaseMs')

const backend = etcdBackend({ hosts: endpoint, prefix })
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
