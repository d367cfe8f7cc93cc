// conclave/redis on the topologies people run (issue 13), side by side: standalone, Sentinel
// (1 master, 2 replicas, 3 sentinels) with replicas 0 and 1, Cluster (3 masters, 3 replicas)
// with replicas 0 and 1. Uncontended acquire and graceful handoff (the shared scenarios), and
// one renewal tick of 10,000 held resources: its time, its round trips (pipelines sent: one per
// node the tick touches) and the CPU it costs the servers (INFO cpu of every redis-server of
// the topology, masters and replicas, not the sentinels; less their idle CPU over as long).
// Each subject starts its own topology and stops it when done, so no idle topology runs beside
// a measured one. Run: npm run bench -- --only redis-topologies (this replaces the former
// standalone script bench/redis-topologies.ts).
import { Cluster, Redis } from 'ioredis'
import { redisBackend } from '../../src/backends/redis/index.js'
import {
  startRedis,
  startRedisCluster,
  startSentinelTopology,
  type RedisServer,
} from '../../testkit/index.js'
import { pool, sleep, uniqueKey } from '../probes.js'
import { handoff, type Scenario, type Subject, uncontended } from '../scenarios.js'
import { notAvailable, single, summarize } from '../stats.js'
import { defineSuite } from '../suite.js'
import { conclaveSubject } from '../subjects/conclave.js'

/** A Redis topology as a subject: the shared scenarios, plus a backend to drive renew ticks. */
interface TopologySubject extends Subject {
  /** A backend on a client of its own whose pipelines are counted, and how to give it up. */
  tickBackend?(): {
    backend: ReturnType<typeof redisBackend>
    pipelines: () => number
    close: () => Promise<void>
  }
  /** used_cpu_sys + used_cpu_user of every redis-server of the topology so far (ms). */
  serverCpuMs?(): Promise<number>
}

/** How a subject reaches its topology once started. */
interface Started {
  make: () => Redis | Cluster
  servers: RedisServer[]
  stop: () => Promise<void>
}

/** Leases of the tick scenario's grants: no grant may expire during the ticks. */
const TICK_LEASE_MS = 60_000

/** Total CPU seconds a redis-server has used (INFO cpu), in ms. */
async function cpuMs(admin: Redis): Promise<number> {
  const info = await admin.info('cpu')
  const read = (name: string) => Number(new RegExp(`${name}:([\\d.]+)`).exec(info)?.[1] ?? NaN)
  return (read('used_cpu_sys') + read('used_cpu_user')) * 1_000
}

/** `client` with every pipeline it sends counted (a pipeline is one round trip to one node). */
function countPipelines(client: Redis | Cluster): () => number {
  let sent = 0
  const make = client.pipeline.bind(client)
  client.pipeline = (...args: Parameters<typeof make>) => {
    const pipeline = make(...args)
    const exec = pipeline.exec.bind(pipeline)
    pipeline.exec = (...e: Parameters<typeof exec>) => (sent++, exec(...e))
    return pipeline
  }
  return () => sent
}

/** One subject: its topology is started on open() and stopped on close(). */
function topologySubject(
  name: string,
  replicas: number,
  start: () => Promise<Started>,
): { name: string; open: () => Promise<TopologySubject> } {
  return {
    name,
    async open() {
      const started = await start()
      const admins = started.servers.map((s) => {
        const admin = new Redis(s.url, { commandTimeout: 5_000, maxRetriesPerRequest: 1 })
        admin.on('error', () => {})
        return admin
      })
      const backendOn = (client: Redis | Cluster, timeoutMs?: number) => {
        client.on('error', () => {})
        // Fresh, empty servers: the startup grace has nothing to protect.
        return redisBackend({
          client,
          startupGrace: false,
          replicas,
          ...(timeoutMs ? { timeoutMs } : {}),
        })
      }
      const subject = conclaveSubject({
        name,
        open: () => {
          const client = started.make()
          const backend = backendOn(client)
          return {
            backend,
            close: async () => {
              await backend.close()
              client.disconnect()
            },
          }
        },
      })
      return {
        ...subject,
        tickBackend() {
          const client = started.make()
          const pipelines = countPipelines(client)
          // A tick of 10,000 on a loaded machine may take longer than the default 5 s: measured,
          // not failed (its grants' 60 s leases leave room).
          const backend = backendOn(client, 30_000)
          return {
            backend,
            pipelines,
            close: async () => {
              await backend.close()
              client.disconnect()
            },
          }
        },
        serverCpuMs: async () =>
          (await Promise.all(admins.map(cpuMs))).reduce((sum, ms) => sum + ms, 0),
        async close() {
          for (const admin of admins) admin.disconnect()
          await started.stop()
        },
      }
    },
  }
}

