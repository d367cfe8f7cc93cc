import { Election } from '../src/index.js'
import { MemoryBackend } from '../src/backends/memory.js'
const mem = new MemoryBackend()
const e = new Election(mem, 'r', { leaseMs: 10000 })
const t0 = performance.now()
for (let i = 0; i < 3000; i++) { const t = await e.campaign(); await t.resign() }
console.log('per cycle us', ((performance.now() - t0) / 3000 * 1000).toFixed(1))
await e.close()
