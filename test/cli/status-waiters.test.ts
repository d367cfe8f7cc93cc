// `conclave status` lists the candidates waiting for a resource, as well as its holders, on a
// backend that keeps a queue it can list (etcd: keys ranked by create revision), against a real
// etcd; on a backend without Backend.waiters it says they are not reported (scripts.test.ts).
import { type ChildProcess, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { backendFromUrl } from '../../src/backends/etcd/index.js'
import type { Backend } from '../../src/backend.js'
import { Election } from '../../src/election.js'
import { startEtcd, type EtcdServer } from '../../testkit/index.js'
import { until } from '../helpers/wait.js'

const main = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url))

/** Runs the CLI to its end: its exit code and output. */
function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const proc: ChildProcess = spawn(process.execPath, ['--import', 'tsx', main, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '' },
  })
  let stdout = ''
  let stderr = ''
  proc.stdout!.on('data', (d: Buffer) => (stdout += d.toString()))
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
  return new Promise((resolve) => proc.once('exit', (code) => resolve({ code, stdout, stderr })))
}

let server: EtcdServer
let url: string
const closers: (() => Promise<unknown>)[] = []
beforeAll(async () => {
  server = await startEtcd()
  url = `etcd://127.0.0.1:${server.port}`
}, 60_000)
afterAll(async () => {
  for (const close of closers.splice(0).reverse()) await close().catch(() => {})
  await server?.stop()
})

/** A candidate of `resource` in this process, campaigning (its campaign() not awaited). */
async function candidate(
  resource: string,
  id: string,
): Promise<{ backend: Backend; won: Promise<unknown> }> {
  const backend = await backendFromUrl(url)
  const election = new Election(backend, resource, { leaseMs: 10_000, id, metadata: { id } })
  election.on('error', () => {})
  closers.push(
    () => backend.close(),
    () => election.close(),
  )
  const won = election.campaign()
  won.catch(() => {})
  return { backend, won }
}

it('status lists the holder and the waiters in queue order, in text and --json', async () => {
  const resource = `cli/waiters-${process.pid}`
  const holder = await candidate(resource, 'holder-1')
  await holder.won
  await candidate(resource, 'waiter-a')
  // The second waiter queues after the first: the order is the one they would be granted in.
  await until(
    async () => (await holder.backend.waiters!(resource)).length === 1,
    10_000,
    'waiter-a queued',
  )
  await candidate(resource, 'waiter-b')
  await until(
    async () => (await holder.backend.waiters!(resource)).length === 2,
    10_000,
    'waiter-b queued',
  )

  const json = await cli(['status', '--json', '--backend', url, resource, `${resource}-free`])
  expect(json.code, json.stderr).toBe(0)
  const status = JSON.parse(json.stdout.trim()) as {
    backend: string
    resources: { resource: string; holders: { candidate: string }[]; waiters: unknown }[]
  }
  expect(status.backend).toBe('etcd')
  expect(status.resources[0]!.holders.map((h) => h.candidate)).toEqual(['holder-1'])
  expect(status.resources[0]!.waiters).toEqual([
    {
      candidate: 'waiter-a',
      metadata: { id: 'waiter-a' },
      remainingMs: expect.any(Number) as number,
    },
    {
      candidate: 'waiter-b',
      metadata: { id: 'waiter-b' },
      remainingMs: expect.any(Number) as number,
    },
  ])
  // A resource nobody wants: no holder and an empty queue (not null: etcd reports waiters).
  expect(status.resources[1]).toMatchObject({ holders: [], waiters: [] })

  const text = await cli(['status', '--backend', url, resource])
  expect(text.code, text.stderr).toBe(0)
  const lines = text.stdout.trim().split('\n')
  expect(lines[0]).toBe(`${resource}: 1 holder(s)`)
  expect(lines[1]).toMatch(/^ {2}holder-1 {2}token \d+ {2}\d+\.\ds left {2}\{"id":"holder-1"\}$/)
  expect(lines.slice(2)).toEqual([
    '  2 waiter(s)',
    expect.stringMatching(
      /^ {2}waiter-a {2}waiting {2}queued \d+\.\ds more {2}\{"id":"waiter-a"\}$/,
    ),
    expect.stringMatching(
      /^ {2}waiter-b {2}waiting {2}queued \d+\.\ds more {2}\{"id":"waiter-b"\}$/,
    ),
  ])
}, 60_000)
