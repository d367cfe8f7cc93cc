/**
 * The etcd subjects, on one private etcd: conclave/etcd and the etcd3 package's own Election,
 * both with their defaults. A request is one gRPC message etcd received (every method, every
 * stream: keepalives count one each), from its /metrics.
 */
import { Etcd3 } from 'etcd3'
import { etcdBackend } from '../../src/backends/etcd/index.js'
import {
  type HoldInChild,
  type HolderConfig,
  now,
  processCpuMs,
  spawnHolder,
  spawnWaiters,
  type WaitersConfig,
} from '../probes.js'
import { baselineOnly, type Candidate, type Subject } from '../scenarios.js'
import { conclaveSubject, holderId, holdWithElection } from './conclave.js'

/** The server the subjects share, and the bench's own client (expiry watches). */
export interface EtcdTarget {
  host: string
  port: number
  pid: number
  admin: Etcd3
  /** conclave's key prefix for this run. */
  prefix: string
}

const endpoint = (host: string, port: number) => `http://${host}:${port}`

/** The sum of one of etcd's /metrics counters over its labels (an HTTP GET: no gRPC message). */
async function metric(target: EtcdTarget, name: string): Promise<number> {
  const text = await (await fetch(`${endpoint(target.host, target.port)}/metrics`)).text()
  let total = 0
  const pattern = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`)
  for (const line of text.split('\n')) {
    const match = pattern.exec(line)
    if (match) total += Number(match[1])
  }
  return total
}

/** gRPC messages etcd has received from clients since it started. */
const messagesReceived = (target: EtcdTarget) => metric(target, 'grpc_server_msg_received_total')

/** Raft proposals etcd has committed since it started: its writes (puts, deletes, leases, txns). */
const proposalsCommitted = (target: EtcdTarget) =>
  metric(target, 'etcd_server_proposals_committed_total')

/** etcd leases are whole seconds. */
const ttlSeconds = (leaseMs: number) => Math.max(1, Math.round(leaseMs / 1000))

/** Campaigns with the etcd3 Election on `client`; resolves once elected. */
async function campaign(
  client: Etcd3,
  resource: string,
  leaseMs: number,
  onLost: () => void,
  signal?: AbortSignal,
) {
  signal?.throwIfAborted()
  const c = client.election(resource, ttlSeconds(leaseMs)).campaign(holderId())
  let elected = false
  c.on('error', () => elected && onLost())
  // wait() never settles once resign() was called: an abort rejects on its own.
  let onAbort = () => {}
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => {
      void c.resign().catch(() => {})
      reject(signal!.reason as Error)
    }
    signal?.addEventListener('abort', onAbort, { once: true })
  })
  aborted.catch(() => {})
  try {
    await Promise.race([c.wait(), aborted])
  } finally {
    signal?.removeEventListener('abort', onAbort)
  }
  elected = true
  return c
}

/** The subject names of this module, as the suite lists them. */
export const ETCD_SUBJECTS = ['conclave/etcd', 'etcd3 Election'] as const

/** One of the etcd subjects on `target`. */
export function etcdSubject(name: (typeof ETCD_SUBJECTS)[number], target: EtcdTarget): Subject {
  const ids = new Map<string, string>()
  const common = {
    name,
    requests: () => messagesReceived(target),
    serverRequests: () => messagesReceived(target),
    serverWrites: () => proposalsCommitted(target),
    serverCpuMs: async () => processCpuMs(target.pid),
    serverPort: target.port,
    spawnHolder(resource: string, leaseMs: number, via?: { port: number }) {
      const id = holderId()
      ids.set(resource, id)
      const config: HolderConfig = {
        subject: name,
        resource,
        leaseMs,
        id,
        host: target.host,
        port: via?.port ?? target.port,
        prefix: target.prefix,
      }
      return spawnHolder('etcd', config)
    },
  }
  /**
   * etcd lets a grant go when it revokes the lease and deletes the key (its expiry check runs
   * every 0.5 s), and reports lease TTLs in whole seconds only: the delete is watched for.
   */
  const deleted = async (key: { exact: string } | { prefix: string }) => {
    const builder = target.admin.watch()
    const watcher = await (
      'exact' in key ? builder.key(key.exact) : builder.prefix(key.prefix)
    ).create()
    try {
      return await new Promise<number>((resolve) => watcher.once('delete', () => resolve(now())))
    } finally {
      await watcher.cancel()
    }
  }
  if (name === 'conclave/etcd') {
    return conclaveSubject({
      ...common,
      open() {
        const backend = etcdBackend({
          hosts: endpoint(target.host, target.port),
          prefix: target.prefix,
        })
        return { backend, close: () => backend.close() }
      },
      spawnWaiters: (resource, count, leaseMs, startInFlight) =>
        spawnWaiters('etcd', {
          subject: name,
          resource,
          leaseMs,
          count,
          startInFlight,
          host: target.host,
          port: target.port,
          prefix: target.prefix,
        }),
      expiry: (resource) => deleted({ exact: `${target.prefix}${resource}#${ids.get(resource)}` }),
    })
  }
  return {
    ...common,
    async candidate(): Promise<Candidate> {
      const client = new Etcd3({ hosts: endpoint(target.host, target.port) })
      let lost = 0
      return {
        async acquire(resource, leaseMs, signal) {
          const c = await campaign(client, resource, leaseMs, () => lost++, signal)
          return () => c.resign()
        },
        lost: () => lost,
        close: async () => client.close(),
      }
    },
    // The waiter's key stays; the first key deleted is the dead holder's.
    expiry: (resource) => deleted({ prefix: `election/${resource}/` }),
  }
}

/** In a holder process: the subject named in `config`, holding `config.resource`. */
export const holdInChild: HoldInChild = async (config, onLost) => {
  const hosts = endpoint(String(config.host), Number(config.port))
  if (config.subject === 'conclave/etcd') {
    const backend = etcdBackend({ hosts, prefix: String(config.prefix) })
    return holdWithElection(backend, config, onLost)
  }
  await campaign(new Etcd3({ hosts }), config.resource, config.leaseMs, onLost)
}

/** In a waiter process: the backend its candidates share. */
export const waitersBackend = (config: WaitersConfig) =>
  etcdBackend({
    hosts: endpoint(String(config.host), Number(config.port)),
    prefix: String(config.prefix),
  })

/**
 * The baseline of etcd's cheapest write: "acquire" is one `put` of a key and "release" one
 * `delete` of it, through the etcd3 client conclave's backend uses (its defaults), each one
 * committed raft write.
 */
export function etcdPutBaseline(target: EtcdTarget): Subject {
  return {
    name: 'baseline: etcd put',
    cannot: baselineOnly(),
    async candidate(): Promise<Candidate> {
      const client = new Etcd3({ hosts: endpoint(target.host, target.port) })
      return {
        async acquire(resource) {
          const key = `${target.prefix}baseline/${resource}`
          await client.put(key).value('x')
          return async () => void (await client.delete().key(key))
        },
        close: async () => client.close(),
      }
    },
  }
}
