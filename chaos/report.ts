/**
 * Writes a run's report: `report.json` (the records and the checker's verdict) and
 * `report.html`, a self-contained page with an inline SVG timeline (one lane per process: its
 * terms, the faults it suffered, the writes the fence refused) that opens in any browser.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { activeIntervals, type CheckReport, signalIntervals, sweep } from './checker.js'
import type { ChaosRecords } from './records.js'

export async function writeReport(
  dir: string,
  records: ChaosRecords,
  report: CheckReport,
): Promise<{ json: string; html: string }> {
  await mkdir(dir, { recursive: true })
  const json = join(dir, 'report.json')
  const html = join(dir, 'report.html')
  await writeFile(json, JSON.stringify({ report, records }, null, 2) + '\n')
  await writeFile(html, renderHtml(records, report))
  return { json, html }
}

const esc = (text: unknown) =>
  String(text).replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!,
  )
const fmt = (ms: number | null | undefined, digits = 0) =>
  ms === null || ms === undefined ? '–' : ms.toFixed(digits)

/** Neighbouring terms get distant hues whatever the tokens look like (redis: microseconds). */
function tokenColors(tokens: number[]): Map<number, string> {
  const sorted = [...new Set(tokens)].sort((a, b) => a - b)
  return new Map(sorted.map((token, rank) => [token, `hsl(${(rank * 67) % 360} 55% 55%)`]))
}

/** `#token` if it fits in `width` px, else its last digits, else nothing. */
function tokenLabel(token: number, width: number): string | undefined {
  const full = `#${token}`
  if (full.length * 6 + 6 <= width) return full
  const short = `#…${String(token).slice(-4)}`
  return short.length * 6 + 6 <= width ? short : undefined
}

