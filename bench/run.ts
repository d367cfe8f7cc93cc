/**
 * `npm run bench [-- --only NAME[,NAME]] [--quick]`: runs every suite in bench/suites/
 * (each measures conclave and, where a peer exists, the peer in the same run), prints a
 * markdown table per suite with each row's ratio to conclave's row for the same metric, and
 * writes bench/results/latest.json.
 */
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { BenchRow, BenchSuite } from './stats.js'

const here = dirname(fileURLToPath(import.meta.url))
const args = process.argv.slice(2)
const quick = args.includes('--quick')
const onlyIndex = args.indexOf('--only')
const only = onlyIndex >= 0 ? (args[onlyIndex + 1] ?? '').split(',').filter(Boolean) : []

const fmt = (n: number | undefined) =>
  n === undefined || Number.isNaN(n)
    ? ''
    : n >= 100
      ? n.toFixed(0)
      : n >= 10
        ? n.toFixed(1)
        : n.toFixed(2)

function table(rows: BenchRow[]): string {
  const lines = [
    '| metric | subject | p50 | p99 | value | unit | vs conclave | samples | note |',
    '|---|---|---|---|---|---|---|---|---|',
  ]
  for (const row of rows) {
    const ours = rows.find((r) => r.metric === row.metric && r.subject.startsWith('conclave'))
    const mine = row.p50 ?? row.value
    const base = ours ? (ours.p50 ?? ours.value) : undefined
    const ratio =
      ours && ours !== row && mine !== undefined && base ? `${(mine / base).toFixed(2)}x` : ''
    lines.push(
      `| ${row.metric} | ${row.subject} | ${fmt(row.p50)} | ${fmt(row.p99)} | ${fmt(row.value)} | ${row.unit} | ${ratio} | ${row.samples} | ${row.note ?? ''} |`,
    )
  }
  return lines.join('\n')
}

const files = readdirSync(join(here, 'suites'))
  .filter((f) => /\.ts$/.test(f) && !f.endsWith('.d.ts') && !f.startsWith('_'))
  .sort()
const results: Record<string, BenchRow[]> = {}
let failed = 0
for (const file of files) {
  const suite = (
    (await import(pathToFileURL(join(here, 'suites', file)).href)) as { default: BenchSuite }
  ).default
  if (only.length && !only.includes(suite.name)) continue
  console.log(`\n## ${suite.name}\n`)
  try {
    const rows = await suite.run({ quick, log: (line) => console.log(`  ${line}`) })
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
  JSON.stringify({ at: new Date().toISOString(), node: process.version, results }, null, 2),
)
console.log(`\nwrote bench/results/latest.json`)
process.exitCode = failed ? 1 : 0
