// A private redis-server on 127.0.0.1, an ephemeral port, a fresh temp folder, no persistence.
import { connect } from 'node:net'
import { join } from 'node:path'
import { freePort } from './ports.js'
import {
  BaseServer,
  DEFAULT_START_TIMEOUT_MS,
  findBinary,
  makeTempDir,
  ManagedProcess,
  removeDir,
  retryOnPortClash,
  waitReady,
  type ServerHandle,
} from './process.js'

export interface StartRedisOptions {
  /** Port to listen on (default: a free ephemeral port). */
  port?: number
  /** Folder in which the server's own temp folder is made (default: os.tmpdir()). */
  dir?: string
  /** Extra redis-server arguments, e.g. ['--maxmemory', '10mb']. */
  args?: string[]
  /** Default 20 s. */
  startTimeoutMs?: number
}

export interface RedisServer extends ServerHandle {
  readonly host: string
  readonly port: number
  /** redis://127.0.0.1:PORT */
  readonly url: string
}

/** Where redis-server is (REDIS_SERVER_BIN overrides PATH). Throws the ensure-servers error. */
export function redisServerBinary(): string {
  return findBinary('redis-server', 'redis-server', {
    envVar: 'REDIS_SERVER_BIN',
    extraDirs: ['/usr/bin', '/usr/local/bin', '/usr/sbin'],
  })
}

class RedisServerImpl extends BaseServer implements RedisServer {
  readonly host = '127.0.0.1'
  readonly port: number
  protected readonly what: string

  constructor(
    private readonly binary: string,
    dir: string,
    port: number,
    private readonly extraArgs: string[],
    startTimeoutMs: number,
  ) {
    super(dir, join(dir, 'redis.log'), startTimeoutMs)
    this.port = port
    this.what = `redis-server on port ${port}`
  }

  get url(): string {
    return `redis://${this.host}:${this.port}`
  }

  protected spawnAndWait(): Promise<ManagedProcess> {
    return launchRedisProcess(this.what, this, this.startTimeoutMs, {
      command: this.binary,
      args: [
        '--port',
        String(this.port),
        '--bind',
        this.host,
        '--save',
        '',
        '--appendonly',
        'no',
        '--daemonize',
        'no',
        '--dir',
        this.dir,
        '--logfile',
        '',
        ...this.extraArgs,
      ],
    })
  }
}

/**
 * Launches a redis-server process (a server or a sentinel) and waits until the one answering on
 * `server.port` is that process: INFO tells its pid, so nothing else on the port counts.
 */
export async function launchRedisProcess(
  what: string,
  server: { host: string; port: number; dir: string; logFile: string },
  timeoutMs: number,
  launch: { command: string; args: string[] },
): Promise<ManagedProcess> {
  const proc = await ManagedProcess.launch({ ...launch, cwd: server.dir, logFile: server.logFile })
  await waitReady({
    what,
    proc,
    logFile: server.logFile,
    timeoutMs,
    check: async () => (await redisServerPid(server.host, server.port, 1_000)) === proc.pid,
  })
  return proc
}

/** Starts a private redis-server and waits until it answers PING. */
export async function startRedis(options: StartRedisOptions = {}): Promise<RedisServer> {
  const binary = redisServerBinary()
  const dir = makeTempDir('redis', options.dir)
  try {
    return await retryOnPortClash(options.port !== undefined, async () => {
      const port = options.port ?? (await freePort())
      const server = new RedisServerImpl(
        binary,
        dir,
        port,
        options.args ?? [],
        options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS,
      )
      await server.start()
      return server
    })
  } catch (err) {
    await removeDir(dir)
    throw err
  }
}

/** true when a raw PING over TCP gets +PONG within timeoutMs. Never throws. */
export function redisPing(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    let reply = ''
    const socket = connect({ host, port })
    const done = (ok: boolean): void => {
      clearTimeout(timer)
      socket.destroy()
      resolve(ok)
    }
    const timer = setTimeout(() => done(false), timeoutMs)
    socket.setEncoding('utf8')
    socket.on('connect', () => socket.write('PING\r\n'))
    socket.on('data', (chunk: string) => {
      reply += chunk
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'))
    })
    socket.on('error', () => done(false))
    socket.on('close', () => done(false))
  })
}

/** The process_id from INFO server, or undefined (no answer within timeoutMs). Never throws. */
export function redisServerPid(
  host: string,
  port: number,
  timeoutMs: number,
): Promise<number | undefined> {
  return new Promise((resolve) => {
    let reply = Buffer.alloc(0)
    const socket = connect({ host, port })
    const done = (pid: number | undefined): void => {
      clearTimeout(timer)
      socket.destroy()
      resolve(pid)
    }
    const timer = setTimeout(() => done(undefined), timeoutMs)
    socket.on('connect', () => socket.write('INFO server\r\n'))
    socket.on('data', (chunk: Buffer) => {
      reply = Buffer.concat([reply, chunk])
      const headerEnd = reply.indexOf('\r\n')
      if (headerEnd < 0) return
      const header = reply.subarray(0, headerEnd).toString()
      // "-LOADING ..." and other errors: not ready.
      if (!header.startsWith('$')) return done(undefined)
      if (reply.length < headerEnd + 2 + Number(header.slice(1))) return
      const match = /process_id:(\d+)/.exec(reply.toString())
      done(match ? Number(match[1]) : undefined)
    })
    socket.on('error', () => done(undefined))
    socket.on('close', () => done(undefined))
  })
}
