// Shared bits of the redis backend tests: clients that fail fast, waiting, command counts.
import { Redis, type RedisOptions } from 'ioredis'

/** A client as a careful user would configure it: commands fail instead of queueing forever. */
export function fastFailingClient(url: string, options: RedisOptions = {}): Redis {
  const client = new Redis(url, {
    commandTimeout: 1_000,
    maxRetriesPerRequest: 1,
    retryStrategy: () => 100,
    ...options,
  })
  client.on('error', () => {}) // reconnects are expected in these tests
  return client
}

/** A fast-failing client that finds the master through the sentinels of `topo`. */
export function fastFailingSentinelClient(topo: {
  sentinelAddresses: { host: string; port: number }[]
  name: string
}): Redis {
  const client = new Redis({
    sentinels: topo.sentinelAddresses,
    name: topo.name,
    commandTimeout: 1_000,
    maxRetriesPerRequest: 1,
    retryStrategy: () => 100,
    sentinelRetryStrategy: () => 100,
  })
  client.on('error', () => {}) // a failover makes errors
  return client
}

export { sleep, until } from '../helpers/wait.js'

/** calls per command name, from INFO commandstats (e.g. { evalsha: 12, publish: 3 }). */
export async function commandCalls(client: Redis): Promise<Record<string, number>> {
  const info = await client.info('commandstats')
  const calls: Record<string, number> = {}
  for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    calls[match[1]!] = Number(match[2])
  }
  return calls
}
