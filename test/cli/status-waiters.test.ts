// `conclave status` lists the candidates waiting for a resource, as well as its holders, on a
// backend that keeps a line it can list (etcd: keys ranked by create revision; redis: the line
// and places sorted sets; postgres: the waiters table), against each real server; on a backend
// without Backend.waiters it says they are not reported (the CLI's status code, status.ts).
import { type ChildProcess, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Backend } from '../../src/backend.js'
import { backendFromUrl } from '../../src/cli/backends.js'
import { Election } from '../../src/election.js'
import { localDir } from '../../testkit/local.js'
import { until } from '../helpers/wait.js'
import { type NetworkedServer, startServer } from './networked.js'
import { bundled } from '../../testkit/bundled.js'

// The CLI bundled once for this file (testkit/bundled.ts): it starts in a fraction of tsx's time.
const main = await bundled(fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url)))

/** Runs the CLI to its end: its exit code and output. */
function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const proc: ChildProcess = spawn(process.execPath, [main, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '' },
  })
  let stdout = ''
  let stderr = ''
  proc.stdout!.on('data', (d: Buffer) => (stdout += d.toString()))
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
  return new Promise((resolve) => proc.once('exit', (code) => resolve({ code, stdout, stderr })))
}

// etcd keeps each waiter's metadata with its place; redis' and postgres' places carry none.
describe.each([
  { family: 'etcd', metadata: true },
  { family: 'redis', metadata: false },
  { family: 'postgres', metadata: false },
])('$family', ({ family, metadata }) => {
  let server: NetworkedServer
  const closers: (() => Promise<unknown>)[] = []
  beforeAll(async () => {
    server = await startServer(family)
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
    const backend = await backendFromUrl(server.url)
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

  it('status lists the holder and the waiters in line order, in text and --json', async () => {
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

    const json = await cli([
      'status',
      '--json',
      '--backend',
      server.url,
      resource,
      `${resource}-free`,
    ])
    expect(json.code, json.stderr).toBe(0)
    const status = JSON.parse(json.stdout.trim()) as {
      backend: string
      resources: { resource: string; holders: { candidate: string }[]; waiters: unknown }[]
    }
    expect(status.backend).toBe(family)
    expect(status.resources[0]!.holders.map((h) => h.candidate)).toEqual(['holder-1'])
    expect(status.resources[0]!.waiters).toEqual(
      ['waiter-a', 'waiter-b'].map((id) => ({
        candidate: id,
        metadata: metadata ? { id } : null,
        remainingMs: expect.any(Number) as number,
      })),
    )
    // A resource nobody wants: no holder and an empty line (not null: the backend reports waiters).
    expect(status.resources[1]).toMatchObject({ holders: [], waiters: [] })

    const text = await cli(['status', '--backend', server.url, resource])
    expect(text.code, text.stderr).toBe(0)
    const lines = text.stdout.trim().split('\n')
    expect(lines[0]).toBe(`${resource}: 1 holder(s)`)
    expect(lines[1]).toMatch(/^ {2}holder-1 {2}token \d+ {2}\d+\.\ds left {2}\{"id":"holder-1"\}$/)
    const waiting = (id: string) =>
      new RegExp(
        `^ {2}${id} {2}waiting {2}queued \\d+\\.\\ds more${metadata ? ` {2}\\{"id":"${id}"\\}` : ''}$`,
      )
    expect(lines.slice(2)).toEqual([
      '  2 waiter(s)',
      expect.stringMatching(waiting('waiter-a')),
      expect.stringMatching(waiting('waiter-b')),
    ])
  }, 60_000)
})

it('status says waiters are not reported on a backend without Backend.waiters (local:)', async () => {
  const dir = localDir()
  try {
    const url = `local:status?dir=${encodeURIComponent(dir.dir)}`
    const json = await cli(['status', '--json', '--backend', url, 'job'])
    expect(json.code, json.stderr).toBe(0)
    const status = JSON.parse(json.stdout.trim()) as { resources: { waiters: unknown }[] }
    expect(status.resources[0]!.waiters).toBeNull()
    const text = await cli(['status', '--backend', url, 'job'])
    expect(text.code, text.stderr).toBe(0)
    expect(text.stdout).toMatch(/\n {2}waiters: not reported by this backend\n/)
  } finally {
    await dir.remove()
  }
}, 60_000)
