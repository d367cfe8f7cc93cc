/**
 * The orphan check: many short acquire / abort / crash cycles against one backend, then every
 * resource must be free once a lease has passed, and a newcomer must win each one at once.
 *   acquire: campaign (with a short timeout), resign
 *   abort:   campaign, aborted after 0 to 3 ms (often while the acquire is in flight: the core
 *            withdraws the entry without a token)
 *   crash:   a fresh backend acquires, then drops its connection without releasing (for
 *            cluster: the primary's hub connection closes, as when a worker dies)
 * Usage: npx tsx chaos/cycles.ts --backend NAME[,NAME...|all] [--cycles 10000] [--seed N]
 */
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Backend } from '../src/backend.js'
import { Election } from '../src/election.js'
import { CHAOS_BACKENDS, chaosBackend, type ChaosServer } from './backends.js'
import { Prng } from './prng.js'

export interface CyclesOptions {
  backend: string
  cycles: number
  seed: number
  /** Parallel loops, each with its own backend instance. Default 6. */
  concurrency?: number
  /** Resources the cycles spread over. Default 20. */
  resources?: number
  leaseMs?: number
  tickets?: number
}

export interface CyclesResult {
  backend: string
  cycles: number
  counts: { acquired: number; timedOut: number; aborted: number; crashed: number; errors: number }
  /** Grants still listed a lease after the last cycle (must be none). */
  orphans: { resource: string; candidate: string; token: number }[]
  /** Resources a newcomer could not win at once after that (must be none). */
  blocked: string[]
  ms: number
}

async function crashBackend(
  name: string,
  server: ChaosServer,
): Promise<{ backend: Backend; crash(): Promise<void> }> {
  if (name === 'cluster') {
    // What the primary does when a worker dies: close its hub connection.
    const { serveCluster, RemoteBackend } = await import('../src/backends/cluster/index.js')
    const listeners = new Set<(m: unknown) => void>()
    const connection = serveCluster().connect((reply) => {
      for (const l of listeners) l(reply)
    })
    const backend = new RemoteBackend(
      {
        send: (m) => connection.receive(m),
        onMessage: (l) => (listeners.add(l), () => listeners.delete(l)),
        onClose: () => () => {},
      },
      { name: 'cluster' },
    )
    return {
      backend,
      crash: async () => {
        await connection.close()
        await backend.close().catch(() => {})
      },
    }
  }
  const backend = await chaosBackend(name)!.connect(urlOf(server))
  // Closing the client drops the connection; no release is sent.
  return { backend, crash: () => backend.close() }
}

function urlOf(server: ChaosServer): string {
  return server.target ? server.url(server.target.host, server.target.port) : server.url('', 0)
}

/**
 * Waits until the fresh server grants at all: Redis grants nothing new while its startup grace
 * lasts (its first lease + 1 s of uptime), and cycles that all give up within 30 ms would
 * otherwise never acquire. An error (a server not ready yet) is asked again, for 30 s.
 */
async function firstGrant(
  connect: (url: string) => Promise<Backend>,
  url: string,
  leaseMs: number,
): Promise<void> {
  const probe = await connect(url)
  const request = {
    resource: 'cycles/probe',
    candidate: 'probe',
    tickets: 1,
    leaseMs,
    metadata: null,
  }
  try {
    const end = performance.now() + 30_000
    for (;;) {
      let retryInMs = 100
      try {
        const result = await probe.acquire(request)
        if (result.acquired) {
          await probe.release({ ...request, token: result.token })
          return
        }
        retryInMs = result.retryInMs
      } catch (error) {
        // A fresh server may not be ready yet (a Redis Cluster replica still syncing does not
        // acknowledge within replicaTimeoutMs): not ready is not a failure, until the deadline.
        if (performance.now() > end) throw error
      }
      if (performance.now() > end) throw new Error(`${url} granted nothing for 30 s`)
      await sleep(Math.min(Math.max(retryInMs, 10), 500))
    }
  } finally {
    await probe.close()
  }
}

