/**
 * The waiter program of the many-waiters scenario, one for every conclave backend:
 *   node --import tsx bench/waiters.ts <module> <config JSON>
 * imports bench/subjects/<module>.ts, makes ONE backend with that module's `waitersBackend` (as
 * one app process would have) and `config.count` Elections on it for `config.resource`, all
 * campaigning. It reports over IPC when every candidate has been answered ("ready"), each
 * election (with the time, see probes.now), and answers the parent's commands: resign the term
 * held here, report this process's CPU time, close.
 */
import type { Backend } from '../src/backend.js'
import { Election } from '../src/election.js'
import type { Term } from '../src/term.js'
import {
  now,
  ownCpuMs,
  type WaiterCommand,
  type WaiterMessage,
  type WaitersConfig,
} from './probes.js'

const [module, json] = process.argv.slice(2)
const send = (message: WaiterMessage) => process.send?.(message)
// The parent is gone (it stopped or was killed): nothing is left to wait for.
process.on('disconnect', () => process.exit(0))
setInterval(() => {}, 60_000)

try {
  if (!module || !/^[a-z-]+$/.test(module) || !json)
    throw new Error('usage: waiters.ts <module> <config JSON>')
  const config = JSON.parse(json) as WaitersConfig
  const { waitersBackend } = (await import(`./subjects/${module}.ts`)) as {
    waitersBackend: (config: WaitersConfig) => Backend
  }
  const backend = waitersBackend(config)
  const elections: Election[] = []
  const held: Term[] = []
  let answered = 0
  let errors = 0
  let firstError: string | undefined
  let ready = false
  // Campaigns start a few at a time, the next as one is answered: thousands of first asks at
  // once on a loaded host time out (etcd), and this measures waiting, not a start-up storm.
  const inFlight = Number(config.startInFlight)
  let started = 0
  const startNext = () => {
    if (started < config.count) campaign(started++)
  }
  const answer = () => {
    if (++answered === config.count && !ready) {
      ready = true
      send({ type: 'ready' })
    }
    startNext()
  }
  const campaign = (i: number) => {
    const e = new Election(backend, config.resource, { leaseMs: config.leaseMs })
    elections[i] = e
    let first = true
    e.on('waiting', () => {
      if (first) answer()
      first = false
    })
    e.on('error', (error) => {
      errors++
      firstError ??= error.message
    })
    e.campaign().then(
      (term) => {
        const at = now()
        if (first) answer()
        first = false
        held.push(term)
        send({ type: 'elected', at })
      },
      () => {},
    )
  }
  for (let i = 0; i < Math.min(inFlight, config.count); i++) startNext()
  // Progress for the parent, which reports how far each process got if they take too long.
  const progress = setInterval(() => {
    send({ type: 'progress', answered, errors })
    if (ready) clearInterval(progress)
  }, 2_000)
  process.on('message', (command: WaiterCommand) => {
    void (async () => {
      if (command.cmd === 'resign') {
        const term = held.shift()
        if (!term) return send({ type: 'failed', error: 'asked to resign, but holds nothing' })
        const at = now()
        await term.resign()
        send({ type: 'resigned', at })
      } else if (command.cmd === 'cpu') {
        send({ type: 'cpu', ms: ownCpuMs() })
      } else if (command.cmd === 'close') {
        await Promise.all(elections.map((e) => e.close()))
        await backend.close()
        send({ type: 'closed', errors, ...(firstError ? { firstError } : {}) })
        process.exit(0)
      }
    })().catch((error: unknown) =>
      send({ type: 'failed', error: (error as Error).stack ?? String(error) }),
    )
  })
} catch (error) {
  send({ type: 'failed', error: (error as Error).stack ?? String(error) })
  process.exit(1)
}
