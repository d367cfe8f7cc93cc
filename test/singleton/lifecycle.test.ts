// closeOnSignals(): a real signal closes every registered election (drain, release) and exits
// with 128 + the signal's number, within a bound.
import { type ChildProcess, fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { memoryBackend } from '../../src/backends/memory.js'
import { backendFromUrl } from '../../src/cli/backends.js'
import { Election } from '../../src/election.js'
import { OptionsError } from '../../src/errors.js'
import { closeOnSignals } from '../../src/lifecycle.js'
import { firstFamily, startServer, type NetworkedServer } from '../cli/networked.js'

const worker = fileURLToPath(new URL('./shutdown-worker.ts', import.meta.url))
const family = firstFamily()

function holder(url: string, resource: string, mode: string, timeoutMs: number) {
  const child = fork(worker, [url, resource, mode, String(timeoutMs)], {
    execArgv: ['--import', 'tsx'],
  })
  const elected = new Promise<number>((resolve) =>
    child.on('message', (m: { elected?: number }) => m.elected && resolve(m.elected)),
  )
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  return { child, elected, exited }
}

describe(`closeOnSignals across processes on ${family}`, () => {
  let server: NetworkedServer
  const children: ChildProcess[] = []

  beforeAll(async () => {
    server = await startServer(family)
  }, 120_000)
  afterAll(async () => {
    for (const child of children) child.kill('SIGKILL')
    await server?.stop()
  })

  it('on SIGTERM, releases: a waiting candidate takes over long before the 60 s lease', async () => {
    const resource = 'jobs/lifecycle-drain'
    const h = holder(server.url, resource, 'drain', 10_000)
    children.push(h.child)
    const token = await h.elected
    const backend = await backendFromUrl(server.url)
    const waiting = new Election(backend, resource, { leaseMs: 60_000 })
    waiting.on('error', () => {})
    try {
      const campaign = waiting.campaign()
      await new Promise((resolve) => setTimeout(resolve, 300))
      const sentAt = performance.now()
      h.child.kill('SIGTERM')
      expect(await h.exited).toBe(128 + 15)
      const term = await campaign
      expect(term.token).toBeGreaterThan(token)
      // 60 s lease: only the release can have let us in within the test's timeout.
      console.log(
        `[${family}] takeover after SIGTERM: ${(performance.now() - sentAt).toFixed(0)} ms`,
      )
    } finally {
      await waiting.close()
      await backend.close()
    }
  }, 60_000)

  it('exits after timeoutMs when closing hangs (work ignoring its signal, drainMs 60 s)', async () => {
    const h = holder(server.url, 'jobs/lifecycle-hang', 'hang', 500)
    children.push(h.child)
    await h.elected
    const sentAt = performance.now()
    h.child.kill('SIGTERM')
    // The drain alone would take 60 s; the test's own timeout is 30 s.
    expect(await h.exited).toBe(128 + 15)
    console.log(
      `[${family}] exit after SIGTERM with a hung drain: ${(performance.now() - sentAt).toFixed(0)} ms (timeoutMs 500)`,
    )
  }, 30_000)

  it('exits at once while the first one is still closing', async () => {
    // The drain would take 60 s and the shutdown bound is 60 s: only the second signal ends it.
    const h = holder(server.url, 'jobs/lifecycle-twice', 'hang', 60_000)
    children.push(h.child)
    await h.elected
    h.child.kill('SIGTERM')
    await new Promise((resolve) => setTimeout(resolve, 300))
    let exited = false
    void h.exited.then(() => (exited = true))
    expect(exited).toBe(false) // still closing
    h.child.kill('SIGINT')
    expect(await h.exited).toBe(128 + 2)
  }, 30_000)
})

describe('closeOnSignals in this process', () => {
  it('closes every registered election on the signal, then calls exit with 128 + its number', async () => {
    const backend = memoryBackend()
    const a = new Election(backend, 'jobs/a')
    const b = new Election(backend, 'jobs/b')
    await a.campaign()
    await b.campaign()
    const codes: number[] = []
    const shutdown = closeOnSignals([a], { signals: ['SIGUSR2'], exit: (code) => codes.push(code) })
    shutdown.add(b)
    try {
      process.kill(process.pid, 'SIGUSR2') // a real signal, caught by the handler
      await waitFor(() => codes.length === 1)
      expect(codes).toEqual([128 + 12])
      expect(a.closed && b.closed).toBe(true)
      expect(await backend.holders('jobs/a')).toEqual([])
      expect(await backend.holders('jobs/b')).toEqual([])
    } finally {
      shutdown.uninstall()
    }
    expect(process.listenerCount('SIGUSR2')).toBe(0)
  })

  it('refuses bad options', () => {
    expect(() => closeOnSignals([], { signals: ['SIGKILL'] })).toThrow(OptionsError)
    expect(() => closeOnSignals([], { timeoutMs: -1 })).toThrow(/Invalid timeoutMs: -1/)
    expect(() => closeOnSignals([{} as never])).toThrow(/Invalid closable/)
    expect(() => closeOnSignals([], { timeout: 5 } as never)).toThrow(
      /"timeout" is not a shutdown option/,
    )
  })
})

async function waitFor(check: () => boolean): Promise<void> {
  const end = performance.now() + 10_000
  while (!check()) {
    if (performance.now() > end) throw new Error('timed out')
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}
