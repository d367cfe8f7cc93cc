// The cluster backend used where it cannot work, with real separate processes: two `node`
// processes each electing on clusterBackend() (each its own hub: both lead, both are warned), a
// real node:cluster app (never warned), and PM2's fork and cluster modes (refused), with the
// environment PM2 gives its processes.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const app = fileURLToPath(new URL('./standalone-app.ts', import.meta.url))
const WARNING =
  /\[CONCLAVE_STANDALONE_CLUSTER\] ConclaveWarning: clusterBackend\(\) granted a term/g

interface Outcome {
  code: number | null
  events: Record<string, unknown>[]
  stderr: string
}

/** Runs the fixture app to its end; `ipc` gives it an IPC channel to us, as PM2 fork mode does. */
function runApp(args: string[], env: Record<string, string> = {}, ipc = false): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', app, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe', ...(ipc ? (['ipc'] as const) : [])],
    })
    let stdout = ''
    let stderr = ''
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`${args.join(' ')} did not finish in 30 s\n${stdout}\n${stderr}`))
    }, 30_000)
    child.on('exit', (code) => {
      clearTimeout(timer)
      const events = stdout
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as Record<string, unknown>)
      resolve({ code, events, stderr })
    })
  })
}

/** What PM2 puts in the environment of every process it starts (a subset, as PM2 7 sets it). */
const pm2Env = (execMode: 'fork_mode' | 'cluster_mode') => ({
  pm_id: '3',
  name: 'app',
  exec_mode: execMode,
  NODE_APP_INSTANCE: '3',
  instances: '4',
  pm_exec_path: app,
  PM2_HOME: '/nonexistent/.pm2',
})

describe('the cluster backend outside one node:cluster app', () => {
  it('warns each of two separate processes, which both lead with token 1, that only it takes part', async () => {
    const [a, b] = await Promise.all([
      runApp(['elect', 'reports/nightly', '2500']),
      runApp(['elect', 'reports/nightly', '2500']),
    ])
    for (const run of [a, b]) {
      expect(run.code, run.stderr).toBe(0)
      // The mistake itself: each process has a hub of its own, so each one leads.
      expect(run.events.filter((e) => 'elected' in e).map((e) => e.elected)).toEqual([1])
      expect(run.stderr.match(WARNING), run.stderr).toHaveLength(1) // once per process
      expect(run.stderr).toContain('Separate processes')
      expect(run.stderr).toContain('redisBackend (conclave/redis)')
    }
  })

  it('never warns a real cluster app whose primary forks its workers, then campaigns too', async () => {
    const run = await runApp(['cluster-app', '2'])
    expect(run.code, run.stderr).toBe(0)
    const terms = run.events.filter((e) => 'elected' in e)
    // The primary's term, then (once it closed) a worker's, through the one hub.
    expect(terms.length, JSON.stringify(run.events)).toBeGreaterThanOrEqual(2)
    expect(terms.some((e) => 'worker' in e)).toBe(true)
    // One hub for all three processes: every term has its own token.
    const tokens = terms.map((e) => e.elected)
    expect(new Set(tokens).size).toBe(tokens.length)
    expect(run.stderr).not.toMatch(WARNING)
  })

  it('never warns a primary that wins a term and forks its worker right after (within the grace)', async () => {
    const run = await runApp(['campaign-then-fork', '2000'])
    expect(run.code, run.stderr).toBe(0)
    expect(run.events.map((e) => e.elected)).toEqual([1])
    expect(run.stderr).not.toMatch(WARNING)
  })

  it('refuses PM2 fork mode (each instance a separate process) with a ConclaveError saying what to use', async () => {
    const run = await runApp(['try'], pm2Env('fork_mode'), true)
    expect(run.code, run.stderr).toBe(0)
    const [result] = run.events as [{ error?: { code: string; message: string } }]
    expect(result.error?.code).toBe('ERR_CONCLAVE_PM2')
    expect(result.error?.message).toMatch(
      /runs under PM2 fork mode \(pm_id 3, exec_mode fork_mode\)/,
    )
    expect(result.error?.message).toMatch(/redisBackend .* postgresBackend .* etcdBackend/)
    expect(result.error?.message).toMatch(/localBackend \(conclave\/local\) for the processes/)
    // The one case PM2's environment cannot tell apart: one instance forking its own workers.
    const allowed = await runApp(['try', '{"allowPm2":true}'], pm2Env('fork_mode'), true)
    expect(allowed.events).toMatchObject([{ ok: true }])
    // Not under PM2: the same call works (and only warns once it grants a term alone).
    expect((await runApp(['try'], {}, true)).events).toMatchObject([{ ok: true }])
  })

  it('refuses PM2 cluster mode, whose primary is PM2’s daemon with no hub', async () => {
    const run = await runApp(['try-in-worker'], pm2Env('cluster_mode'))
    expect(run.code, run.stderr).toBe(0)
    const [result] = run.events as [{ error?: { code: string; message: string } }]
    expect(result.error?.code).toBe('ERR_CONCLAVE_PM2')
    expect(result.error?.message).toMatch(/runs under PM2 cluster mode/)
    expect(result.error?.message).toMatch(/PM2's own daemon, which runs no conclave hub/)
  })
})
