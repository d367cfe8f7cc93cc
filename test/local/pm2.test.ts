// PM2 from npm with a private PM2_HOME (testkit/pm2.ts): an app of several instances in cluster
// mode (`-i 4`: node:cluster workers of PM2's daemon) and in fork mode (separate processes),
// each instance campaigning on localBackend. One leader; failover after kill -9 and after
// `pm2 stop` of the leader's instance; `pm2 reload` never yields two holders.
import { afterEach, describe, expect, it } from 'vitest'
import { type Pm2App, type Pm2Record, startPm2App } from '../../testkit/pm2.js'
import { sleep, until } from '../helpers/wait.js'

let app: Pm2App | undefined
afterEach(async () => {
  await app?.close()
  app = undefined
})

/** Terms in token order, each ending at its revoke, or at `deaths[pid]` (killed), or open. */
function terms(records: Pm2Record[], deaths: Map<number, number>) {
  const elected = records.filter((r) => r.kind === 'elected').sort((a, b) => a.token - b.token)
  return elected.map((e) => {
    const revoked = records.find((r) => r.kind === 'revoked' && r.token === e.token)
    return { pid: e.pid, token: e.token, start: e.at, end: revoked?.at ?? deaths.get(e.pid) }
  })
}

function checkNoOverlap(records: Pm2Record[], deaths: Map<number, number>): void {
  const list = terms(records, deaths)
  for (let i = 1; i < list.length; i++) {
    const before = list[i - 1]!
    const after = list[i]!
    expect(after.token).toBeGreaterThan(before.token)
    // Every earlier term ended (revoked, or its process killed) before the next began.
    expect(before.end, `term ${before.token} of pid ${before.pid} never ended`).toBeDefined()
    expect(before.end!).toBeLessThanOrEqual(after.start)
  }
}

const leaderOf = (a: Pm2App) => {
  const list = terms(a.records(), new Map())
  const open = list.filter((t) => t.end === undefined)
  return open.at(-1)
}

const now = () => performance.timeOrigin + performance.now()

describe.each(['cluster', 'fork'] as const)('local under PM2 %s mode', (mode) => {
  it('elects one leader, fails over after kill -9 and pm2 stop of the leader, and never has two through pm2 reload', async () => {
    app = await startPm2App(mode, mode === 'cluster' ? 4 : 3)
    const a = app
    const deaths = new Map<number, number>()
    await until(() => leaderOf(a) !== undefined, 30_000, 'a first leader')
    await until(
      () => a.records().filter((r) => r.kind === 'started').length >= (mode === 'cluster' ? 4 : 3),
      30_000,
      'every instance',
    )
    await sleep(1_000)
    expect(a.records().filter((r) => r.kind === 'elected')).toHaveLength(1)

    // kill -9 of the leader's process (PM2 restarts it).
    const first = leaderOf(a)!
    deaths.set(first.pid, now())
    process.kill(first.pid, 'SIGKILL')
    await until(() => (leaderOf(a)?.token ?? 0) > first.token, 20_000, 'a leader after kill -9')

    // pm2 stop of the leader's instance: it resigns, another takes over.
    const second = leaderOf(a)!
    const list = JSON.parse(await a.pm2('jlist')) as { pid: number; pm_id: number }[]
    const pmId = list.find((p) => p.pid === second.pid)!.pm_id
    await a.pm2('stop', String(pmId))
    await until(() => (leaderOf(a)?.token ?? 0) > second.token, 20_000, 'a leader after pm2 stop')
    await a.pm2('start', String(pmId))

    // pm2 reload: every instance replaced, one at a time.
    const before = new Set(await a.pids())
    await a.pm2('reload', 'app')
    await until(
      async () => (await a.pids()).every((pid) => !before.has(pid)),
      60_000,
      'every instance reloaded',
    )
    await until(
      () => {
        const leader = leaderOf(a)
        return leader !== undefined && !before.has(leader.pid)
      },
      20_000,
      'a leader among the reloaded instances',
    )
    checkNoOverlap(a.records(), deaths)
    const elected = a.records().filter((r) => r.kind === 'elected').length
    console.log(`[pm2 ${mode}] ${elected} terms, none overlapping`)
  }, 180_000)
})
