// A user's bundle carries the SQL along: a tiny program using postgresBackend is bundled with
// esbuild (pg included) into an empty temporary folder and run there against a private
// PostgreSQL, under Node's permission model allowing it to read the bundle alone. SQL read from
// disk next to the module (the old way: ENOENT on sql/migrations/) would fail it.
import { execFile } from 'node:child_process'
import { mkdtempSync, readdirSync, realpathSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { build } from 'esbuild'
import { afterAll, beforeAll, expect, it } from 'vitest'
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
  const entry = join(dir, 'program.mjs')
  const outfile = join(dir, 'out', 'bundle.mjs')
  writeFileSync(entry, PROGRAM)
  await build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    logLevel: 'silent',
    // The program lives outside the repository: pg is found in the repository's modules.
    nodePaths: [fileURLToPath(new URL('../../node_modules', import.meta.url))],
    // pg-native is pg's optional native binding, required only when asked for.
    external: ['pg-native'],
    // pg is CommonJS and requires Node's modules: an ESM bundle needs a require for it (and the
    // backend loads pg, an optional peer, through one).
    banner: {
      js: "import { createRequire as bannerRequire } from 'node:module'; const require = bannerRequire(import.meta.url);",
    },
  })
  rmSync(entry)
  // The bundle alone: no .sql, no node_modules beside it.
  expect(readdirSync(join(dir, 'out'))).toEqual(['bundle.mjs'])
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--experimental-permission', `--allow-fs-read=${outfile}`, outfile],
    {
      cwd: join(dir, 'out'),
      env: { ...process.env, DATABASE_URL: server.connectionString },
      timeout: 30_000,
    },
  )
  expect(JSON.parse(stdout)).toEqual({
    migrated: [0, true],
    acquired: true,
    holders: [['a', { n: 1 }]],
    after: [],
    auto: true,
  })
}, 60_000)