/** The timeline picture. */
export function renderTimeline(records: ChaosRecords): string {
  const t0 = records.startedAt
  const t1 = Math.max(records.endedAt, records.closingAt, t0 + 1)
  const left = 110
  const width = 1400
  const plot = width - left - 20
  const laneH = 26
  const top = 70
  const procs = [...records.procs].sort((a, b) => a.spawnedAt - b.spawnedAt)
  const lane = new Map(procs.map((p, i) => [p.id, i]))
  const height = top + procs.length * laneH + 40
  const x = (t: number) => left + ((t - t0) / (t1 - t0)) * plot
  const y = (proc: string) => top + (lane.get(proc) ?? 0) * laneH
  const out: string[] = []
  const push = (s: string) => out.push(s)

  push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, sans-serif" font-size="11">`,
  )
  push(
    `<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="3" height="6" fill="#d33" opacity="0.55"/></pattern></defs>`,
  )
  push(`<rect x="0" y="0" width="${width}" height="${height}" fill="#fff"/>`)

  // Time axis: a tick per second (or per 5 / 10 s on long runs).
  const seconds = (t1 - t0) / 1000
  const step = seconds > 120 ? 10 : seconds > 30 ? 5 : 1
  for (let s = 0; s <= seconds; s += step) {
    const xs = x(t0 + s * 1000)
    push(`<line x1="${xs}" y1="${top - 6}" x2="${xs}" y2="${height - 30}" stroke="#eee"/>`)
    push(`<text x="${xs}" y="${height - 16}" text-anchor="middle" fill="#666">${s}s</text>`)
  }

  // Server restarts: a band across every lane.
  for (const f of records.faults.filter((f) => f.kind === 'restart')) {
    push(
      `<rect x="${x(f.start)}" y="${top - 6}" width="${Math.max(2, x(f.end) - x(f.start))}" height="${procs.length * laneH + 6}" fill="#888" opacity="0.25"><title>server restart (${esc(f.variant ?? '')}), ${fmt(f.end - f.start)} ms</title></rect>`,
    )
    push(`<text x="${x(f.start)}" y="${top - 10}" fill="#555">restart</text>`)
  }

  // Holders at once (clamped terms): a step line above the lanes; red above tickets.
  const active = activeIntervals(records)
  const points: { t: number; n: number }[] = []
  const events = active
    .filter((i) => i.end > i.start)
    .flatMap((i) => [
      { t: i.start, d: 1 },
      { t: i.end, d: -1 },
    ])
    .sort((a, b) => a.t - b.t || a.d - b.d)
  let n = 0
  points.push({ t: t0, n: 0 })
  for (const e of events) {
    n += e.d
    points.push({ t: e.t, n })
  }
  points.push({ t: t1, n })
  const maxN = Math.max(records.config.tickets + 1, ...points.map((p) => p.n))
  const hy = (k: number) => top - 14 - (k / maxN) * 34
  let path = `M ${x(t0)} ${hy(0)}`
  for (let i = 1; i < points.length; i++) {
    path += ` H ${x(points[i]!.t)} V ${hy(points[i]!.n)}`
  }
  push(`<text x="8" y="${hy(1) + 4}" fill="#333">holders</text>`)
  push(
    `<line x1="${left}" y1="${hy(records.config.tickets)}" x2="${left + plot}" y2="${hy(records.config.tickets)}" stroke="#c00" stroke-dasharray="3 3" opacity="0.5"><title>tickets = ${records.config.tickets}</title></line>`,
  )
  push(`<path d="${path}" fill="none" stroke="#333" stroke-width="1.2"/>`)
  for (const o of sweep(active, records.config.tickets).above) {
    push(
      `<rect x="${x(o.start)}" y="${hy(maxN)}" width="${Math.max(2, x(o.end) - x(o.start))}" height="${hy(0) - hy(maxN)}" fill="#f00" opacity="0.6"><title>${o.count} active terms: ${esc(o.terms.map((t) => `${t.proc}#${t.token}`).join(', '))}</title></rect>`,
    )
  }

  for (const p of procs) {
    const yl = y(p.id)
    push(
      `<text x="8" y="${yl + 16}" fill="#222">${esc(p.id)} <tspan fill="#999">pid ${p.pid}</tspan></text>`,
    )
    const end = p.exitedAt ?? t1
    push(
      `<line x1="${x(p.spawnedAt)}" y1="${yl + 13}" x2="${x(end)}" y2="${yl + 13}" stroke="#bbb"><title>${esc(p.id)}: spawned +${fmt(p.spawnedAt - t0)} ms${p.exitedAt ? `, exited +${fmt(p.exitedAt - t0)} ms (${esc(p.exit?.signal ?? `code ${p.exit?.code}`)})` : ''}</title></line>`,
    )
  }

  // Blind stretches (paused, stalled) behind the terms.
  for (const b of records.blind) {
    const color = b.kind === 'pause' ? '#f90' : '#a4f'
    push(
      `<rect x="${x(b.start)}" y="${y(b.proc) + 2}" width="${Math.max(2, x(b.end) - x(b.start))}" height="${laneH - 4}" fill="${color}" opacity="0.3"><title>${b.kind === 'pause' ? 'SIGSTOP' : 'event loop blocked'} ${fmt(b.end - b.start)} ms</title></rect>`,
    )
  }
  for (const f of records.faults.filter((f) => f.kind === 'partition' && f.target)) {
    const color = f.variant === 'delay' ? '#6cf' : '#36c'
    push(
      `<rect x="${x(f.start)}" y="${y(f.target!) + 2}" width="${Math.max(2, x(f.end) - x(f.start))}" height="${laneH - 4}" fill="${color}" opacity="0.3"><title>path ${esc(f.variant)} ${fmt(f.end - f.start)} ms</title></rect>`,
    )
  }

  // Terms: solid while active; hatched from the deadline until the signal fired.
  const signal = signalIntervals(records)
  const colors = tokenColors(active.map((a) => a.token))
  active.forEach((a, i) => {
    const s = signal[i]!
    const term = records.terms[i]!
    const yl = y(a.proc)
    const w = Math.max(1, x(a.end) - x(a.start))
    push(
      `<rect x="${x(a.start)}" y="${yl + 5}" width="${w}" height="${laneH - 10}" rx="2" fill="${colors.get(a.token)}"><title>${esc(a.proc)} term #${a.token}: +${fmt(a.start - t0)} to +${fmt(a.end - t0)} ms (${esc(term.reason ?? 'no end recorded')})</title></rect>`,
    )
    const label = tokenLabel(a.token, w)
    if (label) {
      push(`<text x="${x(a.start) + 3}" y="${yl + 17}" fill="#fff" font-size="10">${label}</text>`)
    }
    if (s.end > a.end + 0.5) {
      push(
        `<rect x="${x(a.end)}" y="${yl + 5}" width="${Math.max(1, x(s.end) - x(a.end))}" height="${laneH - 10}" fill="url(#hatch)" stroke="#d33" stroke-width="0.5"><title>${esc(a.proc)} #${a.token}: signal fired ${fmt(s.end - a.end)} ms after the deadline (the process could not know)</title></rect>`,
      )
    }
  })

  // Writes: accepted as small ticks under the term, refused as red triangles.
  for (const w of records.writes) {
    const yl = y(w.proc)
    const xw = x(w.at)
    if (w.accepted) {
      push(
        `<line x1="${xw}" y1="${yl + laneH - 5}" x2="${xw}" y2="${yl + laneH - 2}" stroke="#555" stroke-width="0.6"/>`,
      )
    } else {
      push(
        `<path d="M ${xw - 4} ${yl + 1} L ${xw + 4} ${yl + 1} L ${xw} ${yl + 8} Z" fill="#d00"><title>write with token ${w.token} refused by the fence (it had seen ${w.highest}); +${fmt(w.at - t0)} ms</title></path>`,
      )
    }
  }

  // Kills.
  for (const f of records.faults.filter((f) => f.kind === 'kill' && f.target)) {
    const xs = x(f.start)
    const yl = y(f.target!) + laneH / 2
    push(
      `<path d="M ${xs - 5} ${yl - 5} L ${xs + 5} ${yl + 5} M ${xs - 5} ${yl + 5} L ${xs + 5} ${yl - 5}" stroke="#000" stroke-width="2.5"><title>SIGKILL at +${fmt(f.start - t0)} ms</title></path>`,
    )
  }
  push('</svg>')
  return out.join('\n')
}

