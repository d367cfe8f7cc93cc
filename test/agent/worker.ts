// A real node:cluster worker for the agent tests. It starts the default agent, registers the
// handlers the tests use, and obeys commands from the test process (the primary) sent as
// `{ 'agent-test': { id, op, ... } }`, answering `{ 'agent-test-reply': { id, ok, value | error } }`.
import cluster from 'node:cluster'
import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import {
  call,
  clusterHealth,
  clusterMetrics,
  currentCall,
  gather,
  getAgent,
  handle,
  onHealthCheck,
  RunInPrimary,
  runInPrimary,
  shareMetrics,
  broadcast,
  startAgent,
  stopAgent,
} from '../../src/agent/index.js'

const agent = startAgent({ leaseMs: Number(process.env.TEST_LEASE_MS ?? 10_000) })
const workerId = cluster.worker!.id

// --- handlers -------------------------------------------------------------------------------
const whoami = runInPrimary('whoami', () => ({
  workerId,
  pid: process.pid,
  designated: agent.isDesignated,
  token: currentCall()?.token,
  from: currentCall()?.from,
}))
void whoami
handle('echo', (value: unknown) => value)
handle('self', () => ({ workerId, pid: process.pid }))
let lastAbort: string | null = null
handle('sleep', async (ms: number) => {
  const signal = currentCall()!.signal
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms)
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(timer)
        lastAbort = (signal.reason as Error)?.message ?? String(signal.reason)
        resolve()
      },
      { once: true },
    )
  })
  return { workerId, aborted: signal.aborted }
})
handle('last-abort', () => lastAbort)
handle('fail', () => {
  const error = new RangeError('the handler failed on purpose') as RangeError & { code: string }
  error.code = 'E_TEST_FAIL'
  throw error
})
handle('bad-result', (kind: string) => {
  if (kind === 'map') return { nested: new Map([[1, 2]]) }
  if (kind === 'function') return { fn: () => 1 }
  if (kind === 'bigint') return [1n]
  return { ok: true }
})
let bumps = 0
handle('bump', (by: number) => {
  bumps += by
})
handle('bumps', () => bumps)
const cache = new Map<string, unknown>()
handle('cache-set', (key: string, value: unknown) => void cache.set(key, value))
handle('cache-get', (key: string) => cache.get(key) ?? null)

// Standard (TS 5) decorator: the first instance serves, with its own state.
class Tally {
  count = 0
  @RunInPrimary({ name: 'tally.add' })
  add(by: number): Promise<{ count: number; workerId: number }> {
    this.count += by
    return Promise.resolve({ count: this.count, workerId })
  }
}
const tally = new Tally()

// Legacy (experimentalDecorators) decorator, applied the way TypeScript's __decorate does.
let legacyHits = 0
class LegacyService {
  hit(by: number): unknown {
    legacyHits += by
    return { hits: legacyHits, workerId }
  }
}
const descriptor = Object.getOwnPropertyDescriptor(LegacyService.prototype, 'hit')!
Object.defineProperty(
  LegacyService.prototype,
  'hit',
  RunInPrimary({ name: 'legacy.hit' })(LegacyService.prototype, 'hit', descriptor),
)
const legacy = new LegacyService()

// --- metrics and health ---------------------------------------------------------------------
const registry = new Registry()
const requests = new Counter({
  name: 'test_requests_total',
  help: 'Requests "served"\nby route',
  labelNames: ['route', 'code'],
  registers: [registry],
})
requests.inc({ route: '/a', code: 200 }, workerId * 10)
requests.inc({ route: '/b\\x', code: 500 }, workerId)
new Gauge({
  name: 'test_started_max',
  help: 'largest worker id',
  aggregator: 'max',
  registers: [registry],
}).set(workerId)
new Gauge({
  name: 'test_min',
  help: 'smallest worker id',
  aggregator: 'min',
  registers: [registry],
}).set(workerId)
new Gauge({
  name: 'test_avg',
  help: 'average worker id',
  aggregator: 'average',
  registers: [registry],
}).set(workerId)
new Gauge({ name: 'test_first', help: 'first', aggregator: 'first', registers: [registry] }).set(7)
new Gauge({ name: 'test_omitted', help: 'omit', aggregator: 'omit', registers: [registry] }).set(1)
const latency = new Histogram({
  name: 'test_latency_seconds',
  help: 'latency',
  buckets: [0.1, 1],
  registers: [registry],
})
for (let i = 0; i < workerId; i++) latency.observe(0.05 * (i + 1))
shareMetrics(registry)
handle('own-metrics', () => registry.getMetricsAsJSON())
if (process.env.TEST_UNHEALTHY) onHealthCheck(() => ({ ok: false, reason: 'told to be unhealthy' }))

// --- commands from the test -----------------------------------------------------------------
type Command = { id: number; op: string; [key: string]: unknown }

function errorShape(error: unknown) {
  const e = error as Error & { code?: unknown; retryable?: unknown; path?: unknown }
  return {
    name: e.name,
    message: e.message,
    code: e.code,
    retryable: e.retryable,
    path: e.path,
    stack: e.stack,
    className: e.constructor?.name,
  }
}

async function run(command: Command): Promise<unknown> {
  const timeoutMs = command.timeoutMs as number | undefined
  const opts = timeoutMs ? { timeoutMs } : {}
  switch (command.op) {
    case 'call':
      return call(command.name as string, command.args as unknown[], opts)
    case 'call-abort': {
      const controller = new AbortController()
      setTimeout(
        () => controller.abort(new Error('caller gave up')),
        command.abortAfterMs as number,
      )
      return call(command.name as string, command.args as unknown[], {
        ...opts,
        signal: controller.signal,
      })
    }
    case 'gather':
      return (await gather(command.name as string, command.args as unknown[], opts)).map((e) =>
        e.ok ? e : { ...e, error: errorShape(e.error) },
      )
    case 'broadcast':
      return broadcast(command.name as string, command.args as unknown[])
    case 'tally':
      return tally.add(command.by as number)
    case 'legacy':
      return legacy.hit(command.by as number)
    case 'metrics':
      return clusterMetrics(registry, opts)
    case 'health':
      return clusterHealth(opts)
    case 'designated':
      return agent.isDesignated
    case 'stop-agent':
      return stopAgent()
    case 'raw': {
      // Raw messages straight to the primary; collect whatever answers come back in 500 ms.
      const replies: unknown[] = []
      const collect = (m: unknown) => {
        if ((m as Record<string, unknown>)['conclave-agent'] === 1) replies.push(m)
      }
      process.on('message', collect)
      for (const m of command.messages as unknown[]) process.send!(m)
      await new Promise((r) => setTimeout(r, 500))
      process.off('message', collect)
      return replies
    }
    default:
      throw new Error(`unknown test op ${command.op}`)
  }
}

process.on('message', (message: unknown) => {
  const command = (message as { 'agent-test'?: Command })['agent-test']
  if (!command) return
  run(command).then(
    (value) => process.send!({ 'agent-test-reply': { id: command.id, ok: true, value } }),
    (error: unknown) =>
      process.send!({
        'agent-test-reply': { id: command.id, ok: false, error: errorShape(error) },
      }),
  )
})

// TEST_EARLY_READY: report ready before the primary's agent answered (it may not exist yet).
if (!process.env.TEST_EARLY_READY) await getAgent().ready()
process.send!({ 'agent-test-ready': true })
