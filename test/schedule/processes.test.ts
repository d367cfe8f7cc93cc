// schedule() across real processes on real Redis, PostgreSQL and etcd servers: three instances
// of testkit/cron-candidate.ts on a two-second cron; the holder is SIGKILLed mid-fire, then
// SIGSTOPped mid-fire past its lease (and resumed), then SIGTERMed. With `missed: 'all'` every
// fire time from the first to the last must have run exactly once (an interrupted fire ran
// once and is reported, not retried). Counts, not timings: stable on a loaded machine. The
// three backends run side by side (describe.concurrent; each has its own server, processes and
// resource): the test waits on the cron, not on the CPU.
import { type ChildProcess, fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { Cron } from 'croner'
import { afterAll, describe, expect, it } from 'vitest'
import {
  type CronMessage,
  CRON_FILE,
  cronArgs,
  isCronMessage,
} from '../../testkit/cron-candidate.js'
import { startEtcd, startPostgres, startRedis, type ServerHandle } from '../../testkit/index.js'

const EXPRESSION = '*/2 * * * * *'
const LEASE = 3_000

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

interface Fixture {
  name: string
  start(): Promise<{ url: string; server: ServerHandle }>
}

const fixtures: Fixture[] = [
  {
    name: 'redis',
    async start() {
      const server = await startRedis({ args: ['--notify-keyspace-events', 'Kghx'] })
      return { url: server.url, server }
    },
  },
  {
    name: 'postgres',
    async start() {
      const server = await startPostgres()
      return { url: server.connectionString, server }
    },
  },
  {
    name: 'etcd',
    async start() {
      const server = await startEtcd()
      return { url: `etcd://${server.host}:${server.port}`, server }
    },
  },
]

/** The measured runs per fire, per backend, for the report. */
const table: string[] = []
afterAll(() => {
  if (table.length) console.log(`runs per fire under faults:\n${table.join('\n')}`)
})

for (const fixture of fixtures) {
  describe.concurrent(`schedule() across processes on ${fixture.name}`, () => {
    const children: ChildProcess[] = []
    let server: ServerHandle | undefined

    afterAll(async () => {
      for (const child of children) {
        child.kill('SIGCONT')
        child.kill('SIGKILL')
      }
      await server?.stop()
    })

    it('runs each fire exactly once: holder SIGKILLed mid-fire, SIGSTOPped mid-fire, SIGTERMed', async () => {
      const started = await fixture.start()
      server = started.server
      const resource = `cron/processes-${randomBytes(3).toString('hex')}`
      const messages: CronMessage[] = []
      const live = new Map<number, ChildProcess>()
      const spawn = () => {
        const child = fork(
          CRON_FILE,
          cronArgs(
            started.url,
            resource,
            EXPRESSION,
            { missed: 'all', maxCatchUp: 100 },
            { leaseMs: LEASE },
            { workMs: 1_500 },
          ),
          { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
        )
        child.on('message', (m: unknown) => {
          if (isCronMessage(m)) messages.push(m)
        })
        child.on('exit', () => live.delete(child.pid!))
        children.push(child)
        live.set(child.pid!, child)
        return child
      }
      const of = <T extends CronMessage['type']>(type: T) =>
        messages.filter((m): m is Extract<CronMessage, { type: T }> => m.type === type)
      const until = async <T>(check: () => T | undefined, timeoutMs: number, what: string) => {
        const end = performance.now() + timeoutMs
        for (;;) {
          const value = check()
          if (value !== undefined) return value
          if (performance.now() > end)
            throw new Error(`timed out waiting for ${what}: ${JSON.stringify(messages.slice(-20))}`)
          await sleep(20)
        }
      }
      /** Waits for the next fire to start, from now on, and returns its message. */
      const nextFire = (what: string) => {
        const seen = of('fire').length
        return until(() => of('fire')[seen], 30_000, what)
      }

      for (let i = 0; i < 3; i++) spawn()
      await until(() => (of('ready').length === 3 ? true : undefined), 60_000, 'three ready')
      await nextFire('a first fire')
      await nextFire('a second fire')

      // 1. SIGKILL the holder mid-fire.
      const killed = await nextFire('a fire to kill')
      live.get(killed.pid)!.kill('SIGKILL')
      await until(
        () => of('fire').find((m) => m.pid !== killed.pid && m.fire > killed.fire),
        30_000,
        'a fire on a new holder after the kill',
      )
      spawn() // its replacement

      // 2. SIGSTOP the holder mid-fire, past its lease; then let it go on.
      const paused = await nextFire('a fire to pause')
      const pausedChild = live.get(paused.pid)!
      pausedChild.kill('SIGSTOP')
      await until(
        () => of('fire').find((m) => m.pid !== paused.pid && m.fire > paused.fire),
        30_000,
        'a fire on a new holder during the pause',
      )
      await sleep(LEASE)
      pausedChild.kill('SIGCONT')
      await nextFire('a fire after the resume')

      // 3. SIGTERM the holder (a deploy): it hands over.
      const termed = await nextFire('a fire before SIGTERM')
      await until(
        () => of('done').find((m) => m.fire === termed.fire),
        30_000,
        'the fire to finish',
      )
      live.get(termed.pid)!.kill('SIGTERM')
      spawn()
      await until(
        () => of('fire').find((m) => m.pid !== termed.pid && m.fire > termed.fire),
        30_000,
        'a fire after SIGTERM',
      )
      await nextFire('one more fire')
      await nextFire('and another')

      // Stop every instance, then count.
      for (const child of live.values()) child.kill('SIGTERM')
      await until(() => (live.size === 0 ? true : undefined), 30_000, 'every instance to exit')

      const fires = of('fire')
      const counts = new Map<number, number>()
      for (const m of fires) counts.set(m.fire, (counts.get(m.fire) ?? 0) + 1)
      const first = Math.min(...counts.keys())
      const last = Math.max(...counts.keys())
      const cron = new Cron(EXPRESSION, { paused: true })
      const expected: number[] = []
      for (let d = new Date(first - 1); ;) {
        const next = cron.nextRun(d)!
        if (next.getTime() > last) break
        expected.push(next.getTime())
        d = next
      }
      const interrupted = of('interrupted')
      const runsPerFire = expected.map((f) => counts.get(f) ?? 0)
      const histogram = new Map<number, number>()
      for (const n of runsPerFire) histogram.set(n, (histogram.get(n) ?? 0) + 1)
      table.push(
        `| ${fixture.name} | ${expected.length} fires | ${[...histogram]
          .sort((a, b) => a[0] - b[0])
          .map(([n, k]) => `${k}×${n} run${n === 1 ? '' : 's'}`)
          .join(
            ', ',
          )} | interrupted reported: ${interrupted.length} | skipped: ${of('skipped').reduce((s, m) => s + m.count, 0)} |`,
      )
      expect(runsPerFire.filter((n) => n !== 1)).toEqual([]) // exactly one run per fire
      expect(of('skipped')).toEqual([])
      // The SIGKILLed fire was reported (never silently dropped), and not run again.
      expect(interrupted.map((m) => m.fire)).toContain(killed.fire)
      expect(interrupted.every((m) => !m.retried)).toBe(true)
      expect(counts.get(killed.fire)).toBe(1)
      expect(counts.get(paused.fire)).toBe(1)
    }, 240_000)
  })
}