function legend(): string {
  const item = (swatch: string, text: string) =>
    `<span class="item"><svg width="22" height="12">${swatch}</svg>${text}</span>`
  return [
    item('<rect width="22" height="12" rx="2" fill="hsl(67 55% 55%)"/>', 'term (colour = token)'),
    item(
      '<rect width="22" height="12" fill="#fff" stroke="#d33"/><rect width="22" height="12" fill="#d33" opacity="0.4"/>',
      'signal late: past the deadline',
    ),
    item('<rect width="22" height="12" fill="#f90" opacity="0.3"/>', 'SIGSTOP'),
    item('<rect width="22" height="12" fill="#a4f" opacity="0.3"/>', 'event loop blocked'),
    item('<rect width="22" height="12" fill="#36c" opacity="0.3"/>', 'path cut'),
    item('<rect width="22" height="12" fill="#6cf" opacity="0.3"/>', 'path delayed'),
    item('<rect width="22" height="12" fill="#888" opacity="0.25"/>', 'server restart'),
    item('<path d="M 6 1 L 16 11 M 6 11 L 16 1" stroke="#000" stroke-width="2.5"/>', 'SIGKILL'),
    item('<path d="M 7 1 L 15 1 L 11 8 Z" fill="#d00"/>', 'write refused by the fence'),
    item('<line x1="11" y1="3" x2="11" y2="11" stroke="#555"/>', 'write accepted'),
  ].join('')
}

