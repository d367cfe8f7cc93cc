import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fenceKeyFor, fencedWrite, highestToken, StaleTokenError } from '../../src/fence/index.js'
import { startRedis, type RedisServer } from '../../testkit/index.js'

let server: RedisServer
let client: Redis

beforeAll(async () => {
  server = await startRedis()
  client = new Redis(server.url, { maxRetriesPerRequest: 1 })
})
afterAll(async () => {
  client?.disconnect()
  await server?.stop()
})

/** The cluster slot of a key, as Redis computes it. */
async function slot(key: string): Promise<number> {
  return (await client.call('CLUSTER', 'KEYSLOT', key).catch(() => undefined)) as number
}

describe('fencedWrite (Redis)', () => {
  it('applies writes with a token >= the highest seen and refuses smaller ones', async () => {
    await fencedWrite(client, 'job:1', 10, 'first')
    await fencedWrite(client, 'job:1', 10, 'again') // same term, same token
    await fencedWrite(client, 'job:1', 12, 'newer')
    const stale = await fencedWrite(client, 'job:1', 11, 'stale').catch((e: unknown) => e)
    expect(stale).toBeInstanceOf(StaleTokenError)
    expect(stale).toMatchObject({ code: 'ERR_CONCLAVE_STALE_TOKEN', token: 11, highest: 12 })
    expect(await client.get('job:1')).toBe('newer')
    expect(await highestToken(client, 'job:1')).toBe(12)
  })

  it('keeps the fence key in the data key slot, with or without a hash tag', async () => {
    expect(fenceKeyFor('plain')).toBe('{plain}:conclave-fence')
    expect(fenceKeyFor('user:{42}:profile')).toBe('user:{42}:profile:conclave-fence')
    // CLUSTER KEYSLOT works on a standalone server too.
    for (const key of ['plain', 'user:{42}:profile', 'x{', 'x{y']) {
      expect(await slot(fenceKeyFor(key))).toBe(await slot(key))
    }
    expect(() => fenceKeyFor('a}b')).toThrow(/hash tag/)
    expect(() => fenceKeyFor('a{}b')).toThrow(/hash tag/)
  })

  it('reloads the script after SCRIPT FLUSH (NOSCRIPT fallback) and sets an expiry', async () => {
    await client.script('FLUSH')
    await fencedWrite(client, 'job:2', 3, 'v', { pxMs: 60_000 })
    expect(await client.get('job:2')).toBe('v')
    expect(await client.pttl('job:2')).toBeGreaterThan(0)
    expect(await client.pttl(fenceKeyFor('job:2'))).toBe(-1)
  })

  it('serialises concurrent writers: no stale write ever lands after a newer one', async () => {
    const results = await Promise.allSettled(
      Array.from({ length: 200 }, (_, i) => fencedWrite(client, 'job:3', 1 + (i % 50), String(i))),
    )
    // Replay the server's order: the final value must come from a writer with the top token.
    expect(await highestToken(client, 'job:3')).toBe(50)
    const final = Number(await client.get('job:3'))
    expect(1 + (final % 50)).toBe(50)
    // One connection keeps the order the writes were sent in: replay it.
    let highest = 0
    results.forEach((result, i) => {
      const token = 1 + (i % 50)
      if (token >= highest) {
        expect(result.status).toBe('fulfilled')
        highest = token
      } else {
        expect(result.status).toBe('rejected')
        expect((result as PromiseRejectedResult).reason).toMatchObject({ token, highest })
      }
    })
  })

  it('refuses a bad token before touching Redis', async () => {
    await expect(fencedWrite(client, 'job:4', -1, 'v')).rejects.toThrow(/Invalid token: -1/)
    expect(await client.exists('job:4')).toBe(0)
  })

  it('with replicas: N, does not count a write no replica acknowledged (a failover could lose it)', async () => {
    // A standalone server has no replica: WAIT answers 0.
    await expect(
      fencedWrite(client, 'job:5', 7, 'v', { replicas: 1, replicaTimeoutMs: 50 }),
    ).rejects.toThrow(/acknowledged by 0 of the 1 replicas required within 50 ms/)
    await expect(fencedWrite(client, 'job:5', 7, 'v', { replicas: -1 })).rejects.toThrow(/replicas/)
    // A stale write is still refused as such, acknowledged or not.
    await expect(
      fencedWrite(client, 'job:5', 6, 'old', { replicas: 1, replicaTimeoutMs: 50 }),
    ).rejects.toMatchObject({ code: 'ERR_CONCLAVE_STALE_TOKEN' })
  })
})
