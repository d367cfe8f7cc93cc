// A node:cluster app whose workers use localBackend (as under PM2 cluster mode, where the
// primary is not ours), all started at once so they race for the hub: each worker reports whether it is the hub and the token it won.
//   node --import tsx test/local/cluster-app.ts <dir> <workers>
import cluster from 'node:cluster'
import { localBackend } from '../../src/backends/local/index.js'

const [dir, workers] = process.argv.slice(2)
if (cluster.isPrimary) {
  const results: unknown[] = []
  let online = 0
  for (let i = 0; i < Number(workers); i++) {
    cluster.fork().on('message', (m) => {
      // Every worker is up: start them at once, so they race for the hub.
      if (m === 'up') {
        if (++online === Number(workers)) {
          for (const w of Object.values(cluster.workers ?? {})) w?.send('go')
        }
        return
      }
      results.push(m)
      if (results.length === Number(workers)) {
        console.log(JSON.stringify(results))
        for (const w of Object.values(cluster.workers ?? {})) w?.kill()
      }
    })
  }
} else {
  process.send!('up')
  await new Promise((resolve) => process.once('message', resolve))
  const backend = localBackend({ name: 'cluster-app', dir: dir! })
  const result = await backend.acquire({
    resource: 'r',
    candidate: `w${cluster.worker!.id}`,
    tickets: 1,
    leaseMs: 10_000,
    metadata: null,
  })
  process.send!({ hub: backend.isHub, acquired: result.acquired })
  setInterval(() => {}, 1_000)
}
