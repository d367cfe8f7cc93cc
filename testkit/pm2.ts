// PM2 (the npm package, a dev dependency) with a private PM2_HOME in a temp folder, running
// testkit/pm2-app.mjs: start an app of N instances in cluster or fork mode, run pm2 commands,
// read what every instance recorded, and kill the daemon afterwards. No vitest imports.
import { execFile, execFileSync } from 'node:child_process'
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { makeTempDir, removeDir } from './process.js'

const run = promisify(execFile)
const PM2_BIN = join(createRequire(import.meta.url).resolve('pm2/package.json'), '..', 'bin', 'pm2')
const APP = fileURLToPath(new URL('./pm2-app.mjs', import.meta.url))
const ROOT = fileURLToPath(new URL('..', import.meta.url))

/** Daemons not yet killed: killed at exit, so no PM2 daemon outlives the test process. */
const liveHomes = new Set<string>()
let exitHook = false
function killAtExit(home: string): void {
  liveHomes.add(home)
  if (exitHook) return
  exitHook = true
  process.on('exit', () => {
    for (const pm2Home of liveHomes) {
      try {
        execFileSync(process.execPath, [PM2_BIN, 'kill'], {
          env: { ...process.env, PM2_HOME: pm2Home },
          stdio: 'ignore',
          timeout: 20_000,
        })
      } catch {
        // Best effort at exit.
      }
    }
  })
}

/** One line an instance recorded. */
export interface Pm2Record {
  pid: number
  kind: 'started' | 'elected' | 'revoked'
  token: number
  at: number
}

/** A private PM2 daemon and one app on it. */
export interface Pm2App {
  home: string
  /** Runs `pm2 <args>` against the private daemon. */
  pm2(...args: string[]): Promise<string>
  /** Everything every instance recorded, in time order. */
  records(): Pm2Record[]
  /** The pids PM2 reports for the app now. */
  pids(): Promise<number[]>
  /** `pm2 kill` (the daemon and its apps), then the temp folders go. */
  close(): Promise<void>
}

/**
 * Starts testkit/pm2-app.mjs under a private PM2 daemon: `instances` of it in `mode`; `env` is
 * added to the app's environment (CONCLAVE_AGENT=1: each instance runs the process agent too).
 */
export async function startPm2App(
  mode: 'cluster' | 'fork',
  instances: number,
  leaseMs = 2_000,
  env: Record<string, string> = {},
): Promise<Pm2App> {
  const home = makeTempDir('pm2')
  const records = join(home, 'records')
  const sockets = join(home, 'local')
  mkdirSync(records)
  mkdirSync(sockets, { mode: 0o700 })
  const pm2Env = { ...process.env, PM2_HOME: join(home, 'home') }
  killAtExit(pm2Env.PM2_HOME)
  const pm2 = async (...args: string[]) =>
    (await run(process.execPath, [PM2_BIN, ...args], { env: pm2Env, cwd: ROOT, timeout: 60_000 }))
      .stdout
  const ecosystem = join(home, 'ecosystem.json')
  writeFileSync(
    ecosystem,
    JSON.stringify({
      apps: [
        {
          name: 'app',
          script: APP,
          instances,
          exec_mode: mode,
          cwd: ROOT,
          autorestart: true,
          kill_timeout: 5_000,
          env: {
            CONCLAVE_RECORDS: records,
            CONCLAVE_DIR: sockets,
            CONCLAVE_LEASE: String(leaseMs),
            ...env,
          },
        },
      ],
    }),
  )
  const app: Pm2App = {
    home,
    pm2,
    records() {
      const out: Pm2Record[] = []
      for (const file of readdirSync(records)) {
        const pid = Number(file.replace('.log', ''))
        for (const line of readFileSync(join(records, file), 'utf8').split('\n')) {
          const [kind, a, b] = line.split(' ')
          if (kind === 'elected' || kind === 'revoked') {
            out.push({ pid, kind, token: Number(a), at: Number(b) })
          } else if (kind === 'started') out.push({ pid, kind, token: 0, at: Number(b) })
        }
      }
      return out.sort((x, y) => x.at - y.at)
    },
    async pids() {
      const list = JSON.parse(await pm2('jlist')) as { pid: number; pm2_env: { status: string } }[]
      return list.filter((p) => p.pm2_env.status === 'online' && p.pid > 0).map((p) => p.pid)
    },
    async close() {
      await pm2('kill').catch(() => '')
      liveHomes.delete(pm2Env.PM2_HOME)
      await removeDir(home)
    },
  }
  try {
    await pm2('start', ecosystem)
  } catch (error) {
    await app.close()
    throw error
  }
  return app
}
