// A schedule() instance in a process of its own, to kill, pause or SIGTERM around fire times.
//   node --import tsx testkit/cron-candidate.ts <backend URL> <resource> <cron expression>
//        [<schedule options JSON>] [<election options JSON>] [<program options JSON>]
// Program options: `workMs` (each fire works this long, honouring its signal: default 300).
// SIGTERM closes the election (drain, release), as closeOnSignals does in an application.
// Protocol: IPC messages marked `cron: 1`.
//   sends:   ready; elected {token}; fire {fire, token, attempt, pid}; done {fire, ok};
//            skipped {fires, count}; interrupted {fire, token, attempt, retried};
//            error {message} (each message at most once a second)
//   accepts: close
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { backendFromUrl } from '../src/cli/backends.js'
import { Election } from '../src/election.js'
import { closeOnSignals } from '../src/lifecycle.js'
import type { ElectionOptions } from '../src/options.js'
import { schedule, type ScheduleOptions } from '../src/schedule.js'

export const CRON_PROGRAM = new URL('./cron-candidate.ts', import.meta.url)
/** This program's path, for fork(). */
export const CRON_FILE = fileURLToPath(CRON_PROGRAM)

export type CronMessage =
  | { cron: 1; type: 'ready'; pid: number }
  | { cron: 1; type: 'elected'; token: number; pid: number }
  | { cron: 1; type: 'fire'; fire: number; token: number; attempt: number; pid: number }
  | { cron: 1; type: 'done'; fire: number; ok: boolean; pid: number }
  | { cron: 1; type: 'skipped'; fires: number[]; count: number; pid: number }
  | {
      cron: 1
      type: 'interrupted'
      fire: number
      token: number
      attempt: number
      retried: boolean
      pid: number
    }
  | { cron: 1; type: 'error'; message: string; pid: number }

/** The arguments, in the order the program reads them. */
export function cronArgs(
  url: string,
  resource: string,
  expression: string,
  options: Omit<ScheduleOptions, 'signal' | 'now'> = {},
  election: ElectionOptions = {},
  program: { workMs?: number } = {},
): string[] {
  return [
    url,
    resource,
    expression,
    JSON.stringify(options),
    JSON.stringify(election),
    JSON.stringify(program),
  ]
}

export function isCronMessage(message: unknown): message is CronMessage {
  return (
    typeof message === 'object' && message !== null && (message as { cron?: unknown }).cron === 1
  )
}

function send(message: Record<string, unknown>): void {
  if (process.connected) process.send!({ cron: 1, pid: process.pid, ...message })
}

async function main(argv: string[]): Promise<void> {
  const [url, resource, expression, optionsJson, electionJson, programJson] = argv
  if (!url || !resource || !expression)
    throw new Error('usage: cron-candidate.ts <backend URL> <resource> <cron> [<options JSON>]...')
  const options = JSON.parse(optionsJson ?? '{}') as ScheduleOptions
  const program = JSON.parse(programJson ?? '{}') as { workMs?: number }
  const backend = await backendFromUrl(url)
  const election = new Election(
    backend,
    resource,
    JSON.parse(electionJson ?? '{}') as ElectionOptions,
  )
  const lastReported = new Map<string, number>()
  const report = (error: Error) => {
    const message = `${(error as { code?: string }).code ?? error.name}: ${error.message.slice(0, 160)}`
    if (performance.now() - (lastReported.get(message) ?? -1e9) < 1_000) return
    lastReported.set(message, performance.now())
    send({ type: 'error', message })
  }
  election.on('error', report)
  election.on('elected', (term) => send({ type: 'elected', token: term.token }))
  const workMs = program.workMs ?? 300
  const job = schedule(
    election,
    expression,
    async ({ fireTime, token, attempt, signal }) => {
      send({ type: 'fire', fire: fireTime.getTime(), token, attempt })
      await sleep(workMs, undefined, { signal })
    },
    options,
  )
  job.on('error', report)
  job.on('done', (info) => send({ type: 'done', fire: info.fireTime.getTime(), ok: info.ok }))
  job.on('skipped', (info) =>
    send({ type: 'skipped', fires: info.fireTimes.map((d) => d.getTime()), count: info.count }),
  )
  job.on('interrupted', (info) =>
    send({
      type: 'interrupted',
      fire: info.fireTime.getTime(),
      token: info.token,
      attempt: info.attempt,
      retried: info.retried,
    }),
  )
  const close = async () => {
    await election.close()
    await backend.close().catch(() => {})
  }
  closeOnSignals([{ close }], { timeoutMs: 10_000 })
  process.on('message', (message: unknown) => {
    if (isCronMessage(message) && (message as { type: string }).type === 'close')
      void close().then(() => process.exit(0))
  })
  process.on('disconnect', () => void close().then(() => process.exit(0)))
  send({ type: 'ready' })
}

if (process.argv[1] !== undefined && pathToFileURL(process.argv[1]).href === CRON_PROGRAM.href) {
  await main(process.argv.slice(2))
}
