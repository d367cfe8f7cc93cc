// A node:cluster HTTP app using conclave's process agent:
// - GET/PUT /cache/:key  a cache shared by all workers, kept in the designated process
// - GET /metrics         Prometheus metrics of every worker, merged, served by any worker
// - GET /health          the health of every worker (503 if any is unhealthy or silent)
// - GET /                which worker answered and which process holds the cache
//
// Run: node --import tsx examples/cluster-app/main.ts   (PORT=3000 WORKERS=4 by default)
import cluster from 'node:cluster'
import http from 'node:http'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { Counter, Registry } from 'prom-client'
import {
  clusterHealth,
  clusterMetrics,
  currentCall,
  onHealthCheck,
  runInPrimary,
  shareMetrics,
  startAgent,
} from 'conclave/agent'

const PORT = Number(process.env.PORT ?? 3000)
const WORKERS = Number(process.env.WORKERS ?? 4)

// Every process runs this file, so every process registers the same handlers; only the
// designated process (an elected worker; the primary only routes) ever serves them.
const agent = startAgent({ timeoutMs: 2_000 })

const cache = new Map<string, { value: string; expiresAt: number }>()
const cacheGet = runInPrimary('cache/get', (key: string) => {
  const hit = cache.get(key)
  if (!hit || hit.expiresAt < Date.now()) return { hit: false, servedBy: process.pid }
  return { hit: true, value: hit.value, servedBy: process.pid }
})
const cacheSet = runInPrimary('cache/set', (key: string, value: string, ttlMs: number) => {
  cache.set(key, { value, expiresAt: Date.now() + ttlMs })
  return { servedBy: process.pid, fencingToken: currentCall()?.token, size: cache.size }
})

if (cluster.isPrimary) {
  console.log(`primary ${process.pid}: forking ${WORKERS} workers, http://127.0.0.1:${PORT}/`)
  for (let i = 0; i < WORKERS; i++) cluster.fork()
  let stopping = false
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return
    console.log(`worker ${worker.id} exited (${signal ?? code}); forking a replacement`)
    cluster.fork()
  })
  agent.on('error', (error) => console.error(`agent: ${error.message}`))
  const stop = () => {
    stopping = true
    for (const worker of Object.values(cluster.workers ?? {})) worker?.disconnect()
    void agent.close()
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
} else {
  const registry = new Registry()
  const requests = new Counter({
    name: 'app_http_requests_total',
    help: 'HTTP requests served, by route and status',
    labelNames: ['route', 'status'],
    registers: [registry],
  })
  shareMetrics(registry)
  const lag = monitorEventLoopDelay()
  lag.enable()
  onHealthCheck(() => {
    const p99 = lag.percentile(99) / 1e6
    lag.reset()
    return { ok: p99 < 500, eventLoopP99Ms: Math.round(p99) }
  })
  agent.on('designated', (term) =>
    console.log(
      `worker ${cluster.worker!.id} (pid ${process.pid}) holds the cache (term ${term.token})`,
    ),
  )

  const send = (
    res: http.ServerResponse,
    status: number,
    body: unknown,
    type = 'application/json',
  ) => {
    res.writeHead(status, { 'content-type': type })
    res.end(typeof body === 'string' ? body : `${JSON.stringify(body, null, 2)}\n`)
  }

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost')
    const route = url.pathname.startsWith('/cache/') ? '/cache/:key' : url.pathname
    const done = (status: number, body: unknown, type?: string) => {
      requests.inc({ route, status })
      send(res, status, body, type)
    }
    const handle = async () => {
      if (url.pathname === '/metrics') {
        const text = await clusterMetrics(registry, { timeoutMs: 1_000 })
        return done(200, text, 'text/plain; version=0.0.4; charset=utf-8')
      }
      if (url.pathname === '/health') {
        const health = await clusterHealth({ timeoutMs: 1_000 })
        return done(health.ok ? 200 : 503, {
          ok: health.ok,
          workers: health.workers.map((w) => ({ ...w, error: w.error?.message })),
        })
      }
      if (route === '/cache/:key') {
        const key = decodeURIComponent(url.pathname.slice('/cache/'.length))
        if (req.method === 'PUT' || req.method === 'POST') {
          let body = ''
          for await (const chunk of req) body += String(chunk)
          const ttlMs = Number(url.searchParams.get('ttlMs') ?? 60_000)
          return done(200, { key, ...(await cacheSet(key, body, ttlMs)) })
        }
        return done(200, { key, ...(await cacheGet(key)) })
      }
      if (url.pathname === '/') {
        return done(200, {
          answeredBy: { worker: cluster.worker!.id, pid: process.pid },
          designatedHere: agent.isDesignated,
        })
      }
      return done(404, { error: 'not found' })
    }
    handle().catch((error: Error & { code?: string; retryable?: boolean }) =>
      // A retryable error (the cache owner just died, or timed out): tell the client to retry.
      done(error.retryable ? 503 : 500, { error: error.message, code: error.code }),
    )
  })
  server.listen(PORT)
  process.on('disconnect', () => {
    server.close()
    void agent.close()
  })
}