export function renderHtml(records: ChaosRecords, report: CheckReport): string {
  const c = records.config
  const rows: [string, string][] = [
    ['verdict', report.ok ? '<b class="ok">PASS</b>' : '<b class="bad">FAIL</b>'],
    ['backend', esc(c.backend)],
    ['seed', String(c.seed)],
    [
      'run',
      `${c.seconds} s, ${c.procs} candidates, tickets ${c.tickets}, lease ${c.leaseMs} ms, work ${c.workMs} ms`,
    ],
    ['faults enabled', esc(c.faults.join(', ') || 'none')],
    ['max holders at once (active terms)', `${report.maxActive} (tickets ${report.tickets})`],
    [
      'overlaps by signal time',
      `${report.signalOverlaps.involvingBlind.count} involving a paused/stalled process (${fmt(report.signalOverlaps.involvingBlind.totalMs)} ms), ${report.signalOverlaps.lateSignal.count} from a late timer (${fmt(report.signalOverlaps.lateSignal.totalMs)} ms)`,
    ],
    ['stale writes accepted', String(report.staleAccepted.length)],
    [
      'writes',
      `${report.writes.total}: ${report.writes.accepted} accepted, ${report.writes.rejected} refused (${report.writes.rejectedAfterBlind} after a pause/stall)`,
    ],
    ['terms', String(report.terms)],
    [
      'leaderless',
      `${fmt(report.leaderlessMs)} ms (${(report.leaderlessFraction * 100).toFixed(1)} %)`,
    ],
    [
      'grants left behind',
      `${report.leftBehind.length} (held right after the close: ${report.heldAtClose})`,
    ],
    ['candidate errors reported', String(report.candidateErrors)],
  ]
  const failover = Object.entries(report.failover)
    .map(
      ([kind, f]) =>
        `<tr><td>${esc(kind)}</td><td>${f.count}</td><td>${f.count - f.notMeasured - f.unrecovered}</td><td>${fmt(f.medianMs)}</td><td>${fmt(f.maxMs)}</td><td>${fmt(f.medianLeases, 2)}</td><td>${fmt(f.maxLeases, 2)}</td><td>${f.unrecovered}</td></tr>`,
    )
    .join('\n')
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>conclave chaos: ${esc(c.backend)} seed ${c.seed}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 24px; color: #222 }
table { border-collapse: collapse; margin: 8px 0 20px }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; font-size: 13px }
.ok { color: #080 } .bad { color: #c00 }
.item { display: inline-flex; align-items: center; gap: 4px; margin-right: 14px; font-size: 12px }
.violations li { color: #c00 }
</style></head><body>
<h1>conclave chaos run: ${esc(c.backend)}, seed ${c.seed}</h1>
${report.violations.length ? `<ul class="violations">${report.violations.map((v) => `<li>${esc(v)}</li>`).join('')}</ul>` : ''}
<table>${rows.map(([k, v]) => `<tr><th>${k}</th><td>${v}</td></tr>`).join('\n')}</table>
<h2>Timeline</h2>
<div>${legend()}</div>
${renderTimeline(records)}
<h2>Failover after each kind of fault</h2>
<table><tr><th>fault</th><th>applied</th><th>measured</th><th>median ms</th><th>max ms</th><th>median leases</th><th>max leases</th><th>unrecovered</th></tr>
${failover}</table>
<p>Failover: from the fault to the start of the next new term, for faults after which the holder lost its term (a short pause or delay may not).</p>
<p>Replay: <code>npx tsx chaos/run.ts --backend ${esc(c.backend)} --seconds ${c.seconds} --procs ${c.procs} --tickets ${c.tickets} --lease ${c.leaseMs} --faults ${esc(c.faults.join(','))} --seed ${c.seed}</code></p>
</body></html>
`
}
