// A short chaos run per registered backend, fixed seed, every fault that applies: the safety
// invariants must hold. Never timings: a loaded machine changes failover times, not safety.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { CHAOS_BACKENDS } from '../../chaos/backends.js'
import { check } from '../../chaos/checker.js'
import { applicableFaults, runChaos } from '../../chaos/harness.js'
import { writeReport } from '../../chaos/report.js'

const SEED = 20261121
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

describe('chaos (short runs, fixed seed)', () => {
  for (const { backend, tickets, procs } of runs) {
    const name = `${backend}, tickets ${tickets}: at most tickets holders, no stale write accepted, no grant left behind`
    it(
      name,
      async () => {
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
      },
      120_000,
    )
  }
})

describe('chaos harness self-test', () => {
  it('catches a backend that lets two hold where one may, and the CLI exits 1 with the seed', async () => {
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

    const cli = spawnSync(
      process.execPath,
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
      { encoding: 'utf8', timeout: 90_000 },
    )
    expect(cli.status, cli.stderr).toBe(1)
    expect(cli.stdout).toMatch(
      /FAILED cluster-unsafe seed 4242; replay: npx tsx chaos\/run.ts .*--seed 4242/,
    )
    rmSync(join(out, 'cli'), { recursive: true, force: true })
  }, 120_000)
})
