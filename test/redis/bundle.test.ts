// A user's bundle carries the Lua along: a tiny program using redisBackend and fencedWrite is
// bundled with esbuild (ioredis included) into an empty temporary folder and run there against a
// real redis-server, under Node's permission model allowing it to read the bundle alone. Scripts
// read from disk next to the module (the old way: ENOENT on acquire.lua) would fail it.
import { mkdtempSync, realpathSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { bundleAndRun } from '../../testkit/bundle.js'
import { startRedis, type RedisServer } from '../../testkit/index.js'

const src = (path: string) => fileURLToPath(new URL(`../../src/${path}`, import.meta.url))

const PROGRAM = `
import { Redis } from 'ioredis'
import { redisBackend } from ${JSON.stringify(src('backends/redis/index.ts'))}
import { fencedWrite } from ${JSON.stringify(src('fence/redis.ts'))}

const client = new Redis(process.env.REDIS_URL, { maxRetriesPerRequest: 1 })
const backend = redisBackend({ client, startupGrace: false })
const resource = 'bundled/job'
const report = {}
let woken = 0
const unwatch = await backend.watch(resource, () => woken++)
const won = await backend.acquire({ resource, candidate: 'a', tickets: 1, leaseMs: 5000, metadata: { n: 1 } })
report.acquired = won.acquired
report.holders = (await backend.holders(resource)).map((h) => [h.candidate, h.metadata])
report.renewed = await backend.renew([{ resource, candidate: 'a', token: won.token, leaseMs: 5000 }])
await fencedWrite(client, 'bundled:data', won.token, 'written')
report.data = await client.get('bundled:data')
await backend.release({ resource, candidate: 'a', token: won.token })
report.after = await backend.holders(resource)
await unwatch()
report.woken = woken > 0
await backend.close()
client.disconnect()
console.log(JSON.stringify(report))
`

let server: RedisServer
let dir: string

beforeAll(async () => {
  server = await startRedis()
  // realpath: the permission model compares real paths.
  dir = realpathSync(mkdtempSync(join(tmpdir(), 'conclave-bundle-')))
})
afterAll(async () => {
  await server?.stop()
  if (dir) rmSync(dir, { recursive: true, force: true })
})

it('runs from an esbuild bundle that reads no file at run time', async () => {
  const { stdout, files } = await bundleAndRun(dir, PROGRAM, { REDIS_URL: server.url })
  // The bundle alone: no .lua, no node_modules beside it.
  expect(files).toEqual(['bundle.mjs'])
  expect(JSON.parse(stdout)).toEqual({
    acquired: true,
    holders: [['a', { n: 1 }]],
    renewed: [true],
    data: 'written',
    after: [],
    woken: true,
  })
})
