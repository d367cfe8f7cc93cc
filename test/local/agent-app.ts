// One process of a `local` app running the process agent, driven by its parent over IPC (the
// agent itself does not use that channel: it speaks through the app's hub).
//   node --import tsx test/local/agent-app.ts <{ name, dir, leaseMs } as JSON>
// Answers { id, cmd, ... } with { id, ok, value } or { id, ok: false, error: { name, code } };
// sends { ready: true } once its agent was welcomed by the hub.
import { Counter, Registry } from 'prom-client'
import { localBackend } from '../../src/backends/local/index.js'
import { clusterHealth, clusterMetrics, ProcessAgent, shareMetrics } from '../../src/agent/index.js'

const { name, dir, leaseMs } = JSON.parse(process.argv[2]!) as {
  name: string
  dir: string
  leaseMs: number
}
const backend = localBackend({ name, dir })
const agent = new ProcessAgent({ backend, leaseMs, onError: () => {} })
const notes: unknown[] = []
const whoami = agent.runInPrimary('whoami', () => process.pid)
agent.register('pid', () => process.pid)
agent.register('note', (text: unknown) => void notes.push(text))
agent.register('hang', () => new Promise(() => {}))
const registry = new Registry()
new Counter({ name: 'app_requests_total', help: 'requests', registers: [registry] }).inc(2)
shareMetrics(registry, { agent })

type Command = { id: number; cmd: string; name?: string; args?: unknown[]; timeoutMs?: number }
const errorOf = (error: unknown) => ({
  name: (error as Error).name,
  code: (error as { code?: unknown }).code,
  message: (error as Error).message,
})
process.on('message', (m: Command) => {
  const run = async (): Promise<unknown> => {
    const options = m.timeoutMs ? { timeoutMs: m.timeoutMs } : {}
    switch (m.cmd) {
      case 'whoami':
        return whoami()
      case 'call':
        return agent.call(m.name!, m.args ?? [], options)
      case 'gather':
        return (await agent.gather(m.name!, m.args ?? [], options)).map((e) =>
          e.ok
            ? { workerId: e.workerId, pid: e.pid, ok: true, value: e.value }
            : { workerId: e.workerId, pid: e.pid, ok: false, error: errorOf(e.error) },
        )
      case 'broadcast':
        return agent.broadcast(m.name!, m.args ?? [])
      case 'notes':
        return notes
      case 'designated':
        return agent.isDesignated
      case 'hub':
        return backend.isHub
      case 'health':
        return (await clusterHealth({ agent, ...options })).workers.map((w) => [w.pid, w.status])
      case 'metrics':
        return clusterMetrics(registry, { agent, ...options })
      default:
        throw new Error(`unknown command ${m.cmd}`)
    }
  }
  run().then(
    (value) => process.send!({ id: m.id, ok: true, value: value ?? null }),
    (error: unknown) => process.send!({ id: m.id, ok: false, error: errorOf(error) }),
  )
})
process.on('disconnect', () => process.exit(0))
void agent.ready().then(() => process.send!({ ready: true }))
