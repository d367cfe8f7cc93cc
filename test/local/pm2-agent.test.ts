// The process agent over `local` under PM2 (testkit/pm2-app.ts with CONCLAVE_AGENT=1): every
// instance calls the designated process (runInPrimary) four times a second and gathers every
// instance once a second, logging what it got. One designated process for all; after kill -9
// of it, the calls go to a survivor; PM2's restarted instance joins the gathers.
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { type Pm2App, startPm2App } from '../../testkit/pm2.js'
import { until } from '../helpers/wait.js'

let app: Pm2App | undefined
afterEach(async () => {
  await app?.close()
  app = undefined
})

interface Line {
  pid: number
  kind: string
  value: string
  at: number
  /** The error's message, for a failed call or an error. */
  message?: string
}

function lines(a: Pm2App): Line[] {
  const dir = join(a.home, 'records')
  const out: Line[] = []
  for (const file of readdirSync(dir)) {
    const pid = Number(file.replace('.log', ''))
    for (const line of readFileSync(join(dir, file), 'utf8').split('\n')) {
      const [kind, value, at, ...words] = line.split(' ')
      if (
        kind === 'called' ||
        kind === 'callfailed' ||
        kind === 'gathered' ||
        kind === 'slowfailed' ||
        kind === 'slowdone'
      ) {
        out.push({ pid, kind, value: value!, at: Number(at), message: words.join(' ') })
      } else if (kind === 'err' || kind === 'elected' || kind === 'revoked') {
        // What the instance's election and agent went through (for a failure's message).
        out.push({ pid, kind, value: value!, at: Number(at), message: words.join(' ') })
      } else if (kind === 'hub') {
        out.push({ pid, kind, value: '', at: Number(value) })
      }
    }
  }
  return out.sort((x, y) => x.at - y.at)
}

/** The pid each instance's latest call since `since` was answered by. */
function latestCalls(a: Pm2App, since: number): Map<number, number> {
  const latest = new Map<number, number>()
  for (const l of lines(a))
    if (l.kind === 'called' && l.at > since) latest.set(l.pid, Number(l.value))
  return latest
}

const now = () => performance.timeOrigin + performance.now()

/** Waits until every instance in `pids` has its calls since `since` answered by one process. */
async function oneDesignated(a: Pm2App, pids: number[], since: number, what: string) {
  let designated = 0
  await until(
    () => {
      const latest = latestCalls(a, since)
      const answers = new Set(pids.map((p) => latest.get(p)))
      if (answers.size !== 1 || answers.has(undefined)) return false
      designated = [...answers][0]!
      return pids.includes(designated)
    },
    60_000,
    what,
  ).catch((error: Error) => {
    // Say what the instances went through since then (terms, errors, the last calls).
    const after = lines(a).filter((l) => l.at > since)
    const say = (l: Line) => `${l.pid} ${l.kind} ${l.value} +${(l.at - since).toFixed(0)}ms`
    const events = after.filter((l) => ['err', 'elected', 'revoked', 'hub'].includes(l.kind))
    throw new Error(
      `${error.message} (instances ${pids.join(', ')}); since then: ${events.slice(0, 30).map(say).join('; ')}; last: ${after.slice(-12).map(say).join('; ')}`,
    )
  })
  return designated
}

/** The pm2 id of the instance with this pid. */
async function pmId(a: Pm2App, pid: number): Promise<number> {
  const list = JSON.parse(await a.pm2('jlist')) as { pid: number; pm_id: number }[]
  const found = list.find((p) => p.pid === pid)
  if (!found) throw new Error(`no pm2 instance has pid ${pid}`)
  return found.pm_id
}

