/**
 * `npx tsx bench/core-cpu.ts [memory] [redis] [mass] [--n N] [--mass N] [--no-peers] [--dist]
 * [--root DIR] [--profile DIR] [--json]`: the election core's own CPU (issue 18). Not a suite of
 * bench/run.ts: it measures this process only, so the core's cost is not hidden behind a
 * server's or a child's.
 *
 * - memory: N sequential campaign() + resign() cycles of one Election on the memory backend.
 * - redis: the same over a private redis-server (testkit), next to redis-semaphore's Mutex
 *   acquire + release and two bare EVALSHA calls (the floor any script-per-operation client pays).
 * - mass: `--mass` (default 10,000) Elections on distinct resources of one memory backend
 *   campaign at once: time until every one is elected, CPU, then close().
 *
 * CPU is process.cpuUsage() (user + system) over the measured loop, divided per cycle; it
 * includes the client library's share (ioredis), which is what a user pays. `--profile DIR`
 * profiles the measured loops alone; `--dist` runs the build (`npm run build` first).
 */
import { writeFileSync } from 'node:fs'
import { Session } from 'node:inspector/promises'
import { Redis } from 'ioredis'
import { Mutex } from 'redis-semaphore'
import { startRedis } from '../testkit/index.js'

const args = process.argv.slice(2)
// --dist measures the built package (npm run build first), as users run it: tsx's transform
// adds work of its own to every function made (esbuild's keepNames), which src would pay here.
// --root DIR (relative to bench/) compares another build, e.g. a copy of dist made before a change.
const root = args.includes('--root')
  ? args[args.indexOf('--root') + 1]!
  : args.includes('--dist')
    ? '../dist'
    : '../src'
type Core = typeof import('../src/index.js')
const { Election } = (await import(`${root}/election.js`)) as Pick<Core, 'Election'>
const { memoryBackend } = (await import(`${root}/backends/memory.js`)) as {
  memoryBackend: typeof import('../src/backends/memory.js').memoryBackend
}
const { redisBackend } = (await import(`${root}/backends/redis/index.js`)) as {
  redisBackend: typeof import('../src/backends/redis/index.js').redisBackend
}
const flag = (name: string, fallback: number) => {
  const i = args.indexOf(name)
  return i >= 0 ? Number(args[i + 1]) : fallback
}
const modes = args.filter((a) => !a.startsWith('--') && !/^\d+$/.test(a))
const all = modes.length === 0
const N = flag('--n', 0)
const profileDir = args.includes('--profile') ? args[args.indexOf('--profile') + 1] : undefined

/**
 * With `--profile DIR`, a V8 CPU profile of each measured loop alone (no start-up, no warm-up)
 * is written to DIR/<row>.cpuprofile, for Chrome DevTools or any .cpuprofile reader.
 */
async function profiled<T>(name: string, fn: () => Promise<T>): Promise<T> {
  if (profileDir === undefined) return fn()
  const session = new Session()
  session.connect()
  await session.post('Profiler.enable')
  await session.post('Profiler.setSamplingInterval', { interval: 100 })
  await session.post('Profiler.start')
  try {
    return await fn()
  } finally {
    const { profile } = await session.post('Profiler.stop')
    writeFileSync(`${profileDir}/${name.replace(/\W+/g, '-')}.cpuprofile`, JSON.stringify(profile))
    session.disconnect()
  }
}
const MASS = flag('--mass', 10_000)

/** One measured loop: CPU µs and latency percentiles per cycle. */
interface Row {
  name: string
  cycles: number
  cpuUsPerCycle: number
  /** The system (kernel) share of cpuUsPerCycle: socket writes and reads, timers. */
  sysUsPerCycle: number
  p50Ms: number
  p99Ms: number
  /** Server commands per cycle, by name (redis only). */
  commands?: string
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? NaN
}

/** Runs `cycle` warmup + n times; reports CPU and latency of the last n. */
async function measure(
  name: string,
  n: number,
  warmup: number,
  cycle: () => Promise<void>,
  beforeMeasuring?: () => Promise<unknown>,
): Promise<Row> {
  for (let i = 0; i < warmup; i++) await cycle()
  await beforeMeasuring?.()
  const times = new Float64Array(n)
  const cpu = await profiled(name, async () => {
    const cpu0 = process.cpuUsage()
    for (let i = 0; i < n; i++) {
      const t0 = performance.now()
      await cycle()
      times[i] = performance.now() - t0
    }
    return process.cpuUsage(cpu0)
  })
  const sorted = [...times].sort((a, b) => a - b)
  return {
    name,
    cycles: n,
    cpuUsPerCycle: (cpu.user + cpu.system) / n,
    sysUsPerCycle: cpu.system / n,
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
  }
}

