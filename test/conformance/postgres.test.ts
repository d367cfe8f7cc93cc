import { randomBytes } from 'node:crypto'
import { afterAll } from 'vitest'
import { postgresBackend } from '../../src/backends/postgres/index.js'
import { startPostgres } from '../../testkit/index.js'
import { runConformance } from './suite.js'

const server = await startPostgres()
afterAll(() => server.stop())

// One schema for this file; each backend makes its own pool, as separate processes would.
const schema = `conformance_${randomBytes(4).toString('hex')}`

runConformance('postgres', {
  leaseMs: 500,
  backend: async () => postgresBackend({ connectionString: server.connectionString, schema }),
})
