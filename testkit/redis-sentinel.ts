// A private Redis Sentinel topology on 127.0.0.1: one master, replicas (each may replicate
// through a fault proxy, so a test can freeze its replication link) and sentinels
// (`redis-server --sentinel`), all on ephemeral ports in fresh temp folders. No vitest imports:
// chaos and benchmark scripts use it too.
import { writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import { freePort } from './ports.js'
import {
  BaseServer,
  DEFAULT_START_TIMEOUT_MS,
  makeTempDir,
  ManagedProcess,
  removeDir,
  retryOnPortClash,
  sleep,
} from './process.js'
import { startProxy, type FaultProxy } from './proxy.js'
import { launchRedisProcess, redisServerBinary, startRedis, type RedisServer } from './redis.js'

/** How each replica of the topology is made. */
export interface SentinelReplicaOptions {
  /**
   * Sentinel promotes the replica of the lowest priority first; 0: never promoted. Default 100
   * (Redis' default).
   */
  priority?: number
  /** Replicate through a fault proxy (the topology's `links[i]`), so a test can freeze it. */
  proxied?: boolean
}

/** What startSentinelTopology() takes. */
export interface StartSentinelOptions {
  /** The master's name the sentinels monitor. Default `conclave`. */
  name?: string
  /** One entry per replica. Default two plain replicas. */
  replicas?: SentinelReplicaOptions[]
  /** How many sentinels. Default 3 (quorum 2). */
  sentinels?: number
  /** Sentinels' down-after-milliseconds: how soon a silent master counts as down. Default 1000. */
  downAfterMs?: number
  /**
   * Sentinels' failover-timeout. Default 60000: long enough that no sentinel "fixes" a proxied
   * replica's master address (it does so only after this long) during a test.
   */
  failoverTimeoutMs?: number
  /** Extra redis-server arguments for the master and every replica. */
  args?: string[]
  /**
   * The sentinels (and so every client that asks them) reach the first master through a fault
   * proxy (`masterLink`), so a test can partition it from everything but a client that talks
   * to its own port directly.
   */
  masterProxied?: boolean
}

/** The running topology; stop() ends every process and proxy. */
export interface SentinelTopology extends AsyncDisposable {
  /** The master's name (what ioredis' `name` and the sentinels know it by). */
  readonly name: string
  /** The first master. */
  readonly master: RedisServer
  /** The replicas, in the order asked for. */
  readonly replicas: RedisServer[]
  /** links[i]: the proxy replica i replicates through, or undefined when not proxied. */
  readonly links: (FaultProxy | undefined)[]
  /** With masterProxied: the proxy the sentinels reach the first master through. */
  readonly masterLink: FaultProxy | undefined
  /** The sentinels' processes. */
  readonly sentinels: SentinelServer[]
  /** [{ host, port }] of every sentinel, as ioredis' `sentinels` option takes them. */
  readonly sentinelAddresses: { host: string; port: number }[]
  /** `redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,.../name` */
  readonly url: string
  /** Every data server (master first, then replicas). */
  readonly servers: RedisServer[]
  /** The port of the master the sentinels name right now (asked of the first that answers). */
  masterPort(): Promise<number | undefined>
  /** Waits until the sentinels name another master than `port`; resolves with the new port. */
  waitForFailover(fromPort: number, timeoutMs?: number): Promise<number>
  /** Sends a raw command to one server (127.0.0.1:port) and resolves with the reply's text. */
  command(port: number, ...args: string[]): Promise<string>
  stop(): Promise<void>
}

/** One sentinel process. */
export interface SentinelServer {
  readonly host: string
  readonly port: number
  readonly pid: number
  readonly running: boolean
  kill(): Promise<void>
  stop(): Promise<void>
}

class SentinelImpl extends BaseServer implements SentinelServer {
  readonly host = '127.0.0.1'
  protected readonly what: string

  constructor(
    private readonly binary: string,
    dir: string,
    readonly port: number,
    private readonly config: string,
    startTimeoutMs: number,
  ) {
    super(dir, join(dir, 'sentinel.log'), startTimeoutMs)
    this.what = `redis sentinel on port ${port}`
  }

  protected async spawnAndWait(): Promise<ManagedProcess> {
    // Sentinel rewrites its config file: a fresh, writable one in its own folder.
    const file = join(this.dir, 'sentinel.conf')
    writeFileSync(file, this.config)
    return launchRedisProcess(this.what, this, this.startTimeoutMs, {
      command: this.binary,
      args: [file, '--sentinel'],
    })
  }
}

/**
 * Starts a master, its replicas (waiting until each is in sync) and the sentinels (waiting until
 * each knows every replica and the other sentinels), then resolves.
 */
export async function startSentinelTopology(
  options: StartSentinelOptions = {},
): Promise<SentinelTopology> {
  const name = options.name ?? 'conclave'
  const replicaOptions = options.replicas ?? [{}, {}]
  const sentinelCount = options.sentinels ?? 3
  const quorum = Math.floor(sentinelCount / 2) + 1
  const args = options.args ?? []
  const servers: RedisServer[] = []
  const links: (FaultProxy | undefined)[] = []
  const sentinels: SentinelImpl[] = []
  let masterLink: FaultProxy | undefined
  const stopAll = async (): Promise<void> => {
    await Promise.allSettled(sentinels.map((s) => s.stop()))
    await Promise.allSettled([...links, masterLink].map(async (l) => l?.close()))
    await Promise.allSettled(servers.map((s) => s.stop()))
  }
  try {
    const master = await startRedis({ args })
    servers.push(master)
    for (const replica of replicaOptions) {
      const link = replica.proxied ? await startProxy({ targetPort: master.port }) : undefined
      links.push(link)
      servers.push(
        await startRedis({
          args: [
            '--replicaof',
            '127.0.0.1',
            String(link?.port ?? master.port),
            '--replica-priority',
            String(replica.priority ?? 100),
            ...args,
          ],
        }),
      )
    }
    const replicas = servers.slice(1)
    if (options.masterProxied) masterLink = await startProxy({ targetPort: master.port })
    const monitoredPort = masterLink?.port ?? master.port
    const until = Date.now() + DEFAULT_START_TIMEOUT_MS
    for (const replica of replicas) {
      while (!/master_link_status:up/.test(await command(replica.port, 'INFO', 'replication'))) {
        if (Date.now() > until) throw new Error(`replica ${replica.port} never synced`)
        await sleep(50)
      }
    }
    const binary = redisServerBinary()
    for (let i = 0; i < sentinelCount; i++) {
      const dir = makeTempDir('redis-sentinel')
      try {
        sentinels.push(
          await retryOnPortClash(false, async () => {
            const port = await freePort()
            const config = [
              `port ${port}`,
              'bind 127.0.0.1',
              `dir ${dir}`,
              'logfile ""',
              `sentinel monitor ${name} 127.0.0.1 ${monitoredPort} ${quorum}`,
              `sentinel down-after-milliseconds ${name} ${options.downAfterMs ?? 1_000}`,
              `sentinel failover-timeout ${name} ${options.failoverTimeoutMs ?? 60_000}`,
              `sentinel parallel-syncs ${name} 1`,
              '',
            ].join('\n')
            const sentinel = new SentinelImpl(binary, dir, port, config, DEFAULT_START_TIMEOUT_MS)
            await sentinel.start()
            return sentinel
          }),
        )
      } catch (error) {
        await removeDir(dir)
        throw error
      }
    }
    // Every sentinel must know every replica and the other sentinels before a failover works.
    for (const sentinel of sentinels) {
      for (;;) {
        const info = await command(sentinel.port, 'INFO', 'sentinel')
        const match = /slaves=(\d+),sentinels=(\d+)/.exec(info)
        if (match && Number(match[1]) >= replicas.length && Number(match[2]) >= sentinelCount) break
        if (Date.now() > until) throw new Error(`sentinel ${sentinel.port} never saw everyone`)
        await sleep(100)
      }
    }
    const sentinelAddresses = sentinels.map((s) => ({ host: s.host, port: s.port }))
    const masterPort = async (): Promise<number | undefined> => {
      for (const s of sentinels) {
        if (!s.running) continue
        const reply = await command(
          s.port,
          'SENTINEL',
          'get-master-addr-by-name',
          name,
          1_000,
        ).catch(() => '')
        const port = /\n(\d+)\s*$/.exec(reply.trim()) ?? /(\d+)\s*$/.exec(reply.trim())
        if (port) return Number(port[1])
      }
      return undefined
    }
    return {
      name,
      master,
      replicas,
      links,
      masterLink,
      sentinels,
      sentinelAddresses,
      servers,
      url: `redis+sentinel://${sentinelAddresses.map((a) => `${a.host}:${a.port}`).join(',')}/${name}`,
      masterPort,
      async waitForFailover(fromPort: number, timeoutMs = 30_000): Promise<number> {
        const deadline = Date.now() + timeoutMs
        for (;;) {
          const port = await masterPort()
          if (port !== undefined && port !== fromPort) {
            // Promoted per the sentinels; wait until the server itself says it is a master.
            if (/role:master/.test(await command(port, 'INFO', 'replication').catch(() => '')))
              return port
          }
          if (Date.now() > deadline)
            throw new Error(`no failover from ${fromPort} within ${timeoutMs} ms`)
          await sleep(50)
        }
      },
      command: (port: number, ...words: string[]) => command(port, ...words),
      stop: stopAll,
      [Symbol.asyncDispose]: stopAll,
    }
  } catch (error) {
    await stopAll()
    throw error
  }
}

/**
 * One command over a fresh TCP connection in RESP, resolving with the reply's text (bulk strings
 * and array items joined by newlines; an error reply rejects). A trailing number argument is the
 * timeout in ms (default 2000).
 */
export function command(port: number, ...words: (string | number)[]): Promise<string> {
  let timeoutMs = 2_000
  if (typeof words[words.length - 1] === 'number') timeoutMs = words.pop() as number
  const request =
    `*${words.length}\r\n` +
    words.map((w) => `$${Buffer.byteLength(String(w))}\r\n${String(w)}\r\n`).join('')
  return new Promise((resolve, reject) => {
    let reply = Buffer.alloc(0)
    const socket = connect({ host: '127.0.0.1', port })
    const timer = setTimeout(() => finish(new Error(`no answer from ${port}`)), timeoutMs)
    const finish = (error: Error | undefined, text?: string): void => {
      clearTimeout(timer)
      socket.destroy()
      if (error) reject(error)
      else resolve(text!)
    }
    socket.on('connect', () => socket.write(request))
    socket.on('data', (chunk: Buffer) => {
      reply = Buffer.concat([reply, chunk])
      const parsed = parseResp(reply, 0)
      if (!parsed) return
      if (parsed.error) finish(new Error(parsed.error))
      else finish(undefined, parsed.text)
    })
    socket.on('error', (error) => finish(error))
    socket.on('close', () => finish(new Error(`connection to ${port} closed`)))
  })
}

/** One RESP value from `at`: its text and where it ends, or undefined when incomplete. */
function parseResp(
  buf: Buffer,
  at: number,
): { text: string; end: number; error?: string } | undefined {
  const lineEnd = buf.indexOf('\r\n', at)
  if (lineEnd < 0) return undefined
  const type = String.fromCharCode(buf[at]!)
  const line = buf.subarray(at + 1, lineEnd).toString()
  if (type === '+' || type === ':') return { text: line, end: lineEnd + 2 }
  if (type === '-') return { text: '', end: lineEnd + 2, error: line }
  if (type === '$') {
    const n = Number(line)
    if (n < 0) return { text: '', end: lineEnd + 2 }
    if (buf.length < lineEnd + 2 + n + 2) return undefined
    return { text: buf.subarray(lineEnd + 2, lineEnd + 2 + n).toString(), end: lineEnd + 4 + n }
  }
  if (type === '*') {
    const n = Number(line)
    const parts: string[] = []
    let pos = lineEnd + 2
    for (let i = 0; i < n; i++) {
      const item = parseResp(buf, pos)
      if (!item) return undefined
      parts.push(item.error ?? item.text)
      pos = item.end
    }
    return { text: parts.join('\n'), end: pos }
  }
  return { text: line, end: lineEnd + 2 }
}
