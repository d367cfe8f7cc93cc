/**
 * The chaos harness's backends: ONE entry per backend, and a backend still to come adds itself
 * here with one entry. An entry says how to start its server (the private instances of
 * testkit/), what URL reaches it, and which faults apply. A candidate makes its backend from
 * that URL through src/cli/backends.ts, the one scheme -> factory table (each backend module,
 * and so its client library, loaded only when its scheme is named); only the self-test
 * backends below, which no URL scheme names, bring a `connect` of their own.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import type { Backend } from '../src/backend.js'
import type { FaultProxy, ServerHandle } from '../testkit/index.js'
import type { FaultKind } from './records.js'
import { forwardingBackend } from '../src/backends/kit.js'
import { backendFromUrl } from '../src/cli/backends.js'

/** A running backend server, as the harness sees it. */
export interface ChaosServer {
  /** Where candidates connect (each through its own fault proxy); none for cluster. */
  target?: { host: string; port: number }
  /** The URL a candidate uses to reach the server at host:port (the proxy's address). */
  url(host: string, port: number): string
  /** Kill the server (SIGKILL, as a crash), keep it down for downMs, start it on the same port(s). */
  restart?(downMs: number): Promise<void>
  /**
   * The `partition` fault of a replicated server: isolate its master from everything but the
   * holder (`others`: the other candidates' proxies, cut too) until a replica is promoted, then
   * downMs more, then heal. False when it cannot now (nothing was cut).
   */
  isolate?(others: FaultProxy[], downMs: number): Promise<boolean>
  /** The holders of a resource, asked straight from the server: grants left behind. */
  holders(resource: string): Promise<{ candidate: string; token: number }[]>
  /** Stops the server and closes the harness's own client. */
  stop(): Promise<void>
}

export interface ChaosBackend {
  /** `fork`: candidates are child processes; `cluster`: workers of the harness (the primary). */
  mode: 'fork' | 'cluster'
  faults: readonly FaultKind[]
  /**
   * In the harness: start the server (for cluster, install the hub). `leaseMs`: the candidates'
   * lease, for a backend whose grace after a failover must know the longest one (maxLeaseMs).
   */
  start(settings?: { leaseMs?: number }): Promise<ChaosServer>
  /** In a candidate process: the backend for the URL the harness gave it. */
  connect: (url: string) => Promise<Backend>
}

/** `&maxLeaseMs=` of the run's lease: the failover grace lasts it (not the 60 s default). */
function maxLeaseParam(settings: { leaseMs?: number } | undefined): string {
  return settings?.leaseMs === undefined ? '' : `&maxLeaseMs=${settings.leaseMs}`
}

const NETWORKED: readonly FaultKind[] = ['kill', 'pause', 'stall', 'partition', 'restart']

/** A private server from testkit/ as a ChaosServer; `connect` is the entry's own. */
function serverOf(
  handle: ServerHandle & { host: string; port: number },
  url: (host: string, port: number) => string,
  connect: (url: string) => Promise<Backend>,
): ChaosServer {
  return {
    target: { host: handle.host, port: handle.port },
    url,
    async restart(downMs) {
      await handle.kill()
      await sleep(downMs)
      await handle.restart()
    },
    async holders(resource) {
      const backend = await connect(url(handle.host, handle.port))
      try {
        return await backend.holders(resource)
      } finally {
        await backend.close()
      }
    },
    stop: () => handle.stop(),
  }
}

