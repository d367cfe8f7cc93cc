/**
 * The holder program of the crash scenarios, one for every subject kind:
 *   node --import tsx bench/holder.ts <module> <config JSON>
 * imports bench/subjects/<module>.ts, takes the resource with that module's `holdInChild`, says
 * "held" over IPC and waits to be killed. Started with child_process.fork, or as a cluster
 * worker for conclave/cluster.
 */
import type { HoldInChild, HolderConfig, HolderMessage } from './probes.js'
import { now } from './probes.js'

const [module, json] = process.argv.slice(2)
const send = (message: HolderMessage) => process.send?.(message)
// The parent is gone (it stopped or was killed): nothing is left to hold for.
process.on('disconnect', () => process.exit(0))
// Kept alive by this timer: some subjects unref their renewal timers.
setInterval(() => {}, 60_000)

try {
  if (!module || !/^[a-z-]+$/.test(module) || !json)
    throw new Error('usage: holder.ts <module> <config JSON>')
  const config = JSON.parse(json) as HolderConfig
  const { holdInChild } = (await import(`./subjects/${module}.ts`)) as { holdInChild: HoldInChild }
  await holdInChild(config, () => send({ type: 'lost', at: now() }))
  send({ type: 'held' })
} catch (error) {
  send({ type: 'failed', error: (error as Error).stack ?? String(error) })
  process.exit(1)
}
