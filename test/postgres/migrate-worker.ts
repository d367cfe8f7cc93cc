// Runs migrate() when told to go, so several processes migrate one fresh schema at once.
import { migrate } from '../../src/backends/postgres/index.js'

process.on('message', (message: { type: string }) => {
  if (message.type !== 'go') return
  migrate({ connectionString: process.env.PG_URL!, schema: process.env.PG_SCHEMA! }).then(
    (result) => process.send?.({ type: 'done', result }, () => process.exit(0)),
    (error: Error) =>
      process.send?.({ type: 'failed', message: error.message }, () => process.exit(1)),
  )
})
process.send?.({ type: 'ready' })