/**
 * One candidate holds 10,000 resources (a backend, no elections: the tick is the backend's
 * renew(all)); ticks run back to back. Per tick: its time, the pipelines it sent, the CPU the
 * servers spent (summed over masters and replicas).
 */
export const renewTick: Scenario<TopologySubject> = {
  id: 'renew-tick',
  title: 'renew tick of 10,000 held resources',
  needs: ['tickBackend', 'serverCpuMs'],
  async run(subject, { quick, log }) {
    const n = quick ? 1_000 : 10_000
    const ticks = quick ? 5 : 20
    const { backend, pipelines, close } = subject.tickBackend!()
    try {
      const prefix = uniqueKey('tick')
      const held: { resource: string; candidate: string; token: number; leaseMs: number }[] = []
      const t0 = performance.now()
      await pool(n, 50, async (i) => {
        const resource = `${prefix}/${i}`
        for (let attempt = 1; ; attempt++) {
          try {
            const r = await backend.acquire({
              resource,
              candidate: 'c',
              tickets: 1,
              leaseMs: TICK_LEASE_MS,
              metadata: null,
            })
            if (!r.acquired) throw new Error(`${resource} not granted`)
            held.push({ resource, candidate: 'c', token: r.token, leaseMs: TICK_LEASE_MS })
            return
          } catch (error) {
            if (attempt === 3) throw error
          }
        }
      })
      log(`${subject.name}: ${n} held in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
      await backend.renew(held) // warm-up: scripts loaded, connections to every node made
      const [sent0, cpu0] = [pipelines(), await subject.serverCpuMs!()]
      const times: number[] = []
      for (let k = 0; k < ticks; k++) {
        const t = performance.now()
        const renewed = await backend.renew(held)
        times.push(performance.now() - t)
        if (!renewed.every(Boolean)) throw new Error('a renewal of the tick failed')
      }
      const [sent1, cpu1] = [pipelines(), await subject.serverCpuMs!()]
      // The servers' own background work (serverCron, replication pings) over as long, taken off.
      const elapsed = times.reduce((sum, t) => sum + t, 0)
      await sleep(elapsed)
      const idle = (await subject.serverCpuMs!()) - cpu1
      const note = `${n} held, ${ticks} ticks back to back`
      return [
        summarize('tick', times, 'ms', note),
        single('round trips per tick', (sent1 - sent0) / ticks, 'pipelines', ticks),
        Number.isNaN(cpu1 - cpu0)
          ? notAvailable('server CPU per tick', 'ms CPU', 'INFO cpu unreadable')
          : single(
              'server CPU per tick',
              Math.max(0, cpu1 - cpu0 - idle) / ticks,
              'ms CPU',
              ticks,
              'every redis-server (masters and replicas), INFO cpu, less their idle CPU over as long',
            ),
      ]
    } finally {
      await close()
    }
  },
}

const standalone = async (): Promise<Started> => {
  const server = await startRedis()
  return { make: () => new Redis(server.url), servers: [server], stop: () => server.stop() }
}

const sentinel = async (): Promise<Started> => {
  const topo = await startSentinelTopology()
  return {
    make: () => new Redis({ sentinels: topo.sentinelAddresses, name: topo.name }),
    servers: topo.servers,
    stop: () => topo.stop(),
  }
}

const cluster = async (): Promise<Started> => {
  const c = await startRedisCluster()
  return { make: () => new Cluster(c.startupNodes), servers: c.nodes, stop: () => c.stop() }
}

/** The redis-topologies suite: conclave/redis on each topology × uncontended, handoff, renew tick. */
export default defineSuite<TopologySubject>({
  name: 'redis-topologies',
  scenarios: [uncontended, handoff, renewTick],
  async setup() {
    return {
      subjects: [
        topologySubject('conclave/redis standalone', 0, standalone),
        topologySubject('conclave/redis sentinel replicas:0', 0, sentinel),
        topologySubject('conclave/redis sentinel replicas:1', 1, sentinel),
        topologySubject('conclave/redis cluster replicas:0', 0, cluster),
        topologySubject('conclave/redis cluster replicas:1', 1, cluster),
      ],
      teardown: async () => {},
    }
  },
})
