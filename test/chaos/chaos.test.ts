// A short chaos run per registered backend, fixed seed, every fault that applies: the safety
// invariants must hold. Never timings: a loaded machine changes failover times, not safety.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, it } from 'vitest'
import { CHAOS_BACKENDS, chaosBackend } from '../../chaos/backends.js'
import { check } from '../../chaos/checker.js'
import { applicableFaults, runChaos } from '../../chaos/harness.js'
import { writeReport } from '../../chaos/report.js'
import { lanes } from '../helpers/lanes.js'

const SEED = 20261121

/** Runs node with `args` to its exit (killed after `timeout` ms): its status and output. */
function runNode(
  args: string[],
  timeout: number,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    child.on('error', reject)
    child.on('close', (status) => resolve({ status, stdout, stderr }))
  })
}
const out = mkdtempSync(join(tmpdir(), 'conclave-chaos-'))
afterAll(() => {
  try {
    rmdirSync(out) // only when empty: the reports of failed runs stay for a look
  } catch {
    // kept
  }
})

const runs = [
  ...Object.keys(CHAOS_BACKENDS).map((backend) => ({ backend, tickets: 1, procs: 3 })),
  // The semaphore case, where it is cheap: no server to start.
  { backend: 'cluster', tickets: 2, procs: 4 },
]

/**
 * Two runs at a time, each with its own server, candidates and resource: a run's seconds are
 * mostly waiting (leases, fault windows), so two side by side take about the time of one. The
 * cluster-mode runs share this process's one hub (their candidates are its workers, and a run's
 * stop closes the hub), so they go one after the other in the same lane. A test waits in its
 * lane before its run starts: its timeout covers the runs ahead of it.
 */
const runLanes = lanes(2)
/** Lane 0 for a cluster-mode run (one hub per process), else the emptiest lane. */
const laneOf = (backend: string) =>
  runLanes.pick(chaosBackend(backend)?.mode === 'cluster' ? 0 : undefined)
const inLane = runLanes.run

describe.concurrent('chaos (short runs, fixed seed)', () => {
  for (const { backend, tickets, procs } of runs) {
    const name = `${backend}, tickets ${tickets}: at most tickets holders, no stale write accepted, no grant left behind`
    const lane = laneOf(backend)
    it(
      name,
      ({ expect }) =>
        inLane(lane, async () => {
          const records = await runChaos({
            backend,
            seed: SEED,
            seconds: 6,
            procs,
            tickets,
            leaseMs: 500,
            faults: applicableFaults(backend),
          })
          const report = check(records)
          const dir = join(out, `${backend}-${tickets}`)
          const { html } = await writeReport(dir, records, report)
          const where = `seed ${SEED}; report ${html}`
          // Each invariant on its own, so a failure names it.
          expect(report.overlaps, where).toEqual([])
          expect(report.maxActive, where).toBeLessThanOrEqual(tickets)
          expect(report.staleAccepted, where).toEqual([])
          expect(report.rejectedFresh, where).toEqual([])
          expect(report.tokensOutOfOrder, where).toEqual([])
          expect(report.leftBehind, where).toEqual([])
          expect(report.violations, where).toEqual([])
          // The run did what it claims: terms were won, writes landed, faults were injected.
          expect(report.terms, where).toBeGreaterThan(0)
          expect(report.writes.accepted, where).toBeGreaterThan(0)
          expect(records.faults.length, where).toBeGreaterThan(0)
          expect(
            records.harnessErrors.filter((e) => /did not close/.test(e)),
            where,
          ).toEqual([])
          rmSync(dir, { recursive: true, force: true })
        }),
      // The runs ahead in its lane, then its own.
      300_000,
    )
  }
})

// In lane 0 too (its backend is cluster-mode), beside the last runs of the other lane.
describe.concurrent('chaos harness self-test', () => {
  const lane = laneOf('cluster-unsafe')
  it(
    'catches a backend that lets two hold where one may, and the CLI exits 1 with the seed',
    ({ expect }) =>
      inLane(lane, async () => {
        const records = await runChaos({
          backend: 'cluster-unsafe',
          seed: 1,
          seconds: 3,
          procs: 3,
          tickets: 1,
          leaseMs: 500,
          faults: [],
        })
        const report = check(records)
        expect(report.ok).toBe(false)
        expect(report.maxActive).toBeGreaterThanOrEqual(2)
        expect(report.overlaps.length).toBeGreaterThan(0)
        expect(report.violations[0]).toMatch(/terms active at once \(tickets 1\)/)

        // Not spawnSync: the runs beside it need this process's event loop (the hub, the proxies).
        const cli = await runNode(
          [
            '--import',
            'tsx',
            fileURLToPath(new URL('../../chaos/run.ts', import.meta.url)),
            '--backend',
            'cluster-unsafe',
            '--seconds',
            '3',
            '--procs',
            '2',
            '--lease',
            '500',
            '--faults',
            '',
            '--seed',
            '4242',
            '--quiet',
            '--out',
            join(out, 'cli'),
          ],
          90_000,
        )
        expect(cli.status, cli.stderr).toBe(1)
        expect(cli.stdout).toMatch(
          /FAILED cluster-unsafe seed 4242; replay: npx tsx chaos\/run.ts .*--seed 4242/,
        )
        rmSync(join(out, 'cli'), { recursive: true, force: true })
      }),
    300_000,
  )
})
