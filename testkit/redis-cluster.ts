// A private Redis Cluster on 127.0.0.1: masters and replicas (`redis-cli --cluster create ...
// --cluster-replicas 1`), each a testkit redis-server on an ephemeral port in its own temp
// folder. No vitest imports: chaos and benchmark scripts use it too.
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { findBinary, sleep } from './process.js'
import { startRedis, type RedisServer } from './redis.js'
import { command } from './redis-sentinel.js'

const run = promisify(execFile)

/** What startRedisCluster() takes. */
export interface StartRedisClusterOptions {
  /** How many masters. Default 3 (the least Redis Cluster accepts). */
  masters?: number
  /** Replicas per master. Default 1. */
  replicasPerMaster?: number
  /** cluster-node-timeout: how soon a silent master counts as failed. Default 2000. */
  nodeTimeoutMs?: number
  /** Extra redis-server arguments for every node. */
  args?: string[]
}

/** The running cluster; stop() ends every node. */
export interface RedisCluster extends AsyncDisposable {
  /** Every node, in the order started (redis-cli makes the first `masters` of them masters). */
  readonly nodes: RedisServer[]
  /** [{ host, port }] of every node, as ioredis' `new Cluster(...)` takes them. */
  readonly startupNodes: { host: string; port: number }[]
  /** The nodes that are masters right now, each with the slots it serves. */
  masters(): Promise<{ node: RedisServer; slots: [number, number][] }[]>
  /** Waits until every running node says cluster_state:ok and every replica is in sync. */
  waitHealthy(timeoutMs?: number): Promise<void>
  stop(): Promise<void>
}

/** Where redis-cli is (REDIS_CLI_BIN overrides PATH). */
export function redisCliBinary(): string {
  return findBinary('redis-cli', 'redis-tools', {
    envVar: 'REDIS_CLI_BIN',
    extraDirs: ['/usr/bin', '/usr/local/bin'],
  })
}

/** Starts the nodes, joins them with redis-cli --cluster create, waits until the cluster is ok. */
export async function startRedisCluster(
  options: StartRedisClusterOptions = {},
): Promise<RedisCluster> {
  const masters = options.masters ?? 3
  const perMaster = options.replicasPerMaster ?? 1
  const cli = redisCliBinary()
  const nodes: RedisServer[] = []
  const stop = async (): Promise<void> => {
    await Promise.allSettled(nodes.map((n) => n.stop()))
  }
  try {
    for (let i = 0; i < masters * (1 + perMaster); i++) {
      nodes.push(
        await startRedis({
          args: [
            '--cluster-enabled',
            'yes',
            '--cluster-config-file',
            'nodes.conf',
            '--cluster-node-timeout',
            String(options.nodeTimeoutMs ?? 2_000),
            // A replica's first sync starts at once (Redis 7 waits 5 s for more replicas).
            '--repl-diskless-sync-delay',
            '0',
            ...(options.args ?? []),
          ],
        }),
      )
    }
    await run(cli, [
      '--cluster',
      'create',
      ...nodes.map((n) => `${n.host}:${n.port}`),
      '--cluster-replicas',
      String(perMaster),
      '--cluster-yes',
    ])
    const cluster: RedisCluster = {
      nodes,
      startupNodes: nodes.map((n) => ({ host: n.host, port: n.port })),
      async masters() {
        for (const node of nodes) {
          if (!node.running) continue
          const text = await command(node.port, 'CLUSTER', 'NODES').catch(() => '')
          if (!text) continue
          const out: { node: RedisServer; slots: [number, number][] }[] = []
          for (const line of text.trim().split('\n')) {
            const fields = line.split(' ')
            if (!fields[2]?.includes('master') || fields[2].includes('fail')) continue
            const port = Number(/:(\d+)@/.exec(fields[1] ?? '')?.[1])
            const server = nodes.find((n) => n.port === port)
            const slots = fields.slice(8).map((range) => {
              const [from, to] = range.split('-').map(Number)
              return [from!, to ?? from!] as [number, number]
            })
            if (server && slots.length) out.push({ node: server, slots })
          }
          return out
        }
        return []
      },
      async waitHealthy(timeoutMs = 30_000) {
        const deadline = Date.now() + timeoutMs
        for (;;) {
          const states = await Promise.all(
            nodes
              .filter((n) => n.running)
              .map((n) => command(n.port, 'CLUSTER', 'INFO').catch(() => '')),
          )
          const links = await Promise.all(
            nodes
              .filter((n) => n.running)
              .map((n) => command(n.port, 'INFO', 'replication').catch(() => '')),
          )
          const synced = links.every(
            (info) => info.includes('role:master') || info.includes('master_link_status:up'),
          )
          if (synced && states.every((s) => s.includes('cluster_state:ok'))) return
          if (Date.now() > deadline) throw new Error('the Redis Cluster never became healthy')
          await sleep(100)
        }
      },
      stop,
      [Symbol.asyncDispose]: stop,
    }
    await cluster.waitHealthy()
    return cluster
  } catch (error) {
    await stop()
    throw error
  }
}
