// every() across real processes on a networked backend: a SIGKILLed holder, then a holder
// paused (SIGSTOP) past its deadline. No run of a term may start after a later term's first
// run: in particular the paused holder, once resumed, must not run again (its job timer is due
// before its deadline timer, so only the clock check before each run stops it).
import { type ChildProcess, fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { firstFamily, startServer, type NetworkedServer } from '../cli/networked.js'

const worker = fileURLToPath(new URL('./every-worker.ts', import.meta.url))
const family = firstFamily()

type Message =
  | { ready: string }
  | { run: number; id: string; at: number }
  | { revoked: number; reason: string; id: string; at: number }

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe(`every() across processes on ${family}`, () => {
  let server: NetworkedServer
  const children: ChildProcess[] = []

  beforeAll(async () => {
    server = await startServer(family)
  }, 120_000)
  afterAll(async () => {
    for (const child of children) {
      child.kill('SIGCONT')
      child.kill('SIGKILL')
    }
    await server?.stop()
  })

  it('never starts a run after the term ended: killed holder, paused holder', async () => {
    const messages: Message[] = []
    const byId = new Map<string, ChildProcess>()
    for (const id of ['w1', 'w2', 'w3']) {
      const child = fork(worker, [server.url, 'jobs/every-processes', id], {
        execArgv: ['--import', 'tsx'],
      })
      child.on('message', (m: Message) => messages.push(m))
      children.push(child)
      byId.set(id, child)
    }
    const runs = () =>
      messages
        .filter((m): m is Extract<Message, { run: number }> => 'run' in m)
        .map((m) => ({ token: m.run, id: m.id, at: m.at }))
    const until = async <T>(check: () => T | undefined, timeoutMs: number, what: string) => {
      const end = performance.now() + timeoutMs
      for (;;) {
        const value = check()
        if (value !== undefined) return value
        if (performance.now() > end)
          throw new Error(
            `timed out waiting for ${what}: ${JSON.stringify(messages.filter((m) => !('run' in m)))} runs ${JSON.stringify([...new Set(runs().map((r) => `${r.id}#${r.token}`))])}`,
          )
        await sleep(20)
      }
    }
    await until(
      () => (messages.filter((m) => 'ready' in m).length === 3 ? true : undefined),
      30_000,
      'workers',
    )

    const first = await until(() => runs()[0], 20_000, 'a first run')
    await sleep(300)
    byId.get(first.id)!.kill('SIGKILL')
    const second = await until(
      () => runs().find((r) => r.token > first.token),
      20_000,
      'a run of a second term',
    )
    await sleep(300)
    const paused = byId.get(second.id)!
    paused.kill('SIGSTOP')
    const pausedAt = Date.now()
    try {
      // Lease 1.5 s: the third worker takes over while the second is paused.
      await until(() => runs().find((r) => r.token > second.token), 20_000, 'a run of a third term')
      await sleep(1_500)
    } finally {
      paused.kill('SIGCONT')
    }
    await until(
      () => messages.find((m) => 'revoked' in m && m.revoked === second.token),
      10_000,
      'the paused holder to see its term end',
    )
    await sleep(500)
    const all = runs()
    const tokens = [...new Set(all.map((r) => r.token))].sort((a, b) => a - b)
    expect(tokens.length).toBeGreaterThanOrEqual(3)
    // Every run of a term started before the first run of any later term.
    for (const [i, token] of tokens.entries()) {
      const lastStart = Math.max(...all.filter((r) => r.token === token).map((r) => r.at))
      for (const later of tokens.slice(i + 1)) {
        const firstStart = Math.min(...all.filter((r) => r.token === later).map((r) => r.at))
        expect(lastStart, `term ${token} ran after term ${later} began`).toBeLessThan(firstStart)
      }
    }
    // The paused holder ran nothing after it was resumed. (Strictly later than the pause: a
    // run in the same millisecond as the SIGSTOP came before it.)
    expect(all.filter((r) => r.token === second.token && r.at > pausedAt)).toEqual([])
    const revoked = messages.find(
      (m): m is Extract<Message, { revoked: number }> =>
        'revoked' in m && m.revoked === second.token,
    )!
    expect(['expired', 'lost']).toContain(revoked.reason)
    expect(revoked.at).toBeGreaterThan(pausedAt) // it learnt of the end only once resumed
  }, 90_000)
})