export const CHAOS_BACKENDS: Record<string, ChaosBackend> = {
  cluster: {
    mode: 'cluster',
    // No server to restart, no TCP path to cut: the state lives in the harness (the primary).
    faults: ['kill', 'pause', 'stall'],
    async start() {
      // In the primary, the backend installs the hub the workers' backends talk to.
      const backend = await backendFromUrl('cluster:')
      return {
        url: () => 'cluster:',
        holders: (resource) => backend.holders(resource),
        stop: () => backend.close(),
      }
    },
    // cluster: is in the table (only the CLI's separate-process commands refuse it, with
    // requireSharedBackend): a worker's backendFromUrl('cluster:') joins the harness's hub.
    connect: (url) => backendFromUrl(url),
  },
  redis: {
    mode: 'fork',
    faults: NETWORKED,
    async start() {
      const { startRedis } = await import('../testkit/index.js')
      // No persistence, the hardest case: a restart forgets every grant, and the server's
      // startup grace must keep a second holder out while the first still believes.
      const server = await startRedis()
      return serverOf(server, (h, p) => `redis://${h}:${p}`, this.connect)
    },
    connect: (url) => backendFromUrl(url),
  },
  etcd: {
    mode: 'fork',
    faults: NETWORKED,
    async start() {
      const { startEtcd } = await import('../testkit/index.js')
      return serverOf(await startEtcd(), (h, p) => `etcd://${h}:${p}`, this.connect)
    },
    connect: (url) => backendFromUrl(url),
  },
  postgres: {
    mode: 'fork',
    faults: NETWORKED,
    async start() {
      const { startPostgres } = await import('../testkit/index.js')
      return serverOf(
        await startPostgres(),
        (h, p) => `postgres://postgres@${h}:${p}/postgres`,
        this.connect,
      )
    },
    connect: (url) => backendFromUrl(url),
  },
  // A 3-member etcd cluster: candidates reach the first member through their own fault proxy
  // (a partition cuts that member off from them, not the cluster) and the other two directly;
  // a restart is a SIGKILL of the etcd leader, down for the time asked, then restarted.
  'etcd-cluster': {
    mode: 'fork',
    faults: NETWORKED,
    async start() {
      const { startEtcdCluster } = await import('../testkit/index.js')
      const cluster = await startEtcdCluster()
      const [first, ...rest] = cluster.members
      const others = rest.map((m) => `${m.server.host}:${m.server.port}`)
      const url = (h: string, p: number) => `etcd://${[`${h}:${p}`, ...others].join(',')}`
      return {
        target: { host: first!.server.host, port: first!.server.port },
        url,
        async restart(downMs) {
          const leader = await cluster.leader()
          await leader.server.kill()
          await sleep(downMs)
          await leader.server.restart()
        },
        async holders(resource) {
          const backend = await backendFromUrl(url(first!.server.host, first!.server.port))
          try {
            return await backend.holders(resource)
          } finally {
            await backend.close()
          }
        },
        stop: () => cluster.stop(),
      }
    },
    connect: (url) => backendFromUrl(url),
  },
  // A PostgreSQL primary with a streaming standby, candidates through the switchable path (the
  // VIP stand-in). The first restart is a failover: replication frozen (the standby misses
  // what follows), SIGKILL of the primary, down for the time asked, the standby promoted and the
  // path moved to it; later ones SIGKILL and restart the promoted one in place.
  'postgres-standby': {
    mode: 'fork',
    faults: NETWORKED,
    async start(settings) {
      const { startPostgresStandby } = await import('../testkit/index.js')
      const pair = await startPostgresStandby()
      let current = pair.primary
      // The promotion grace lasts maxLeaseMs: the run's lease, not the 60 s default.
      const query = maxLeaseParam(settings).replace('&', '?')
      const url = (h: string, p: number) => `postgres://postgres@${h}:${p}/postgres${query}`
      return {
        target: { host: '127.0.0.1', port: pair.vip.port },
        url,
        async restart(downMs) {
          if (current === pair.primary) {
            pair.replication.cut({ mode: 'blackhole' })
            await sleep(Math.min(downMs, 200))
            await pair.primary.kill()
            await sleep(downMs)
            await pair.promote()
            current = pair.standby
            pair.vip.switchTo(pair.standby.port)
          } else {
            await current.kill()
            await sleep(downMs)
            await current.restart()
          }
        },
        async holders(resource) {
          const backend = await backendFromUrl(url('127.0.0.1', pair.vip.port))
          try {
            return await backend.holders(resource)
          } finally {
            await backend.close()
          }
        },
        stop: () => pair.stop(),
      }
    },
    connect: (url) => backendFromUrl(url),
  },
  // Redis behind Sentinel (1 master, 2 replicas, 3 sentinels) with the documented settings:
  // replicas: 1, the failover grace and maxLeaseMs. `restart` kills the master the sentinels
  // name, waits for the promotion of a replica, then starts the old one again (Sentinel makes it
  // a replica). `partition` isolates the first master from the sentinels, the replicas and
  // every candidate but the holder, until Sentinel promotes a replica, then heals (the issue's
  // 26.7 s of two holders without replicas: 1). For that the sentinels reach the first master
  // through a proxy (masterLink) and so does replication (links); each candidate reaches it
  // through its own proxy (the harness's, to `target`): ioredis' natMap maps the address the
  // sentinels give for it to that proxy (the URL's #via=host:port, read by `connect`).
  'redis-sentinel': {
    mode: 'fork',
    faults: ['kill', 'pause', 'restart', 'partition'],
    async start(settings) {
      const { startSentinelTopology } = await import('../testkit/index.js')
      const topo = await startSentinelTopology({
        replicas: [{ proxied: true }, { proxied: true }],
        masterProxied: true,
      })
      const masterLink = topo.masterLink!
      const url = `${topo.url}?replicas=1&replicaTimeoutMs=100${maxLeaseParam(settings)}`
      // The port the sentinels name a server by: the first master's is its proxy's.
      const announced = (server: { port: number }) =>
        server === topo.master ? masterLink.port : server.port
      return {
        target: { host: '127.0.0.1', port: topo.master.port },
        url: (h, p) => `${url}#via=127.0.0.1:${masterLink.port}>${h}:${p}`,
        async restart(downMs) {
          const port = await topo.masterPort()
          const master = topo.servers.find((s) => announced(s) === port)
          if (!master) return
          await master.kill()
          await topo.waitForFailover(port!)
          await sleep(downMs)
          await master.restart()
        },
        async isolate(others, downMs) {
          // Only the first master has the proxies that can isolate it.
          if ((await topo.masterPort()) !== masterLink.port) return false
          const cut = [masterLink, ...topo.links.filter((l) => l !== undefined), ...others]
          for (const proxy of cut) proxy.cut({ mode: 'blackhole' })
          try {
            await topo.waitForFailover(masterLink.port).catch(() => undefined)
            await sleep(downMs)
          } finally {
            for (const proxy of cut) {
              // Drop the held connections: the healed master is told by Sentinel to follow.
              proxy.cut({ mode: 'reset' })
              proxy.restore()
            }
          }
          return true
        },
        async holders(resource) {
          const backend = await backendFromUrl(url)
          try {
            return await backend.holders(resource)
          } finally {
            await backend.close()
          }
        },
        stop: () => topo.stop(),
      }
    },
    async connect(url) {
      const [base, via] = url.split('#via=')
      if (!via) return backendFromUrl(url)
      const [from, to] = via.split('>')
      const [host, port] = to!.split(':')
      const { redisBackend } = await import('../src/backends/redis/index.js')
      return redisBackend({
        url: base!,
        clientOptions: { natMap: { [from!]: { host: host!, port: Number(port) } } },
      })
    },
  },
  // A Redis Cluster (3 masters, 3 replicas) through a Cluster client, replicas: 1. `restart`
  // kills a master, waits until its replica took its slots, then starts it again (it rejoins
  // as a replica).
  'redis-cluster': {
    mode: 'fork',
    faults: ['kill', 'pause', 'restart'],
    async start(settings) {
      const { startRedisCluster } = await import('../testkit/index.js')
      const cluster = await startRedisCluster()
      const url = `redis+cluster://${cluster.startupNodes.map((n) => `${n.host}:${n.port}`).join(',')}?replicas=1&replicaTimeoutMs=100${maxLeaseParam(settings)}`
      let turn = 0
      return {
        url: () => url,
        async restart(downMs) {
          const masters = await cluster.masters()
          const victim = masters[turn++ % masters.length]?.node
          if (!victim) return
          await victim.kill()
          const deadline = Date.now() + 30_000
          while (
            (await cluster.masters()).some((m) => m.node === victim) &&
            Date.now() < deadline
          ) {
            await sleep(100)
          }
          await sleep(downMs)
          await victim.restart()
        },
        async holders(resource) {
          const backend = await backendFromUrl(url)
          try {
            return await backend.holders(resource)
          } finally {
            await backend.close()
          }
        },
        stop: () => cluster.stop(),
      }
    },
    connect: (url) => backendFromUrl(url),
  },
  local: {
    mode: 'fork',
    // No server: the hub is one of the candidates (the first to start, then whoever takes over),
    // so killing or pausing a candidate kills or pauses the hub some of the time; no TCP path.
    faults: ['kill', 'pause', 'stall'],
    async start() {
      const { randomBytes } = await import('node:crypto')
      const { makeTempDir, removeDir } = await import('../testkit/process.js')
      const dir = makeTempDir('chaos-local')
      const url = `local:chaos-${randomBytes(3).toString('hex')}?dir=${encodeURIComponent(dir)}`
      return {
        url: () => url,
        async holders(resource) {
          const backend = await backendFromUrl(url)
          try {
            return await backend.holders(resource)
          } finally {
            await backend.close()
          }
        },
        stop: () => removeDir(dir),
      }
    },
    connect: (url) => backendFromUrl(url),
  },
}