async function memoryRows(): Promise<Row[]> {
  const backend = memoryBackend()
  const election = new Election(backend, 'bench/core-cpu/memory', { leaseMs: 10_000 })
  election.on('error', () => {})
  const row = await measure('memory campaign+resign', N || 20_000, 2_000, async () => {
    const term = await election.campaign()
    await term.resign()
  })
  await election.close()
  await backend.close()
  return [row]
}

async function redisRows(): Promise<Row[]> {
  const server = await startRedis()
  const n = N || 3_000
  const rows: Row[] = []
  const clients: Redis[] = []
  const client = () => {
    const c = new Redis(server.url)
    c.on('error', () => {})
    clients.push(c)
    return c
  }
  try {
    const admin = client()
    const commands = async () => {
      const info = String(await admin.info('commandstats'))
      const counts: Record<string, number> = {}
      for (const m of info.matchAll(/cmdstat_(\w+):calls=(\d+)/g)) counts[m[1]!] = Number(m[2])
      return counts
    }
    const backend = redisBackend({ client: client(), startupGrace: false })
    const election = new Election(backend, 'bench/core-cpu/redis', { leaseMs: 10_000 })
    election.on('error', () => {})
    let before: Record<string, number> = {}
    const row = await measure(
      'redis conclave campaign+resign',
      n,
      300,
      async () => {
        const term = await election.campaign()
        await term.resign()
      },
      async () => (before = await commands()),
    )
    const after = await commands()
    // Server commands per cycle (INFO itself excluded): what the client sends and parses.
    const perCycle = Object.entries(after)
      .filter(([name]) => name !== 'info')
      .map(([name, calls]) => [name, (calls - (before[name] ?? 0)) / n] as const)
      .filter(([, per]) => per > 0.001)
    rows.push({ ...row, commands: perCycle.map(([k, v]) => `${k}:${v.toFixed(2)}`).join(',') })
    await election.close()
    await backend.close()

    if (args.includes('--no-peers')) return rows
    const mutexClient = client()
    rows.push(
      await measure('redis redis-semaphore Mutex acquire+release', n, 300, async () => {
        const mutex = new Mutex(mutexClient, 'bench/core-cpu/mutex', { lockTimeout: 10_000 })
        await mutex.acquire()
        await mutex.release()
      }),
    )

    const raw = client()
    const sha = String(await raw.script('LOAD', "return redis.call('PING')"))
    rows.push(
      await measure('redis 2 bare EVALSHA (floor)', n, 300, async () => {
        await raw.evalsha(sha, 1, 'k', 'a')
        await raw.evalsha(sha, 1, 'k', 'a')
      }),
    )
  } finally {
    for (const c of clients) c.disconnect()
    await server.stop()
  }
  return rows
}

/** `count` Elections on distinct resources campaign at once; time and CPU until all elected. */
async function massRow(count: number): Promise<Record<string, number | string>> {
  const backend = memoryBackend()
  const elections = Array.from({ length: count }, (_, i) => {
    const e = new Election(backend, `bench/core-cpu/mass/${i}`, { leaseMs: 30_000 })
    e.on('error', () => {})
    return e
  })
  const t0 = performance.now()
  const cpu = await profiled(`mass-${count}`, async () => {
    const cpu0 = process.cpuUsage()
    await Promise.all(elections.map((e) => e.campaign()))
    return process.cpuUsage(cpu0)
  })
  const electedMs = performance.now() - t0
  const c1 = process.cpuUsage()
  const t1 = performance.now()
  await Promise.all(elections.map((e) => e.close()))
  const closeMs = performance.now() - t1
  const closeCpu = process.cpuUsage(c1)
  await backend.close()
  return {
    name: `memory ${count} campaigns at once`,
    electedMs: Math.round(electedMs),
    cpuUsPerCampaign: Math.round((cpu.user + cpu.system) / count),
    closeMs: Math.round(closeMs),
    closeCpuUsPerElection: Math.round((closeCpu.user + closeCpu.system) / count),
  }
}

const out: unknown[] = []
if (all || modes.includes('memory')) out.push(...(await memoryRows()))
if (all || modes.includes('redis')) out.push(...(await redisRows()))
if (all || modes.includes('mass')) {
  // A first, smaller round warms the JIT, as a long-running process would be.
  await massRow(Math.min(1_000, MASS))
  out.push(await massRow(MASS))
}
if (args.includes('--json')) console.log(JSON.stringify(out))
else
  for (const row of out) {
    const r = row as Record<string, unknown>
    console.log(
      Object.entries(r)
        .map(([k, v]) => `${k}=${typeof v === 'number' ? Math.round(v * 1000) / 1000 : String(v)}`)
        .join('  '),
    )
  }
