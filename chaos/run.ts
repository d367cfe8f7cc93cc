// The chaos harness's command line (`npm run chaos -- ...`):
//   npx tsx chaos/run.ts --backend cluster[,redis,...|all] [--seconds 60] [--procs 5]
//     [--tickets 1] [--lease 1000] [--work MS] [--faults kill,pause,partition,restart,stall]
//     [--seed N] [--runs 1] [--out DIR]
// Each run writes DIR/<backend>-<seed>/report.{json,html}. Exits 1 when an invariant broke
// (printing the seed and the command that replays it), 2 on a bad flag.
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { CHAOS_BACKENDS, chaosBackend, SELF_TEST_BACKENDS } from './backends.js'
import { check, type CheckReport } from './checker.js'
import { applicableFaults, runChaos } from './harness.js'
import { FAULT_KINDS, type FaultKind } from './records.js'
import { writeReport } from './report.js'

const USAGE = `usage: npx tsx chaos/run.ts --backend NAME[,NAME...|all] [--seconds 60] [--procs 5]
  [--tickets 1] [--lease 1000] [--work MS] [--faults ${FAULT_KINDS.join(',')}]
  [--seed N] [--runs 1] [--out chaos/results] [--quiet]
backends: ${Object.keys(CHAOS_BACKENDS).join(', ')} (all); deliberately unsafe, to see a failure:
  ${Object.keys(SELF_TEST_BACKENDS).join(', ')}`

function fail(message: string): never {
  process.stderr.write(`${message}\n${USAGE}\n`)
  process.exit(2)
}

function int(name: string, value: string | undefined, fallback: number, min: number, max: number) {
  if (value === undefined) return fallback
  const n = Number(value)
  if (!Number.isInteger(n) || n < min || n > max) {
    fail(`Invalid --${name}: ${JSON.stringify(value)}. An integer from ${min} to ${max}.`)
  }
  return n
}

let args: ReturnType<typeof parse>
function parse() {
  return parseArgs({
    options: {
      backend: { type: 'string' },
      seconds: { type: 'string' },
      procs: { type: 'string' },
      tickets: { type: 'string' },
      lease: { type: 'string' },
      work: { type: 'string' },
      faults: { type: 'string' },
      seed: { type: 'string' },
      runs: { type: 'string' },
      out: { type: 'string' },
      quiet: { type: 'boolean' },
      help: { type: 'boolean' },
    },
    strict: true,
  }).values
}
try {
  args = parse()
} catch (error) {
  fail((error as Error).message)
}
if (args.help) {
  process.stdout.write(`${USAGE}\n`)
  process.exit(0)
}
if (!args.backend) fail('Missing --backend.')
const backends = args.backend === 'all' ? Object.keys(CHAOS_BACKENDS) : args.backend.split(',')
for (const b of backends) {
  if (!chaosBackend(b)) {
    fail(`Invalid --backend: "${b}". Known: ${Object.keys(CHAOS_BACKENDS).join(', ')}, all.`)
  }
}
const seconds = int('seconds', args.seconds, 60, 3, 86_400)
const procs = int('procs', args.procs, 5, 1, 64)
const tickets = int('tickets', args.tickets, 1, 1, 64)
const leaseMs = int('lease', args.lease, 1_000, 100, 600_000)
const workMs = int('work', args.work, Math.max(5, Math.round(leaseMs / 10)), 1, leaseMs)
const runs = int('runs', args.runs, 1, 1, 1_000)
const seed0 = int('seed', args.seed, Math.floor(Math.random() * 2 ** 31), 0, 2 ** 32 - 1)
let requested: FaultKind[] | undefined
if (args.faults !== undefined) {
  const kinds = args.faults === '' ? [] : args.faults.split(',')
  for (const k of kinds) {
    if (!(FAULT_KINDS as readonly string[]).includes(k)) {
      fail(`Invalid --faults: "${k}". Known: ${FAULT_KINDS.join(', ')}.`)
    }
  }
  requested = kinds as FaultKind[]
}
const out = args.out ?? join('chaos', 'results')
const say = (line: string) => process.stdout.write(`${line}\n`)

const results: { backend: string; seed: number; report: CheckReport; html: string }[] = []
for (const backend of backends) {
  const faults = applicableFaults(backend, requested)
  const skipped = (requested ?? []).filter((k) => !faults.includes(k))
  if (skipped.length) say(`${backend}: ${skipped.join(', ')} do not apply; skipped`)
  for (let r = 0; r < runs; r++) {
    const seed = (seed0 + r) >>> 0
    say(
      `== ${backend} seed ${seed}: ${seconds} s, ${procs} procs, tickets ${tickets}, lease ${leaseMs} ms, faults ${faults.join(',') || 'none'}`,
    )
    const started = performance.now()
    const records = await runChaos({
      backend,
      seed,
      seconds,
      procs,
      tickets,
      leaseMs,
      workMs,
      faults,
      ...(args.quiet
        ? {}
        : {
            log: (line: string) =>
              say(`  +${((performance.now() - started) / 1000).toFixed(1)}s ${line}`),
          }),
    })
    const report = check(records)
    const { html } = await writeReport(join(out, `${backend}-${seed}`), records, report)
    results.push({ backend, seed, report, html })
    say(
      `${report.ok ? 'PASS' : 'FAIL'} ${backend} seed ${seed}: max holders ${report.maxActive}/${tickets}, stale accepted ${report.staleAccepted.length}, refused ${report.writes.rejected}/${report.writes.total}, terms ${report.terms}, faults ${records.faults.length}, failover median ${fmtLeases(report.failover.all?.medianLeases)} max ${fmtLeases(report.failover.all?.maxLeases)} leases, left behind ${report.leftBehind.length}`,
    )
    for (const v of report.violations) say(`  VIOLATION: ${v}`)
    say(`  report: ${html}`)
  }
}

function fmtLeases(value: number | null | undefined): string {
  return value === null || value === undefined ? '–' : value.toFixed(2)
}

say('')
say(
  '| backend | seed | verdict | max holders | stale accepted | refused writes | overlaps (paused / late timer) | terms | faults | failover median / max (leases) | leaderless | left behind (held at close) |',
)
say('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
for (const { backend, seed, report } of results) {
  const faults = Object.entries(report.faults)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ')
  say(
    `| ${backend} | ${seed} | ${report.ok ? 'pass' : '**FAIL**'} | ${report.maxActive}/${report.tickets} | ${report.staleAccepted.length} | ${report.writes.rejected}/${report.writes.total} | ${report.signalOverlaps.involvingBlind.count} / ${report.signalOverlaps.lateSignal.count} | ${report.terms} | ${faults || '–'} | ${fmtLeases(report.failover.all?.medianLeases)} / ${fmtLeases(report.failover.all?.maxLeases)} | ${(report.leaderlessFraction * 100).toFixed(1)} % | ${report.leftBehind.length} (${report.heldAtClose}) |`,
  )
}
const failed = results.filter((r) => !r.report.ok)
if (failed.length > 0) {
  say('')
  for (const f of failed) {
    say(
      `FAILED ${f.backend} seed ${f.seed}; replay: npx tsx chaos/run.ts --backend ${f.backend} --seconds ${seconds} --procs ${procs} --tickets ${tickets} --lease ${leaseMs} --work ${workMs} --faults ${applicableFaults(f.backend, requested).join(',')} --seed ${f.seed}`,
    )
  }
  process.exit(1)
}
// Forked candidates and servers are gone; exit even if a client library left a handle open.
process.exit(0)
