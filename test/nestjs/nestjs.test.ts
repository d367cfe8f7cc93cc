// conclave/nestjs in a real NestJS application (from npm): two instances (processes) on one
// real Redis. One @LeaderCron run per fire; the leader's SIGTERM (app.enableShutdownHooks)
// hands over to the other instance without losing or repeating a fire. Counts, not timings.
import { type ChildProcess, fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { Cron } from 'croner'
import { afterAll, describe, expect, it } from 'vitest'
import { startRedis, type RedisServer } from '../../testkit/index.js'

const APP = fileURLToPath(new URL('./app.ts', import.meta.url))
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

type Message =
  | { nest: 1; pid: number; type: 'ready' }
  | { nest: 1; pid: number; type: 'fire'; fire: number; token: number; attempt: number }
  | {
      nest: 1
      pid: number
      type: 'health'
      result: { crons: { status: string; leading: string[]; problems: string[] } }
    }

describe('conclave/nestjs: @LeaderCron in a NestJS app, two instances on one Redis', () => {
  let redis: RedisServer | undefined
  const children: ChildProcess[] = []
  afterAll(async () => {
    for (const child of children) child.kill('SIGKILL')
    await redis?.stop()
  })

  it('runs each fire once; the leader’s SIGTERM hands over without a lost fire', async () => {
    redis = await startRedis({ args: ['--notify-keyspace-events', 'Kghx'] })
    const name = `nest-${randomBytes(3).toString('hex')}`
    const messages: Message[] = []
    const live = new Map<number, ChildProcess>()
    const spawn = () => {
      const child = fork(APP, [redis!.url, name], {
        execArgv: ['--import', 'tsx'],
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      })
      child.on('message', (m: Message) => {
        if (m?.nest === 1) messages.push(m)
      })
      child.on('exit', () => live.delete(child.pid!))
      children.push(child)
      live.set(child.pid!, child)
    }
    const of = <T extends Message['type']>(type: T) =>
      messages.filter((m): m is Extract<Message, { type: T }> => m.type === type)
    const until = async <T>(check: () => T | undefined, what: string, timeoutMs = 60_000) => {
      const end = performance.now() + timeoutMs
      for (;;) {
        const value = check()
        if (value !== undefined) return value
        if (performance.now() > end)
          throw new Error(`timed out waiting for ${what}: ${JSON.stringify(messages.slice(-10))}`)
        await sleep(20)
      }
    }
    const nextFire = (what: string) => {
      const seen = of('fire').length
      return until(() => of('fire')[seen], what)
    }

    spawn()
    spawn()
    await until(() => (of('ready').length === 2 ? true : undefined), 'two apps ready')
    await nextFire('a first fire')
    const before = await nextFire('a second fire')

    // The terminus indicator: both up, exactly one leading the cron.
    for (const child of live.values()) child.send({ type: 'health' })
    const health = await until(
      () => (of('health').length >= 2 ? of('health').slice(0, 2) : undefined),
      'health answers',
    )
    expect(health.map((h) => h.result.crons.status)).toEqual(['up', 'up'])
    expect(health.filter((h) => h.result.crons.leading.includes(`cron/${name}`))).toHaveLength(1)

    // SIGTERM the leader right after a fire started (mid-fire): it drains, then releases.
    const leader = await nextFire('a fire before SIGTERM')
    expect(leader.pid).toBe(before.pid)
    live.get(leader.pid)!.kill('SIGTERM')
    await until(() => (live.has(leader.pid) ? undefined : true), 'the leader to exit')
    await until(() => of('fire').find((m) => m.pid !== leader.pid), 'a fire on the other instance')
    await nextFire('one more fire')
    await nextFire('and another')
    for (const child of live.values()) child.kill('SIGTERM')
    await until(() => (live.size === 0 ? true : undefined), 'every app to exit')

    const counts = new Map<number, number>()
    for (const m of of('fire')) counts.set(m.fire, (counts.get(m.fire) ?? 0) + 1)
    const first = Math.min(...counts.keys())
    const last = Math.max(...counts.keys())
    const cron = new Cron('*/2 * * * * *', { paused: true })
    const expected: number[] = []
    for (let d = cron.nextRun(new Date(first - 1)); d && d.getTime() <= last; d = cron.nextRun(d))
      expected.push(d.getTime())
    const runsPerFire = expected.map((f) => counts.get(f) ?? 0)
    console.log(
      `nestjs: ${expected.length} fires, runs per fire ${JSON.stringify([...new Set(runsPerFire)])}, on ${new Set(of('fire').map((m) => m.pid)).size} instances`,
    )
    expect(runsPerFire.filter((n) => n !== 1)).toEqual([])
    expect(new Set(of('fire').map((m) => m.pid)).size).toBe(2)
  }, 180_000)
})