describe.each(['cluster', 'fork'] as const)(
  'the process agent over local under PM2 %s mode',
  (mode) => {
    it('one designated process answers every instance; after kill -9 of it a survivor does; gathers reach every instance', async () => {
      const n = 3
      app = await startPm2App(mode, n, 2_000, { CONCLAVE_AGENT: '1' })
      const a = app
      const pids = new Set(await a.pids())
      let designated = 0
      await until(
        () => {
          const latest = latestCalls(a, 0)
          const answers = new Set(latest.values())
          if (latest.size < n || answers.size !== 1) return false
          designated = [...answers][0]!
          return true
        },
        60_000,
        'every instance answered by one designated process',
      )
      expect(pids.has(designated)).toBe(true)
      await until(
        () => lines(a).some((l) => l.kind === 'gathered' && l.value === String(n)),
        30_000,
        `a gather answered by all ${n} instances`,
      )

      const killedAt = now()
      process.kill(designated, 'SIGKILL')
      let successor = 0
      await until(
        () => {
          const latest = latestCalls(a, killedAt)
          const survivors = [...pids].filter((p) => p !== designated)
          const answers = new Set(survivors.map((p) => latest.get(p)))
          if (answers.size !== 1 || answers.has(undefined)) return false
          successor = [...answers][0]!
          return successor !== designated
        },
        30_000,
        'the survivors answered by a new designated process',
      )
      expect(successor).not.toBe(designated)
      // PM2 restarts the killed instance; it joins the gathers again.
      await until(
        () =>
          lines(a).some(
            (l) => l.kind === 'gathered' && l.value === String(n) && l.at > killedAt + 1_000,
          ),
        60_000,
        `a gather answered by all ${n} instances after the restart`,
      )
      const failedAfter = lines(a).filter((l) => l.kind === 'callfailed' && l.at > killedAt)
      console.log(
        `[pm2 ${mode} agent] designated ${designated} -> ${successor}; ${failedAfter.length} calls failed around the kill (${[...new Set(failedAfter.map((l) => l.value))].join(', ')})`,
      )
    }, 180_000)

    it('pm2 stop of the designated process, pm2 stop of the hub, then pm2 reload: calls keep working after each failover; calls in flight fail at once with a clear error (DesignatedLostError, AgentDisconnectedError), none waits out its timeout', async () => {
      const n = 3
      app = await startPm2App(mode, n, 2_000, { CONCLAVE_AGENT: '1', CONCLAVE_AGENT_SLOW: '1' })
      const a = app
      const pids = await a.pids()
      const designated = await oneDesignated(a, pids, 0, 'one designated process')
      const startedAt = now()
      /** Slow calls (one a second, 40 s each) are in flight in the designated process by now. */
      const slowInFlight = () => new Promise((resolve) => setTimeout(resolve, 3_000))
      /** Every one of `who` had a slow call fail after `since` with one of `codes`. */
      const slowFailed = async (who: number[], since: number, codes: string[], what: string) =>
        until(
          () =>
            who.every((pid) =>
              lines(a).some(
                (l) =>
                  l.pid === pid &&
                  l.kind === 'slowfailed' &&
                  codes.includes(l.value) &&
                  l.at > since,
              ),
            ),
          30_000,
          what,
        ).catch((error: Error) => {
          const seen = lines(a).filter((l) => l.kind.startsWith('slow') && l.at > since)
          throw new Error(
            `${error.message}; since ${since.toFixed(0)}: ${[...new Set(seen.map((l) => `${l.pid} ${l.kind} ${l.value}${l.message ? ` (${l.message})` : ''}`))].join('; ')}`,
          )
        })
      await slowInFlight()

      // 1. pm2 stop of the designated process.
      const designatedId = String(await pmId(a, designated))
      const stoppedAt = now()
      await a.pm2('stop', designatedId)
      const survivors = pids.filter((p) => p !== designated)
      const successor = await oneDesignated(a, survivors, stoppedAt, 'a new designated process')
      expect(successor).not.toBe(designated)
      // Their slow calls running in the stopped process failed, long before their 40 s run or
      // 120 s timeout: DesignatedLostError (AgentDisconnectedError if it was the hub too).
      await slowFailed(
        survivors,
        stoppedAt,
        ['ERR_CONCLAVE_AGENT_DESIGNATED_LOST', 'ERR_CONCLAVE_AGENT_DISCONNECTED'],
        'the slow calls in the stopped designated process failing',
      )
      await a.pm2('start', designatedId)

      // 2. pm2 stop of the hub's process (the latest instance to say it became the hub).
      const restartedAt = now()
      await slowInFlight()
      const hub = lines(a)
        .filter((l) => l.kind === 'hub')
        .at(-1)!.pid
      const online = await a.pids()
      // The designated process now (the line of waiters decides it, not who hosts the hub).
      const current = await oneDesignated(a, online, restartedAt, 'the designated process')
      const hubId = String(await pmId(a, hub))
      const hubStoppedAt = now()
      await a.pm2('stop', hubId)
      const rest = online.filter((p) => p !== hub)
      await oneDesignated(a, rest, hubStoppedAt, 'calls answered after the hub stopped')
      // The calls in flight through the old hub fail at once: AgentDisconnectedError (the
      // channel to the hub closed), or DesignatedLostError when the hub's process was the
      // designated one too (its agent gives the role up first as it stops). The designated
      // process's own calls run in it, not through the hub: they go on.
      const through = rest.filter((p) => p !== current)
      expect(through.length).toBeGreaterThan(0)
      await slowFailed(
        through,
        hubStoppedAt,
        ['ERR_CONCLAVE_AGENT_DISCONNECTED', 'ERR_CONCLAVE_AGENT_DESIGNATED_LOST'],
        'the slow calls in flight through the stopped hub failing',
      )
      await a.pm2('start', hubId)

      // 3. pm2 reload of every instance.
      const reloadedAt = now()
      await a.pm2('reload', 'app')
      const fresh = await a.pids()
      expect(fresh).toHaveLength(n)
      expect(fresh.filter((p) => online.includes(p) && p !== hub)).toEqual([])
      await oneDesignated(a, fresh, now(), 'one designated process after the reload')
      const failed = lines(a).filter(
        (l) => (l.kind === 'callfailed' || l.kind === 'slowfailed') && l.at > startedAt,
      )
      // A hung call would end in its timeout (2 s for the frequent ones): none did.
      expect(failed.filter((l) => l.value.includes('TIMEOUT'))).toEqual([])
      console.log(
        `[pm2 ${mode} agent] stop: ${designated} -> ${successor}; hub ${hub} stopped; reload ${((now() - reloadedAt) / 1000).toFixed(1)} s; failures ${[...new Set(failed.map((l) => l.value))].join(', ')}`,
      )
    }, 300_000)
  },
)