export async function runCycles(options: CyclesOptions): Promise<CyclesResult> {
  const entry = chaosBackend(options.backend)
  if (!entry) throw new Error(`unknown backend ${options.backend}`)
  const leaseMs = options.leaseMs ?? 1_000
  const tickets = options.tickets ?? 1
  const concurrency = options.concurrency ?? 6
  const run = randomBytes(3).toString('hex')
  const resources = Array.from(
    { length: options.resources ?? 20 },
    (_, i) => `cycles/${options.backend}-${run}/r${i}`,
  )
  const prng = new Prng(options.seed)
  const counts = { acquired: 0, timedOut: 0, aborted: 0, crashed: 0, errors: 0 }
  const started = performance.now()
  const server = await entry.start({ leaseMs })
  const url = urlOf(server)
  await firstGrant(entry.connect, url, leaseMs)
  let next = 0
  try {
    const loops = Array.from({ length: concurrency }, async (_, loop) => {
      const backend = await entry.connect(url)
      try {
        while (next < options.cycles) {
          const i = next++
          const resource = prng.pick(resources)
          const roll = prng.next()
          const id = `l${loop}-c${i}`
          try {
            if (roll < 0.15) {
              const crash = await crashBackend(options.backend, server)
              const result = await crash.backend.acquire({
                resource,
                candidate: id,
                tickets,
                leaseMs,
                metadata: null,
              })
              if (result.acquired) counts.crashed++
              await crash.crash()
              continue
            }
            const election = new Election(backend, resource, { id, leaseMs, tickets })
            election.on('error', () => counts.errors++)
            const controller = new AbortController()
            // Aborts: a third on the next microtask (the acquire is surely in flight), the rest
            // after 0 to 3 ms; the other campaigns give up after 30 ms (the resource is busy).
            const abortAfter = roll < 0.6 ? prng.between(0, 3) : 30
            const timer = setTimeout(() => controller.abort(), abortAfter)
            if (roll < 0.3) queueMicrotask(() => controller.abort())
            try {
              const term = await election.campaign({ signal: controller.signal })
              counts.acquired++
              await term.resign()
            } catch {
              if (roll < 0.6) counts.aborted++
              else counts.timedOut++
            } finally {
              clearTimeout(timer)
              await election.close()
            }
          } catch {
            counts.errors++
          }
        }
      } finally {
        await backend.close()
      }
    })
    await Promise.all(loops)
    // Crashed grants expire within a lease (the server's clock, so allow it some slack).
    await sleep(leaseMs + 1_500)
    const check = await entry.connect(url)
    const orphans: CyclesResult['orphans'] = []
    const blocked: string[] = []
    try {
      for (const resource of resources) {
        for (const h of await check.holders(resource)) {
          orphans.push({ resource, candidate: h.candidate, token: h.token })
        }
        const won = await check.acquire({
          resource,
          candidate: 'newcomer',
          tickets: 1,
          leaseMs,
          metadata: null,
        })
        if (!won.acquired) blocked.push(resource)
        else await check.release({ resource, candidate: 'newcomer', token: won.token })
      }
    } finally {
      await check.close()
    }
    return {
      backend: options.backend,
      cycles: options.cycles,
      counts,
      orphans,
      blocked,
      ms: performance.now() - started,
    }
  } finally {
    await server.stop()
  }
}

// The command line.
if (
  process.argv[1] &&
  import.meta.url.endsWith(process.argv[1].replace(/^.*\/chaos\//, '/chaos/'))
) {
  const { parseArgs } = await import('node:util')
  const { values } = parseArgs({
    options: {
      backend: { type: 'string' },
      cycles: { type: 'string' },
      seed: { type: 'string' },
    },
  })
  const backends =
    !values.backend || values.backend === 'all'
      ? Object.keys(CHAOS_BACKENDS)
      : values.backend.split(',')
  const cycles = Number(values.cycles ?? 10_000)
  const seed = Number(values.seed ?? 1)
  let bad = false
  console.log(
    '| backend | cycles | acquired | aborted | timed out | crashed holding | errors | orphaned grants | blocked resources | time |',
  )
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
  for (const backend of backends) {
    const r = await runCycles({ backend, cycles, seed })
    bad ||= r.orphans.length > 0 || r.blocked.length > 0
    console.log(
      `| ${backend} | ${r.cycles} | ${r.counts.acquired} | ${r.counts.aborted} | ${r.counts.timedOut} | ${r.counts.crashed} | ${r.counts.errors} | ${r.orphans.length} | ${r.blocked.length} | ${(r.ms / 1000).toFixed(1)} s |`,
    )
    if (r.orphans.length) console.log(JSON.stringify(r.orphans.slice(0, 5)))
  }
  process.exit(bad ? 1 : 0)
}
