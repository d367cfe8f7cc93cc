// The memory backend in one process: the floor every other backend is compared with.
import { MemoryBackend } from '../../src/backends/memory.js'
import { Election } from '../../src/election.js'
import { type BenchRow, type BenchSuite, summarize } from '../stats.js'

const suite: BenchSuite = {
  name: 'memory',
  async run({ quick, log }) {
    const rounds = quick ? 50 : 500
    const store = new MemoryBackend()
    const rows: BenchRow[] = []

    const acquire: number[] = []
    const e = new Election(store, 'bench/uncontended', { leaseMs: 10_000 })
    for (let i = 0; i < rounds; i++) {
      const t0 = performance.now()
      const term = await e.campaign()
      acquire.push(performance.now() - t0)
      await term.resign()
    }
    await e.close()
    rows.push(summarize('uncontended acquire', 'conclave/memory', acquire))

    const handoff: number[] = []
    for (let i = 0; i < rounds; i++) {
      const a = new Election(store, `bench/handoff-${i}`, { leaseMs: 60_000 })
      const b = new Election(store, `bench/handoff-${i}`, { leaseMs: 60_000 })
      const term = await a.campaign()
      const waiting = b.campaign()
      await new Promise((r) => setImmediate(r))
      const t0 = performance.now()
      void term.resign()
      await waiting
      handoff.push(performance.now() - t0)
      await Promise.all([a.close(), b.close()])
    }
    rows.push(summarize('graceful handoff', 'conclave/memory', handoff))

    // A crash: the holder stops renewing without releasing (its election is abandoned).
    const leaseMs = 500
    const crash: number[] = []
    for (let i = 0; i < (quick ? 2 : 5); i++) {
      const res = `bench/crash-${i}`
      const token = await store.acquire({
        resource: res,
        candidate: 'crashed',
        tickets: 1,
        leaseMs,
        metadata: null,
      })
      if (!token.acquired) throw new Error('expected a grant')
      const t0 = performance.now()
      const b = new Election(store, res, { leaseMs: 60_000 })
      await b.campaign()
      crash.push((performance.now() - t0) / leaseMs)
      await b.close()
    }
    rows.push({
      ...summarize('crash failover (x lease)', 'conclave/memory', crash, 'x lease'),
      note: `lease ${leaseMs} ms`,
    })
    log(`memory: ${rounds} rounds`)
    return rows
  },
}
export default suite
