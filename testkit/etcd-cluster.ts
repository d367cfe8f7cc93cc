// A private multi-member etcd cluster (3 members by default) on 127.0.0.1, every client and peer
// port ephemeral, each member's data in its own temp folder; each member's client port may sit
// behind a fault proxy. Members keep etcd's default heartbeat (100 ms) and election timeout
// (1 s), so a leader fault costs what it costs in production.
import { get } from 'node:http'
import { randomBytes } from 'node:crypto'
import { EtcdServerImpl, etcdBinary, type EtcdServer } from './etcd.js'
import { freePort } from './ports.js'
import { DEFAULT_START_TIMEOUT_MS, makeTempDir, removeDir, sleep } from './process.js'
import { startProxy, type FaultProxy } from './proxy.js'

export interface StartEtcdClusterOptions {
  /** Number of members (default 3). */
  size?: number
  /** Put a fault proxy in front of each member's client port (default false). */
  proxied?: boolean
  /** Extra etcd arguments for every member (they come last). */
  args?: string[]
  /** Folder in which the members' temp folders are made (default: os.tmpdir()). */
  dir?: string
  /** Default 30 s (members wait for each other). */
  startTimeoutMs?: number
}

/** One member: its server, and the endpoint clients use (the proxy's when proxied). */
export interface EtcdClusterMember {
  readonly name: string
  readonly server: EtcdServer
  /** Fault proxy in front of the client port, when the cluster was started with proxied. */
  readonly proxy: FaultProxy | undefined
  /** http://127.0.0.1:PORT clients use: the proxy's when proxied, else the member's own. */
  readonly endpoint: string
}

/** A running cluster; stop() (or `await using`) ends every member and proxy. */
export interface EtcdCluster extends AsyncDisposable {
  readonly members: readonly EtcdClusterMember[]
  /** Every member's client endpoint (proxied ones when proxied), for `hosts`. */
  readonly endpoints: string[]
  /** The member that is leader now (asks each running member's /metrics); waits up to timeoutMs. */
  leader(timeoutMs?: number): Promise<EtcdClusterMember>
  /** The running members that are not the leader now. */
  followers(timeoutMs?: number): Promise<EtcdClusterMember[]>
  /** Waits until every running member says /health true (a leader, a quorum). */
  waitHealthy(timeoutMs?: number): Promise<void>
  stop(): Promise<void>
}

/** What a member's /metrics says: is it the leader (undefined: no answer). */
function isLeader(port: number, timeoutMs = 1_000): Promise<boolean | undefined> {
  return new Promise((resolve) => {
    const req = get(
      { host: '127.0.0.1', port, path: '/metrics', timeout: timeoutMs, agent: false },
      (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => (body += chunk))
        res.on('end', () => {
          const match = /^etcd_server_is_leader (\S+)$/m.exec(body)
          resolve(match ? Number(match[1]) === 1 : undefined)
        })
        res.on('error', () => resolve(undefined))
      },
    )
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', () => resolve(undefined))
  })
}

function healthy(port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const req = get(
      { host: '127.0.0.1', port, path: '/health', timeout: timeoutMs, agent: false },
      (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => (body += chunk))
        res.on('end', () => resolve(res.statusCode === 200 && /"health":\s*"true"/.test(body)))
        res.on('error', () => resolve(false))
      },
    )
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', () => resolve(false))
  })
}

class EtcdClusterImpl implements EtcdCluster {
  private stopping: Promise<void> | undefined
  constructor(readonly members: EtcdClusterMember[]) {}

  get endpoints(): string[] {
    return this.members.map((m) => m.endpoint)
  }

  async leader(timeoutMs = 10_000): Promise<EtcdClusterMember> {
    const until = Date.now() + timeoutMs
    for (;;) {
      const running = this.members.filter((m) => m.server.running)
      const answers = await Promise.all(running.map((m) => isLeader(m.server.port)))
      const leaders = running.filter((_, i) => answers[i] === true)
      if (leaders.length === 1) return leaders[0]!
      if (Date.now() > until) throw new Error(`etcd cluster: no single leader in ${timeoutMs} ms`)
      await sleep(50)
    }
  }

  async followers(timeoutMs?: number): Promise<EtcdClusterMember[]> {
    const leader = await this.leader(timeoutMs)
    return this.members.filter((m) => m !== leader && m.server.running)
  }

  async waitHealthy(timeoutMs = 20_000): Promise<void> {
    const until = Date.now() + timeoutMs
    for (;;) {
      const running = this.members.filter((m) => m.server.running)
      const answers = await Promise.all(running.map((m) => healthy(m.server.port)))
      if (answers.every(Boolean)) return
      if (Date.now() > until) throw new Error(`etcd cluster: not healthy in ${timeoutMs} ms`)
      await sleep(50)
    }
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await Promise.all(this.members.map((m) => m.proxy?.close() ?? Promise.resolve()))
      // A paused member would ignore SIGTERM until resumed.
      await Promise.all(this.members.map((m) => m.server.resume().catch(() => {})))
      await Promise.all(this.members.map((m) => m.server.stop()))
    })()
    return this.stopping
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop()
  }
}

/**
 * Starts a private etcd cluster (all members at once: each waits for a quorum) and waits until
 * every member is healthy. Fault helpers are the members' own: `member.server.kill()`,
 * `.pause()` / `.resume()` (SIGSTOP / SIGCONT), `.restart()` (with its data), and
 * `member.proxy.cut()` when proxied; `cluster.leader()` finds whom to hit.
 */
export async function startEtcdCluster(
  options: StartEtcdClusterOptions = {},
): Promise<EtcdCluster> {
  const size = options.size ?? 3
  if (!Number.isInteger(size) || size < 1 || size > 9) {
    throw new RangeError(`startEtcdCluster: size ${size} is not 1 to 9`)
  }
  const binary = etcdBinary()
  const token = `conclave-cluster-${randomBytes(4).toString('hex')}`
  const ports = new Set<number>()
  const port = async () => {
    for (;;) {
      const p = await freePort()
      if (!ports.has(p)) {
        ports.add(p)
        return p
      }
    }
  }
  const specs: { name: string; port: number; peerPort: number; dir: string }[] = []
  for (let i = 0; i < size; i++) {
    specs.push({
      name: `m${i + 1}`,
      port: await port(),
      peerPort: await port(),
      dir: makeTempDir(`etcd-m${i + 1}`, options.dir),
    })
  }
  const initialCluster = specs.map((s) => `${s.name}=http://127.0.0.1:${s.peerPort}`).join(',')
  const servers = specs.map(
    (s) =>
      new EtcdServerImpl(
        binary,
        s.dir,
        s.port,
        s.peerPort,
        options.args ?? [],
        options.startTimeoutMs ?? Math.max(DEFAULT_START_TIMEOUT_MS, 30_000),
        { name: s.name, initialCluster, token },
      ),
  )
  const started = await Promise.allSettled(servers.map((s) => s.start()))
  const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected')
  if (failed) {
    await Promise.all(servers.map((s) => s.stop().catch(() => {})))
    await Promise.all(specs.map((s) => removeDir(s.dir)))
    throw failed.reason
  }
  const members: EtcdClusterMember[] = []
  for (const [i, server] of servers.entries()) {
    const proxy = options.proxied ? await startProxy({ targetPort: server.port }) : undefined
    members.push({
      name: specs[i]!.name,
      server,
      proxy,
      endpoint: proxy ? `http://127.0.0.1:${proxy.port}` : server.endpoint,
    })
  }
  const cluster = new EtcdClusterImpl(members)
  await cluster.waitHealthy()
  return cluster
}
