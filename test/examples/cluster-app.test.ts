// The examples run as a reader would run them (examples/cluster-app/README.md): the app
// imports the package by its name (`conclave/agent`, the build, through the package's
// self-reference), forks its workers, and answers its routes; SIGTERM stops it.
import { type ChildProcess, spawn } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { freePort } from '../../testkit/index.js'
import { ROOT } from '../../testkit/snippets.js'

let app: ChildProcess | undefined
let base: string
let output = ''

it('every example has a test here', () => {
  expect(readdirSync(join(ROOT, 'examples'))).toEqual(['cluster-app'])
})

beforeAll(async () => {
  const port = await freePort()
  base = `http://127.0.0.1:${port}`
  app = spawn(process.execPath, ['--import', 'tsx', 'examples/cluster-app/main.ts'], {
    cwd: ROOT,
    env: { ...process.env, PORT: String(port), WORKERS: '2' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  app.stdout!.on('data', (chunk) => (output += String(chunk)))
  app.stderr!.on('data', (chunk) => (output += String(chunk)))
  // Ready: a worker holds the cache (elected) and both workers listen.
  const deadline = Date.now() + 30_000
  while (!/holds the cache/.test(output)) {
    if (app.exitCode !== null || Date.now() > deadline) throw new Error(`cluster-app:\n${output}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}, 60_000)
afterAll(() => {
  if (app && app.exitCode === null) app.kill('SIGKILL')
})

async function get(path: string, init?: RequestInit): Promise<{ status: number; body: string }> {
  // A worker may not listen yet right after the election: retry a refused connection.
  for (let attempt = 0; ; attempt++) {
    try {
      const response = await fetch(base + path, init)
      return { status: response.status, body: await response.text() }
    } catch (error) {
      if (attempt >= 50) throw error
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }
}

it('cluster-app: a shared cache, merged metrics and health across its workers', async () => {
  const put = await get('/cache/greeting', { method: 'PUT', body: 'hello' })
  expect(put.status).toBe(200)
  const set = JSON.parse(put.body) as { fencingToken: number; servedBy: number }
  expect(set.fencingToken).toBeGreaterThan(0)
  const hit = JSON.parse((await get('/cache/greeting')).body) as Record<string, unknown>
  expect(hit).toMatchObject({ key: 'greeting', hit: true, value: 'hello', servedBy: set.servedBy })
  const metrics = await get('/metrics')
  expect(metrics.status).toBe(200)
  expect(metrics.body).toContain('app_http_requests_total')
  const health = await get('/health')
  expect(JSON.parse(health.body)).toMatchObject({ ok: true })
  expect((JSON.parse(health.body) as { workers: unknown[] }).workers).toHaveLength(2)
}, 30_000)

it('cluster-app: SIGTERM stops the workers and the primary', async () => {
  const exited = new Promise<number | null>((resolve) => app!.once('exit', (code) => resolve(code)))
  app!.kill('SIGTERM')
  expect(await exited).toBe(0)
}, 30_000)
