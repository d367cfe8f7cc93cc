import { Election } from '../src/index.js'
import { localBackend } from '../src/backends/local/index.js'
import { MemoryBackend } from '../src/backends/memory.js'
import { startLocalPeer } from '../testkit/local.js'
import { makeTempDir } from '../testkit/process.js'
import type { Backend } from '../src/backend.js'

const now = () => performance.now()
const marks: Record<string, number> = {}
function wrap(b: Backend, tag: string): Backend {
  return new Proxy(b, {
    get(t, p, r) {
      const v = Reflect.get(t, p, r)
      if (typeof v !== 'function') return v
      if (p === 'watch') return async (res: string, cb: any) => { const u = await t.watch(res, (c) => { marks[tag + ':woken'] ??= now(); cb(c) }); return async () => { marks[tag+':unw>'] = now(); await u(); marks[tag+':unw<'] = now() } }
      if (p === 'acquire' || p === 'release') return async (...a: any[]) => { marks[`${tag}:${String(p)}>`] ??= now(); const x = await v.apply(t, a); marks[`${tag}:${String(p)}<`] = now(); return x }
      return v.bind(t)
    },
  })
}
const kind = process.argv[2] ?? 'local'
const dir = makeTempDir('hprof')
let hub: any
if (kind === 'local') hub = await startLocalPeer({ name: 'p', dir })
const mem = new MemoryBackend()
const mk = () => kind === 'local' ? localBackend({ name: 'p', dir }) : mem
const ba = wrap(mk(), 'a'), bb = wrap(mk(), 'b')
const ea = new Election(ba, 'r', { leaseMs: 10000 }), eb = new Election(bb, 'r', { leaseMs: 10000 })
ea.on('error', () => {}); eb.on('error', () => {})
const rows: number[][] = []
for (let i = 0; i < 60; i++) {
  const t = await ea.campaign()
  let heldAt = 0
  const w = eb.campaign().then((x) => ((heldAt = now()), x))
  await new Promise((r) => setTimeout(r, 20))
  for (const k of Object.keys(marks)) delete marks[k]
  const r0 = now()
  await t.resign()
  const r1 = now()
  const t2 = await w
  const m = marks
  if (i > 2) rows.push([heldAt - r0, (m['a:release>'] ?? r0) - r0, (m['a:release<'] ?? 0) - r0, (m['b:woken'] ?? 0) - r0, (m['b:acquire>'] ?? 0) - r0, (m['b:acquire<'] ?? 0) - r0, r1 - r0, (m['b:unw>'] ?? 0) - r0, (m['b:unw<'] ?? 0) - r0])
  await t2.resign()
}
for (const r of rows.slice(0,12)) console.log(r.map((x) => x.toFixed(2)).join("\t"))
const med = (i: number) => { const s = rows.map((r) => r[i]).sort((a, b) => a - b); return s[Math.floor(s.length / 2)].toFixed(3) }
console.log(kind, 'total', med(0), 'rel>', med(1), 'rel<', med(2), 'woken', med(3), 'acq>', med(4), 'acq<', med(5), 'resign done', med(6), 'unw>', med(7), 'unw<', med(8))
await ea.close(); await eb.close(); await hub?.kill(); process.exit(0)
