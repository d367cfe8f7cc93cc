/**
 * `npm run bench [-- --only NAME[,NAME]] [--scenarios ID[,ID]] [--quick] [many-waiters sizes]`:
 * runs every suite in bench/suites/ (each a list of subjects × the scenarios of
 * bench/scenarios.ts), prints a markdown table per suite with each row's ratio to conclave's row
 * of the same scenario and metric (a "baseline: ..." row shows conclave's ratio to it instead),
 * and writes bench/results/latest.json. The many-waiters sizes: --waiters N, --processes N,
 * --lease MS, --rounds N, --idle-leases N, --start-in-flight N (campaigns each waiter process
 * starts at once; defaults 500, 5, 10000, 10, 2, 5; --quick 50, 2, 3000, 3, 2, 5).
 */
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { ManyWaitersOptions } from './scenarios.js'
import { runSuite, type Suite } from './suite.js'
import type { BenchRow } from './stats.js'

const here = dirname(fileURLToPath(import.meta.url))
const args = process.argv.slice(2)
const quick = args.includes('--quick')
const onlyIndex = args.indexOf('--only')
const only = onlyIndex >= 0 ? (args[onlyIndex + 1] ?? '').split(',').filter(Boolean) : []
const scenariosIndex = args.indexOf('--scenarios')
const scenarioIds =
  scenariosIndex >= 0 ? (args[scenariosIndex + 1] ?? '').split(',').filter(Boolean) : []

/** A positive whole number given as `--flag N`, or undefined. */
function count(flag: string): number | undefined {
  const i = args.indexOf(flag)
  if (i < 0) return undefined
  const value = Number(args[i + 1])
  if (!Number.isInteger(value) || value < 1)
    throw new Error(`${flag}: expected a whole number of at least 1, got ${args[i + 1]}`)
  return value
}
const sizes: Partial<ManyWaitersOptions> = {
  waiters: count('--waiters'),
  processes: count('--processes'),
  leaseMs: count('--lease'),
  rounds: count('--rounds'),
  idleLeases: count('--idle-leases'),
  startInFlight: count('--start-in-flight'),
}
const many = Object.fromEntries(
  Object.entries(sizes).filter(([, v]) => v !== undefined),
) as Partial<ManyWaitersOptions>

const fmt = (n: number | undefined) =>
  n === undefined || Number.isNaN(n)
    ? ''
    : Math.abs(n) >= 100
      ? n.toFixed(0)
      : Math.abs(n) >= 10
        ? n.toFixed(1)
        : Math.abs(n) >= 0.1 || n === 0
          ? n.toFixed(2)
          : n.toPrecision(2)

const figure = (row: BenchRow) => row.p50 ?? row.value

/** The suite's rows as a markdown table; a scenario and a metric are named on their first row. */
function table(rows: BenchRow[]): string {
  const lines = [
    '| scenario | metric | subject | p50 | p99 | value | unit | vs conclave | samples | note |',
    '|---|---|---|--:|--:|--:|---|--:|--:|---|',
  ]
  let lastScenario = ''
  let lastMetric = ''
  for (const row of rows) {
    const same = (r: BenchRow) =>
      r.scenario === row.scenario && r.metric === row.metric && r.unit === row.unit
    const base = rows.find((r) => same(r) && r.subject.startsWith('conclave') && !r.na)
    const mine = figure(row)
    const ratio =
      base && base !== row && !row.na && mine !== undefined && figure(base)
        ? // A baseline (a backend's cheapest write) is what conclave's figure is measured against.
          row.subject.startsWith('baseline:')
          ? `conclave ${fmt(figure(base)! / mine)}x`
          : `${fmt(mine / figure(base)!)}x`
        : ''
    const scenario = row.scenario === lastScenario ? '' : row.scenario
    // A scenario-wide n/a row has no metric of its own.
    const metric = row.metric ? (scenario || row.metric !== lastMetric ? row.metric : '') : 'all'
    lastScenario = row.scenario
    lastMetric = row.metric
    const cells = row.na
      ? [scenario, metric, row.subject, 'n/a', '', '', row.unit, '', '', row.na]
      : [
          scenario,
          metric,
          row.subject,
          fmt(row.p50),
          fmt(row.p99),
          fmt(row.value),
          row.unit,
          ratio,
          String(row.samples),
          row.note ?? '',
        ]
    lines.push(`| ${cells.map((c) => c.replaceAll('|', '\\|')).join(' | ')} |`)
  }
  return lines.join('\n')
}

const files = readdirSync(join(here, 'suites'))
  .filter((f) => /\.ts$/.test(f) && !f.endsWith('.d.ts') && !f.startsWith('_'))
  .sort()
const results: Record<string, BenchRow[]> = {}
let failed = 0
for (const file of files) {
  const loaded = (
    (await import(pathToFileURL(join(here, 'suites', file)).href)) as { default: Suite }
  ).default
  if (only.length && !only.includes(loaded.name)) continue
  const suite: Suite = scenarioIds.length
    ? { ...loaded, scenarios: loaded.scenarios.filter((s) => scenarioIds.includes(s.id)) }
    : loaded
  if (!suite.scenarios.length) continue
  console.log(`\n## ${suite.name}\n`)
  try {
    const rows = await runSuite(suite, {
      quick,
      many,
      log: (line) => console.log(`  ${line}`),
    })
    results[suite.name] = rows
    console.log(`\n${table(rows)}`)
  } catch (error) {
    failed++
    console.error(`suite ${suite.name} failed: ${(error as Error).stack}`)
  }
}
mkdirSync(join(here, 'results'), { recursive: true })
writeFileSync(
  join(here, 'results', 'latest.json'),
  JSON.stringify({ at: new Date().toISOString(), node: process.version, quick, results }, null, 2),
)
console.log(`\nwrote bench/results/latest.json`)
process.exitCode = failed ? 1 : 0
