// conclave/redis against redis-semaphore (Mutex, Semaphore) and redlock, one after another on one
// private redis-server.
import { Redis } from 'ioredis'
import { startRedis } from '../../testkit/index.js'
import { electionScenarios, type Subject } from '../scenarios.js'
import { defineSuite } from '../suite.js'
import { REDIS_SUBJECTS, redisSubject, type RedisTarget } from '../subjects/redis.js'

/** The redis suite: conclave/redis and its three peers × the election scenarios. */
export default defineSuite<Subject>({
  name: 'redis',
  scenarios: electionScenarios,
  async setup() {
    // Keyspace events as docs/redis.md asks of a server conclave uses (the same for every subject).
    const server = await startRedis({ args: ['--notify-keyspace-events', 'Kghx'] })
    const admin = new Redis(server.url, { commandTimeout: 5_000, maxRetriesPerRequest: 1 })
    admin.on('error', () => {})
    const target: RedisTarget = { host: server.host, port: server.port, pid: server.pid, admin }
    return {
      subjects: REDIS_SUBJECTS.map((name) => ({ name, open: () => redisSubject(name, target) })),
      async teardown() {
        admin.disconnect()
        await server.stop()
      },
    }
  },
})
