// A private single-member etcd on 127.0.0.1, ephemeral client and peer ports, data in a temp folder.
import { get } from 'node:http'
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

export interface StartEtcdOptions {
  /** Client port (default: a free ephemeral port). */
  port?: number
  /** Peer port (default: a free ephemeral port). */
  peerPort?: number
  /** Folder in which the server's own temp folder is made (default: os.tmpdir()). */
  dir?: string
  /** Extra etcd arguments, e.g. ['--auto-compaction-retention', '1']; they come last, so they
   * win over ours (e.g. '--election-timeout'). */
  args?: string[]
  /** Default 20 s. */
  startTimeoutMs?: number
}

export interface EtcdServer extends ServerHandle {
  readonly host: string
  /** Client port. */
  readonly port: number
  readonly peerPort: number
  /** http://127.0.0.1:PORT, for `new Etcd3({ hosts: endpoint })`. */
  readonly endpoint: string
  /** --data-dir (kept across restart()). */
  readonly dataDir: string
}

/** Where etcd is (ETCD_BIN overrides PATH). Throws the ensure-servers error. */
export function etcdBinary(): string {
  return findBinary('etcd', 'etcd-server', {
    envVar: 'ETCD_BIN',
    extraDirs: ['/usr/bin', '/usr/local/bin', '/usr/sbin'],
  })
}

/**
 * The environment for etcd: ours minus every ETCD_* variable (etcd reads them as flags and a
 * stray one would change or clash with ours), plus ETCD_UNSUPPORTED_ARCH where etcd 3.4 wants it
 * (every architecture but amd64; arm64 only from 3.5 on).
 */
function etcdEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('ETCD_')) env[key] = value
  }
  if (process.arch !== 'x64') {
    const goArch: Record<string, string> = { ppc64: 'ppc64le', ia32: '386' }
    env.ETCD_UNSUPPORTED_ARCH = goArch[process.arch] ?? process.arch
  }
  return env
}

/** A member of a multi-member cluster (testkit/etcd-cluster.ts): its name and the whole cluster. */
export interface EtcdMemberSpec {
  name: string
  /** --initial-cluster: name=http://127.0.0.1:peerPort for every member. */
  initialCluster: string
  token: string
}

/** One etcd process (exported for testkit/etcd-cluster.ts; tests use startEtcd). */
export class EtcdServerImpl extends BaseServer implements EtcdServer {
  readonly host = '127.0.0.1'
  readonly port: number
  readonly peerPort: number
  readonly dataDir: string
  protected readonly what: string

  constructor(
    private readonly binary: string,
    dir: string,
    port: number,
    peerPort: number,
    private readonly extraArgs: string[],
    startTimeoutMs: number,
    private readonly member?: EtcdMemberSpec,
  ) {
    super(dir, join(dir, 'etcd.log'), startTimeoutMs)
    this.port = port
    this.peerPort = peerPort
    this.dataDir = join(dir, 'data')
    this.what = member ? `etcd member ${member.name} on port ${port}` : `etcd on port ${port}`
  }

  get endpoint(): string {
    return `http://${this.host}:${this.port}`
  }

  protected async spawnAndWait(): Promise<ManagedProcess> {
    const client = `http://${this.host}:${this.port}`
    const peer = `http://${this.host}:${this.peerPort}`
    const name = this.member?.name ?? 'conclave-test'
    const proc = await ManagedProcess.launch({
      command: this.binary,
      args: [
        '--name',
        name,
        '--data-dir',
        this.dataDir,
        '--listen-client-urls',
        client,
        '--advertise-client-urls',
        client,
        '--listen-peer-urls',
        peer,
        '--initial-advertise-peer-urls',
        peer,
        '--initial-cluster',
        this.member?.initialCluster ?? `${name}=${peer}`,
        '--initial-cluster-state',
        'new',
        '--initial-cluster-token',
        this.member?.token ?? `conclave-test-${this.port}`,
        // A single member has nobody to lose an election to: short timeouts make start and
        // restart fast (~0.1 s / ~0.5 s instead of ~1 s / ~1.5 s with the defaults). A cluster
        // member keeps etcd's defaults (100 ms / 1 s), the leader elections tests must survive.
        ...(this.member ? [] : ['--heartbeat-interval', '50', '--election-timeout', '300']),
        '--logger',
        'zap',
        '--log-outputs',
        'stderr',
        ...this.extraArgs,
      ],
      env: etcdEnv(),
      cwd: this.dir,
      logFile: this.logFile,
    })
    await waitReady({
      what: this.what,
      proc,
      logFile: this.logFile,
      timeoutMs: this.startTimeoutMs,
      check: () => etcdHealthy(this.host, this.port, 1_000),
    })
    return proc
  }
}

/** Starts a private single-member etcd and waits until /health says true. */
export async function startEtcd(options: StartEtcdOptions = {}): Promise<EtcdServer> {
  const binary = etcdBinary()
  const dir = makeTempDir('etcd', options.dir)
  const fixed = options.port !== undefined && options.peerPort !== undefined
  try {
    return await retryOnPortClash(fixed, async () => {
      const port = options.port ?? (await freePort())
      let peerPort = options.peerPort ?? (await freePort())
      while (peerPort === port) peerPort = await freePort()
      const server = new EtcdServerImpl(
        binary,
        dir,
        port,
        peerPort,
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

/** true when GET /health answers {"health":"true"} within timeoutMs. Never throws. */
export function etcdHealthy(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = get({ host, port, path: '/health', timeout: timeoutMs, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => (body += chunk))
      res.on('end', () => {
        try {
          resolve(
            res.statusCode === 200 && (JSON.parse(body) as { health?: unknown }).health === 'true',
          )
        } catch {
          resolve(false)
        }
      })
      res.on('error', () => resolve(false))
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', () => resolve(false))
  })
}
