// A candidate in its own process, for tests and the benchmark that kill it. Configured by
// environment variables; talks to its parent over IPC:
//   sends { type: 'elected', token, at } on each term and { type: 'revoked', token } at its end;
//   on { type: 'campaign' } campaigns (again); on { type: 'resign' } resigns.
import { Election } from '../../src/election.js'
import { postgresBackend } from '../../src/backends/postgres/index.js'

const connectionString = process.env.PG_URL!
const schema = process.env.PG_SCHEMA!
const resource = process.env.PG_RESOURCE!
const leaseMs = Number(process.env.PG_LEASE_MS ?? 1000)

const backend = postgresBackend({ connectionString, schema })
const election = new Election(backend, resource, { leaseMs, id: process.env.PG_ID })
election.on('error', () => {})
election.on('elected', (term) =>
  process.send?.({ type: 'elected', token: term.token, at: Date.now() }),
)
election.on('revoked', (term) => process.send?.({ type: 'revoked', token: term.token }))

process.on('message', (message: { type: string }) => {
  if (message.type === 'campaign') void election.campaign().catch(() => {})
  if (message.type === 'resign') void election.resign()
  if (message.type === 'exit')
    void election
      .close()
      .then(() => backend.close())
      .then(() => process.exit(0))
})
process.on('disconnect', () => process.exit(0))
process.send?.({ type: 'ready' })
