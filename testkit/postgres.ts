// A private PostgreSQL cluster: initdb in a temp folder (trust auth, user postgres), a postmaster
// on 127.0.0.1 and an ephemeral port, its unix socket in the temp folder too. PostgreSQL refuses
// to run as root: as root we run initdb and postgres as the `postgres` user (made by Debian's
// package) or else `nobody`, and hand them the temp folder.
import { chown, mkdir } from 'node:fs/promises'
import { readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import pg from 'pg'
import { freePort } from './ports.js'
import {
  BaseServer,
  DEFAULT_START_TIMEOUT_MS,
  findBinary,
  isExecutable,
  makeTempDir,
  ManagedProcess,
  missingBinaryError,
  removeDir,
  retryOnPortClash,
  ServerStartError,
  tailFile,
  traversableByOthers,
  unprivilegedUser,
  waitReady,
  type RunAs,
  type ServerHandle,
} from './process.js'

export interface StartPostgresOptions {
  /** Port to listen on (default: a free ephemeral port). */
  port?: number
  /** Folder in which the server's own temp folder is made (default: os.tmpdir(), or /tmp when
   * running as root and os.tmpdir() is not reachable by the unprivileged user). */
  dir?: string
  /** Extra `-c name=value` settings (they win over the defaults). */
  settings?: Record<string, string | number | boolean>
  /** Default 20 s (initdb not included). */
  startTimeoutMs?: number
}

export interface PostgresServer extends ServerHandle {
  readonly host: string
  readonly port: number
  readonly user: string
  readonly database: string
  /** postgres://postgres@127.0.0.1:PORT/postgres */
  readonly connectionString: string
  /** The cluster's data directory (kept across restart()). */
  readonly dataDir: string
  /** The folder holding the unix socket (.s.PGSQL.PORT). */
  readonly socketDir: string
  /** The OS user the server runs as. */
  readonly osUser: string
  /** postgres://postgres@127.0.0.1:PORT/<database> */
  connectionStringFor(database: string): string
  /** CREATE DATABASE; returns its connection string. */
  createDatabase(name: string): Promise<string>
}

/**
 * The newest /usr/lib/postgresql/<ver>/bin holding initdb and postgres, else the folder of
 * `postgres` on PATH (PG_BIN_DIR overrides both). Throws the ensure-servers error.
 */
export function postgresBinDir(): string {
  const hasBoth = (dir: string): boolean =>
    isExecutable(join(dir, 'initdb')) && isExecutable(join(dir, 'postgres'))
  const fromEnv = process.env.PG_BIN_DIR
  if (fromEnv) {
    if (hasBoth(fromEnv)) return fromEnv
    throw new Error(`PG_BIN_DIR=${fromEnv} does not hold executable initdb and postgres`)
  }
  let versions: string[] = []
  try {
    versions = readdirSync('/usr/lib/postgresql')
      .filter((v) => /^\d+(\.\d+)?$/.test(v))
      .sort((a, b) => Number(b) - Number(a))
  } catch {
    // not Debian's layout
  }
  for (const version of versions) {
    const dir = `/usr/lib/postgresql/${version}/bin`
    if (hasBoth(dir)) return dir
  }
  for (const name of ['postgres', 'initdb']) {
    try {
      findBinary(name, 'postgresql')
    } catch {
      throw missingBinaryError(`${name} (PostgreSQL server)`, 'postgresql')
    }
  }
  return dirname(findBinary('postgres', 'postgresql'))
}

export const DEFAULT_SETTINGS: Record<string, string | number | boolean> = {
  listen_addresses: '127.0.0.1',
  fsync: 'off',
  full_page_writes: 'off',
  // synchronous_commit stays on: with fsync off it only costs a write() to the OS, and it keeps
  // committed rows (and sequence values: fencing tokens!) across a SIGKILL of the server.
  max_connections: 200,
}

/** One postmaster (exported for testkit/postgres-standby.ts; tests use startPostgres). */
export class PostgresServerImpl extends BaseServer implements PostgresServer {
  readonly host = '127.0.0.1'
  readonly port: number
  readonly user = 'postgres'
  readonly database = 'postgres'
  readonly dataDir: string
  readonly socketDir: string
  readonly osUser: string
  protected readonly what: string

  constructor(
    readonly binDir: string,
    dir: string,
    port: number,
    readonly runAs: RunAs | undefined,
    private readonly settings: Record<string, string | number | boolean>,
    startTimeoutMs: number,
  ) {
    super(dir, join(dir, 'postgres.log'), startTimeoutMs)
    this.port = port
    this.dataDir = join(dir, 'data')
    this.socketDir = join(dir, 'sock')
    this.osUser = runAs?.name ?? String(process.getuid?.() ?? '')
    this.what = `postgres on port ${port}`
    // Fast shutdown: SIGTERM (smart) would wait for every client to disconnect.
    this.stopSignal = 'SIGINT'
  }

  get connectionString(): string {
    return this.connectionStringFor(this.database)
  }

  connectionStringFor(database: string): string {
    return `postgres://${this.user}@${this.host}:${this.port}/${encodeURIComponent(database)}`
  }

  async createDatabase(name: string): Promise<string> {
    const client = new pg.Client({ connectionString: this.connectionString })
    client.on('error', () => undefined)
    await client.connect()
    try {
      await client.query(`CREATE DATABASE "${name.replaceAll('"', '""')}"`)
    } finally {
      await client.end().catch(() => undefined)
    }
    return this.connectionStringFor(name)
  }

  /** initdb into dataDir (once, before the first start). */
  async init(): Promise<void> {
    if (this.runAs) await chown(this.dir, this.runAs.uid, this.runAs.gid)
    await mkdir(this.socketDir, { mode: 0o700 })
    if (this.runAs) await chown(this.socketDir, this.runAs.uid, this.runAs.gid)
    const proc = await ManagedProcess.launch({
      command: join(this.binDir, 'initdb'),
      args: [
        '-D',
        this.dataDir,
        '-U',
        this.user,
        '--auth=trust',
        '--no-sync',
        '--encoding=UTF8',
        '--locale=C',
      ],
      env: { ...process.env, LC_ALL: 'C', LANG: 'C' },
      cwd: this.dir,
      logFile: this.logFile,
      uid: this.runAs?.uid,
      gid: this.runAs?.gid,
    })
    if (!(await proc.waitExit(60_000))) {
      await proc.kill()
      throw new ServerStartError('initdb did not finish in 60 s', tailFile(this.logFile))
    }
    if (proc.exitInfo?.code !== 0) {
      const hint = this.runAs
        ? ` (it ran as user ${this.runAs.name}: can it reach ${this.dir}?)`
        : ''
      throw new ServerStartError(
        `initdb failed with code ${proc.exitInfo?.code}${hint}`,
        tailFile(this.logFile, 30, proc.logStart),
      )
    }
  }

  protected async spawnAndWait(): Promise<ManagedProcess> {
    const args = ['-D', this.dataDir, '-p', String(this.port), '-k', this.socketDir]
    for (const [name, value] of Object.entries(this.settings)) {
      args.push('-c', `${name}=${typeof value === 'boolean' ? (value ? 'on' : 'off') : value}`)
    }
    const proc = await ManagedProcess.launch({
      command: join(this.binDir, 'postgres'),
      args,
      env: { ...process.env, LC_ALL: 'C', LANG: 'C' },
      cwd: this.dir,
      logFile: this.logFile,
      uid: this.runAs?.uid,
      gid: this.runAs?.gid,
      tree: true,
    })
    await waitReady({
      what: this.what,
      proc,
      logFile: this.logFile,
      timeoutMs: this.startTimeoutMs,
      // Our cluster, not whatever else may answer on the port: it tells its data directory.
      check: () => postgresReady(this.connectionString, 1_000, this.dataDir),
    })
    return proc
  }
}

/** initdb a private cluster, start it, wait until SELECT 1 answers. */
export async function startPostgres(options: StartPostgresOptions = {}): Promise<PostgresServer> {
  const binDir = postgresBinDir()
  const runAs = unprivilegedUser()
  let base = options.dir
  if (base === undefined && runAs) base = traversableByOthers(tmpdir()) ? tmpdir() : '/tmp'
  const dir = makeTempDir('postgres', base)
  const settings = { ...DEFAULT_SETTINGS, ...options.settings }
  const startTimeoutMs = options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS
  try {
    let initialized = false
    return await retryOnPortClash(options.port !== undefined, async () => {
      const port = options.port ?? (await freePort())
      const server = new PostgresServerImpl(binDir, dir, port, runAs, settings, startTimeoutMs)
      if (!initialized) {
        await server.init()
        initialized = true
      }
      await server.start()
      return server
    })
  } catch (err) {
    await removeDir(dir)
    throw err
  }
}

/**
 * true when a connection runs a query within timeoutMs (and, given dataDir, the server's
 * data_directory is that one). Never throws.
 */
export async function postgresReady(
  connectionString: string,
  timeoutMs: number,
  dataDir?: string,
): Promise<boolean> {
  const client = new pg.Client({
    connectionString,
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
  })
  client.on('error', () => undefined)
  try {
    await client.connect()
    const result = await client.query<{ dir: string }>(
      "SELECT current_setting('data_directory') AS dir",
    )
    const dir = result.rows[0]?.dir
    return dir !== undefined && (dataDir === undefined || dir === dataDir)
  } catch {
    return false
  } finally {
    await client.end().catch(() => undefined)
  }
}
