// A private PostgreSQL primary with one streaming standby made by `pg_basebackup -R`, the
// standby's replication connection through a fault proxy (cut({ mode: 'blackhole' }) freezes
// replication: the standby misses what the primary commits meanwhile), promote() (pg_promote()),
// and a switchable TCP path for clients (the VIP / DNS stand-in) that starts on the primary.
import { chown, mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import pg from 'pg'
import { freePort } from './ports.js'
import {
  DEFAULT_SETTINGS,
  PostgresServerImpl,
  startPostgres,
  type PostgresServer,
  type StartPostgresOptions,
} from './postgres.js'
import {
  DEFAULT_START_TIMEOUT_MS,
  makeTempDir,
  ManagedProcess,
  removeDir,
  ServerStartError,
  sleep,
  tailFile,
} from './process.js'
import { startProxy, type FaultProxy } from './proxy.js'
import { startSwitch, type TcpSwitch } from './switch.js'

export interface StartPostgresStandbyOptions {
  /** Extra settings for both servers (e.g. synchronous_standby_names on the primary). */
  settings?: StartPostgresOptions['settings']
  /** Default 30 s. */
  startTimeoutMs?: number
}

/** A primary, a standby replicating through `replication`, and the switchable client path. */
export interface PostgresStandbyPair extends AsyncDisposable {
  readonly primary: PostgresServer
  readonly standby: PostgresServer
  /** The standby's replication connection goes through this proxy. */
  readonly replication: FaultProxy
  /** Clients connect here; it forwards to the primary until switchTo(). */
  readonly vip: TcpSwitch
  /** postgres://postgres@127.0.0.1:<vip>/postgres */
  readonly vipConnectionString: string
  /** Waits until the standby replayed everything the primary has written (up to timeoutMs). */
  caughtUp(timeoutMs?: number): Promise<void>
  /** Promotes the standby (SELECT pg_promote(true)); resolves once it accepts writes. */
  promote(): Promise<void>
  stop(): Promise<void>
}

async function query<R extends pg.QueryResultRow>(url: string, text: string): Promise<R[]> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 })
  client.on('error', () => undefined)
  await client.connect()
  try {
    return (await client.query<R>(text)).rows
  } finally {
    await client.end().catch(() => undefined)
  }
}

class PairImpl implements PostgresStandbyPair {
  private stopping: Promise<void> | undefined
  constructor(
    readonly primary: PostgresServer,
    readonly standby: PostgresServer,
    readonly replication: FaultProxy,
    readonly vip: TcpSwitch,
  ) {}

  get vipConnectionString(): string {
    return `postgres://postgres@127.0.0.1:${this.vip.port}/postgres`
  }

  async caughtUp(timeoutMs = 10_000): Promise<void> {
    const [head] = await query<{ lsn: string }>(
      this.primary.connectionString,
      'SELECT pg_current_wal_lsn()::text AS lsn',
    )
    const lsn = head!.lsn
    const until = Date.now() + timeoutMs
    for (;;) {
      const [row] = await query<{ done: boolean }>(
        this.standby.connectionString,
        `SELECT coalesce(pg_last_wal_replay_lsn() >= '${lsn}'::pg_lsn, false) AS done`,
      )
      if (row?.done) return
      if (Date.now() > until) throw new Error(`standby did not replay ${lsn} in ${timeoutMs} ms`)
      await sleep(20)
    }
  }

  async promote(): Promise<void> {
    await query(this.standby.connectionString, 'SELECT pg_promote(true, 30)')
    for (;;) {
      const [row] = await query<{ r: boolean }>(
        this.standby.connectionString,
        'SELECT pg_is_in_recovery() AS r',
      )
      if (row && !row.r) return
      await sleep(20)
    }
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await this.vip.close()
      await this.replication.close()
      await Promise.all(
        [this.primary.resume(), this.standby.resume()].map((p) => p.catch(() => {})),
      )
      await Promise.all([this.primary.stop(), this.standby.stop()])
    })()
    return this.stopping
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop()
  }
}

/** Starts a primary, base-backs it up into a standby through the proxy, starts the standby. */
export async function startPostgresStandby(
  options: StartPostgresStandbyOptions = {},
): Promise<PostgresStandbyPair> {
  const settings = { wal_level: 'replica', max_wal_senders: 5, ...options.settings }
  const primary = await startPostgres({ settings, startTimeoutMs: options.startTimeoutMs })
  const impl = primary as PostgresServerImpl
  const replication = await startProxy({ targetPort: primary.port })
  const dir = makeTempDir('postgres-standby', join(primary.dir, '..'))
  try {
    const runAs = impl.runAs
    if (runAs) await chown(dir, runAs.uid, runAs.gid)
    const port = await freePort()
    const standby = new PostgresServerImpl(
      impl.binDir,
      dir,
      port,
      runAs,
      { ...DEFAULT_SETTINGS, ...settings, hot_standby: 'on' },
      options.startTimeoutMs ?? Math.max(DEFAULT_START_TIMEOUT_MS, 30_000),
    )
    await mkdir(standby.socketDir, { mode: 0o700 })
    if (runAs) await chown(standby.socketDir, runAs.uid, runAs.gid)
    const logFile = join(dir, 'basebackup.log')
    const backup = await ManagedProcess.launch({
      command: join(impl.binDir, 'pg_basebackup'),
      args: [
        '-h',
        '127.0.0.1',
        '-p',
        String(replication.port),
        '-U',
        'postgres',
        '-D',
        standby.dataDir,
        '-R',
        '-X',
        'stream',
        '--no-sync',
        '-c',
        'fast',
      ],
      env: { ...process.env, LC_ALL: 'C', LANG: 'C' },
      cwd: dir,
      logFile,
      uid: runAs?.uid,
      gid: runAs?.gid,
    })
    if (!(await backup.waitExit(60_000)) || backup.exitInfo?.code !== 0) {
      await backup.kill()
      throw new ServerStartError('pg_basebackup failed', tailFile(logFile))
    }
    await standby.start()
    const vip = await startSwitch(primary.port)
    const pair = new PairImpl(primary, standby, replication, vip)
    await pair.caughtUp()
    return pair
  } catch (error) {
    await replication.close()
    await primary.stop()
    await removeDir(dir)
    throw error
  }
}
