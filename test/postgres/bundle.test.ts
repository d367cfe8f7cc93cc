// A user's bundle carries the SQL along: a tiny program using postgresBackend is bundled with
// esbuild (pg included) into an empty temporary folder and run there against a private
// PostgreSQL, under Node's permission model allowing it to read the bundle alone. SQL read from
// disk next to the module (the old way: ENOENT on sql/migrations/) would fail it.
import { mkdtempSync, realpathSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { bundleAndRun } from '../../testkit/bundle.js'
import { startPostgres, type PostgresServer } from '../../testkit/index.js'

const src = (path: string) => fileURLToPath(new URL(`../../src/${path}`, import.meta.url))

const PROGRAM = `
import { migrate, postgresBackend } from ${JSON.stringify(src('backends/postgres/index.ts'))}

const connectionString = process.env.DATABASE_URL
const report = {}
const migrated = await migrate({ connectionString, schema: 'bundled' })
report.migrated = [migrated.from, migrated.to > 0]
const backend = postgresBackend({ connectionString, schema: 'bundled' })
const resource = 'bundled/job'
const won = await backend.acquire({ resource, candidate: 'a', tickets: 1, leaseMs: 5000, metadata: { n: 1 } })
report.acquired = won.acquired
report.holders = (await backend.holders(resource)).map((h) => [h.candidate, h.metadata])
await backend.release({ resource, candidate: 'a', token: won.token })
report.after = await backend.holders(resource)
await backend.close()
// A second backend on a fresh schema migrates on its first call (migrate: true, the default).
const fresh = postgresBackend({ connectionString, schema: 'bundled_auto' })
report.auto = (await fresh.acquire({ resource, candidate: 'b', tickets: 1, leaseMs: 5000 })).acquired
await fresh.close()
console.log(JSON.stringify(report))
`

let server: PostgresServer
let dir: string

beforeAll(async () => {
  server = await startPostgres()
  // realpath: the permission model compares real paths.
  dir = realpathSync(mkdtempSync(join(tmpdir(), 'conclave-pg-bundle-')))
}, 60_000)
afterAll(async () => {
  await server?.stop()
  if (dir) rmSync(dir, { recursive: true, force: true })
})

it('runs from an esbuild bundle that reads no file at run time', async () => {
  // pg-native is pg's optional native binding, required only when asked for.
  const { stdout, files } = await bundleAndRun(
    dir,
    PROGRAM,
    { DATABASE_URL: server.connectionString },
    ['pg-native'],
  )
  // The bundle alone: no .sql, no node_modules beside it.
  expect(files).toEqual(['bundle.mjs'])
  expect(JSON.parse(stdout)).toEqual({
    migrated: [0, true],
    acquired: true,
    holders: [['a', { n: 1 }]],
    after: [],
    auto: true,
  })
}, 60_000)
