// conclave/postgres against the advisory-lock package, one after another on one private
// PostgreSQL (pg_stat_statements loaded: statement counts come from the server itself), and a
// committed single-row upsert as the baseline of the uncontended acquire.
import pg from 'pg'
import { startPostgres } from '../../testkit/index.js'
import { electionScenarios, type Subject } from '../scenarios.js'
import { defineSuite } from '../suite.js'
import {
  POSTGRES_SUBJECTS,
  postgresSubject,
  type PostgresTarget,
  postgresUpsertBaseline,
} from '../subjects/postgres.js'

/** The postgres suite: conclave/postgres and advisory-lock × the election scenarios. */
export default defineSuite<Subject>({
  name: 'postgres',
  scenarios: electionScenarios,
  async setup() {
    const server = await startPostgres({
      settings: { shared_preload_libraries: 'pg_stat_statements', max_connections: 300 },
    })
    const admin = new pg.Pool({ connectionString: server.connectionString, max: 2 })
    admin.on('error', () => {})
    try {
      await admin.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements')
      await admin.query('CREATE ROLE bench_subject LOGIN SUPERUSER')
    } catch (error) {
      await admin.end()
      await server.stop()
      throw error
    }
    const target: PostgresTarget = {
      host: server.host,
      port: server.port,
      pid: server.pid,
      database: server.database,
      role: 'bench_subject',
      admin,
      adminUrl: server.connectionString,
      schema: 'bench',
    }
    return {
      subjects: [
        ...POSTGRES_SUBJECTS.map((name) => ({ name, open: () => postgresSubject(name, target) })),
        { name: 'baseline: postgres upsert', open: () => postgresUpsertBaseline(target) },
      ],
      async teardown() {
        await admin.end()
        await server.stop()
      },
    }
  },
})