/**
 * Deliberately unsafe backends, never in the registry above (so never in `all`): they prove the
 * harness and checker catch a breach end to end.
 */
export const SELF_TEST_BACKENDS: Record<string, ChaosBackend> = {
  // Asks the real cluster backend for one more ticket than the election was given: two holders
  // where one is allowed.
  'cluster-unsafe': {
    ...CHAOS_BACKENDS.cluster!,
    async connect() {
      const inner = await CHAOS_BACKENDS.cluster!.connect('cluster:')
      return forwardingBackend(inner, {
        name: 'cluster-unsafe',
        acquire: (request) => inner.acquire({ ...request, tickets: request.tickets + 1 }),
      })
    },
  },
}

/**
 * What testkit/candidate.ts calls (its `connect` program option names this module): the backend
 * of entry `name` for `url`.
 */
export async function connect(name: string, url: string): Promise<Backend> {
  const entry = chaosBackend(name)
  if (!entry) throw new Error(`chaos: unknown backend ${name}`)
  return entry.connect(url)
}

/** This module's path, for the candidate's `connect` program option. */
export const CHAOS_BACKENDS_FILE = fileURLToPath(import.meta.url)

/** The entry for a name: the registry first, then the self-test backends. */
export function chaosBackend(name: string): ChaosBackend | undefined {
  return Object.hasOwn(CHAOS_BACKENDS, name)
    ? CHAOS_BACKENDS[name]
    : Object.hasOwn(SELF_TEST_BACKENDS, name)
      ? SELF_TEST_BACKENDS[name]
      : undefined
}
