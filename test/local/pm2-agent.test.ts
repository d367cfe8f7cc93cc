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
}

function lines(a: Pm2App): Line[] {
  const dir = join(a.home, 'records')
  const out: Line[] = []
  for (const file of readdirSync(dir)) {
    const pid = Number(file.replace('.log', ''))
    for (const line of readFileSync(join(dir, file), 'utf8').split('\n')) {
      const [kind, value, at] = line.split(' ')
      if (kind === 'called' || kind === 'callfailed' || kind === 'gathered') {
        out.push({ pid, kind, value: value!, at: Number(at) })
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
  },
)
