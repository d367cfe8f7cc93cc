// The process agent over `local`, in plain separate processes (test/local/agent-app.ts): no
// node:cluster primary; the app's hub routes. runInPrimary/call go to the one designated
// process, gather/broadcast/clusterHealth/clusterMetrics reach every process with an agent, and
// the designated role fails over when its process is killed.
import { type ChildProcess, fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { ProcessAgent } from '../../src/agent/index.js'
import { localBackend } from '../../src/backends/local/index.js'
import { localDir } from '../../testkit/local.js'
import { until } from '../helpers/wait.js'

const APP = fileURLToPath(new URL('./agent-app.ts', import.meta.url))
const dirs: { remove(): Promise<void> }[] = []
const apps: AgentApp[] = []
afterEach(async () => {
  await Promise.all(apps.splice(0).map((a) => a.kill()))
})
afterAll(async () => {
  for (const d of dirs) await d.remove()
})

interface Answer {
  ok: boolean
  value?: unknown
  error?: { name: string; code?: string; message: string }
}
interface AgentApp {
  pid: number
  ask(cmd: string, more?: object): Promise<Answer>
  kill(): Promise<void>
}

async function start(name: string, dir: string, leaseMs = 2_000): Promise<AgentApp> {
  const child: ChildProcess = fork(APP, [JSON.stringify({ name, dir, leaseMs })], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  child.on('error', () => {})
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const waiting = new Map<number, (a: Answer) => void>()
  let next = 0
  await new Promise<void>((resolve, reject) => {
    child.on('message', (m: { ready?: boolean; id?: number } & Answer) => {
      if (m.ready) resolve()
      else if (m.id !== undefined) waiting.get(m.id)?.(m)
    })
    child.once('exit', (code) => reject(new Error(`agent app exited early (${code})`)))
  })
  const app: AgentApp = {
    pid: child.pid!,
    ask: (cmd, more = {}) =>
      new Promise((resolve) => {
        const id = next++
        waiting.set(id, resolve)
        child.send({ id, cmd, ...more })
      }),
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      await exited
    },
  }
  apps.push(app)
  return app
}

function newDir(): string {
  const d = localDir()
  dirs.push(d)
  return d.dir
}

describe('the process agent over local, in plain processes', () => {
  it('runInPrimary runs in the one designated process; gather, broadcast, clusterHealth and clusterMetrics reach every process', async () => {
    const dir = newDir()
    const ps = [await start('agent', dir), await start('agent', dir), await start('agent', dir)]
    const pids = ps.map((p) => p.pid).sort((a, b) => a - b)
    await until(
      async () => (await Promise.all(ps.map((p) => p.ask('designated')))).some((a) => a.value),
      10_000,
      'a designated process',
    )
    const answers = await Promise.all(ps.map((p) => p.ask('whoami')))
    expect(answers.every((a) => a.ok)).toBe(true)
    const designated = answers[0]!.value as number
    expect(answers.map((a) => a.value)).toEqual([designated, designated, designated])
    expect(pids).toContain(designated)

    const gathered = await ps[1]!.ask('gather', { name: 'pid' })
    const entries = gathered.value as {
      pid: number
      ok: boolean
      value: number
      workerId: number
    }[]
    expect(entries.map((e) => e.value).sort((a, b) => a - b)).toEqual(pids)
    expect(entries.every((e) => e.ok && e.pid === e.value)).toBe(true)
    // In worker id order, one entry per process.
    expect(entries.map((e) => e.workerId)).toEqual(
      [...entries.map((e) => e.workerId)].sort((a, b) => a - b),
    )

    await ps[2]!.ask('broadcast', { name: 'note', args: ['hi'] })
    await until(
      async () =>
        (await Promise.all(ps.map((p) => p.ask('notes')))).every(
          (a) => JSON.stringify(a.value) === '["hi"]',
        ),
      10_000,
      'every process to get the broadcast',
    )

    const health = (await ps[0]!.ask('health')).value as [number, string][]
    expect(health.map(([pid]) => pid).sort((a, b) => a - b)).toEqual(pids)
    expect(health.every(([, status]) => status === 'healthy')).toBe(true)
    const metrics = (await ps[0]!.ask('metrics')).value as string
    expect(metrics).toMatch(/app_requests_total 6/)
  }, 60_000)

  it('gather has partial results: a process that does not answer gets a timeout entry, the others their values', async () => {
    const dir = newDir()
    const ps = [await start('partial', dir), await start('partial', dir)]
    const gathered = await ps[0]!.ask('gather', { name: 'hang', timeoutMs: 300 })
    const entries = gathered.value as { ok: boolean; error?: { code?: string } }[]
    expect(entries).toHaveLength(2)
    expect(entries.map((e) => e.error?.code)).toEqual([
      'ERR_CONCLAVE_AGENT_TIMEOUT',
      'ERR_CONCLAVE_AGENT_TIMEOUT',
    ])
    const call = await ps[1]!.ask('call', { name: 'hang', timeoutMs: 300 })
    expect(call.error?.code).toBe('ERR_CONCLAVE_AGENT_TIMEOUT')
  }, 60_000)

  it('fails over: kill -9 of the designated process (a client, then the hub itself), and the next calls run in a survivor', async () => {
    const dir = newDir()
    const ps = [
      await start('failover', dir),
      await start('failover', dir),
      await start('failover', dir),
      await start('failover', dir),
    ]
    let alive = ps
    for (let round = 0; round < 2; round++) {
      const first = (await alive[0]!.ask('whoami')).value as number
      const victim = alive.find((p) => p.pid === first)!
      const hub = ps[0]! // the first process hosts the hub
      // Round 0: a designated client (if the hub is designated, kill it in round 1 instead).
      if (round === 0 && victim === hub) continue
      await victim.kill()
      alive = alive.filter((p) => p !== victim)
      let next: number | undefined
      await until(
        async () => {
          const answer = await alive[0]!.ask('whoami', {})
          if (answer.ok) next = answer.value as number
          return answer.ok
        },
        20_000,
        'a call answered by a new designated process',
      )
      expect(next).not.toBe(first)
      expect(alive.map((p) => p.pid)).toContain(next)
      const gathered = (await alive.at(-1)!.ask('gather', { name: 'pid' })).value as unknown[]
      expect(gathered).toHaveLength(alive.length)
      if (round === 0) {
        // Then the hub itself, designated or not: a survivor becomes the hub, calls go on.
        await hub.kill()
        alive = alive.filter((p) => p !== hub)
        await until(
          async () => (await alive[0]!.ask('whoami')).ok,
          20_000,
          'calls after the hub was killed',
        )
      }
    }
  }, 120_000)

  it('a call in flight when the hub or the designated process dies fails at once (AgentDisconnectedError when the hub died, DesignatedLostError when only the designated process did), not at its timeout; the next calls run', async () => {
    const dir = newDir()
    const ps = [
      await start('inflight', dir),
      await start('inflight', dir),
      await start('inflight', dir),
      await start('inflight', dir),
    ]
    let alive = ps
    // Two rounds: the hub dies under a call, then the designated process does.
    for (const victimOf of ['hub', 'designated'] as const) {
      const designated = (await alive.at(-1)!.ask('whoami')).value as number
      const flags = await Promise.all(alive.map((p) => p.ask('hub')))
      const hubs = alive.filter((_, i) => flags[i]!.value === true)
      expect(hubs, 'one hub').toHaveLength(1)
      const hub = hubs[0]!
      const victim = victimOf === 'hub' ? hub : alive.find((p) => p.pid === designated)!
      // A caller that is neither: its call hangs in the designated process until the end.
      const caller = alive.find((p) => p !== victim && p !== hub && p.pid !== designated)!
      const inFlight = caller.ask('call', { name: 'hang', timeoutMs: 120_000 })
      // The call has reached the designated process: a gather shows the hub routes (a hop in order).
      await caller.ask('gather', { name: 'pid' })
      await victim.kill()
      alive = alive.filter((p) => p !== victim)
      const answer = await Promise.race([
        inFlight,
        new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 30_000)),
      ])
      expect(answer, `${victimOf}: the call in flight`).not.toBe('hung')
      // The caller's channel closes with the hub (whatever else that process was); a designated
      // process dying under a live hub is reported by that hub.
      expect((answer as Answer).error?.name, `${victimOf}: ${JSON.stringify(answer)}`).toBe(
        victim === hub ? 'AgentDisconnectedError' : 'DesignatedLostError',
      )
      await until(
        async () => (await caller.ask('whoami')).ok,
        20_000,
        `calls after the ${victimOf} was killed`,
      )
      if (alive.length < 3) break
    }
  }, 120_000)
})

describe('the process agent over local, in this process', () => {
  it("a 'designated' listener that gives the role up at once (a synchronous resign) does not stall the agent: it is designated again and calls run", async () => {
    const backend = localBackend({ name: 'resign-at-once', dir: newDir() })
    const agent = new ProcessAgent({ backend, leaseMs: 2_000, onError: () => {} })
    const pid = agent.runInPrimary('pid', () => process.pid)
    let designations = 0
    let undesignations = 0
    agent.on('undesignated', () => undesignations++)
    agent.on('designated', (term) => {
      if (++designations === 1) void term.resign()
    })
    try {
      await agent.ready()
      await until(() => Promise.resolve(designations >= 2), 10_000, 'designated again')
      expect(undesignations).toBeGreaterThanOrEqual(1)
      expect(agent.isDesignated).toBe(true)
      expect(await pid()).toBe(process.pid)
    } finally {
      await agent.close()
      await backend.close()
    }
  }, 30_000)
})
