// Loaded before every test file: an unhandled rejection or uncaught exception fails the run,
// because conclave promises never to produce one.
import { afterAll } from 'vitest'

const seen: unknown[] = []
const record = (error: unknown) => seen.push(error)
process.on('unhandledRejection', record)
process.on('uncaughtException', record)

afterAll(() => {
  process.off('unhandledRejection', record)
  process.off('uncaughtException', record)
  if (seen.length > 0) {
    throw new Error(
      `unhandled errors during the tests: ${seen.map((e) => (e instanceof Error ? e.stack : String(e))).join('\n')}`,
    )
  }
})
