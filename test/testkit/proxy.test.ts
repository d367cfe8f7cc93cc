// The fault proxy in front of a real redis-server: forwarding, reset and blackhole cuts, restore,
// delay, close. Raw sockets speak the inline PING so every byte is under the test's control.
import { connect, type Socket } from 'node:net'
import { Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { freePort } from '../../testkit/ports.js'
import { startRedis, type RedisServer } from '../../testkit/redis.js'
import { startProxy, type FaultProxy } from '../../testkit/proxy.js'

/** A raw client: collects what it receives and how it ended. */
class Raw {
  received = ''
  ended: 'open' | 'closed' | 'reset' = 'open'
  private readonly waiters = new Set<() => void>()

  constructor(readonly socket: Socket) {
    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => {
      this.received += chunk
      this.wake()
    })
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE') this.ended = 'reset'
      this.wake()
    })
    socket.on('close', () => {
      if (this.ended === 'open') this.ended = 'closed'
      this.wake()
    })
  }

  static open(port: number): Promise<Raw> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port })
      const raw = new Raw(socket)
      socket.once('connect', () => resolve(raw))
      socket.once('error', reject)
    })
  }

  private wake(): void {
    for (const waiter of this.waiters) waiter()
  }

  /** Resolves true once `condition` holds, false after ms. */
  until(condition: () => boolean, ms: number): Promise<boolean> {
    if (condition()) return Promise.resolve(true)
    return new Promise((resolve) => {
      const check = (): void => {
        if (!condition()) return
        finish(true)
      }
      const finish = (result: boolean): void => {
        clearTimeout(timer)
        this.waiters.delete(check)
        resolve(result)
      }
      const timer = setTimeout(() => finish(false), ms)
      this.waiters.add(check)
    })
  }

  /** Sends n inline PINGs; resolves true when all n PONGs are in, false after ms. */
  async ping(ms: number, n = 1): Promise<boolean> {
    const before = this.count('+PONG')
    this.socket.write('PING\r\n'.repeat(n))
    return this.until(() => this.count('+PONG') >= before + n, ms)
  }

  count(text: string): number {
    return this.received.split(text).length - 1
  }

  gone(ms: number): Promise<boolean> {
    return this.until(() => this.ended !== 'open', ms)
  }
}

describe('fault proxy', () => {
  let redis: RedisServer
  let proxy: FaultProxy
  const raws: Raw[] = []

  async function raw(): Promise<Raw> {
    const r = await Raw.open(proxy.port)
    raws.push(r)
    return r
  }

  beforeAll(async () => {
    redis = await startRedis()
  })
  afterAll(async () => {
    await redis?.stop()
  })
  afterEach(async () => {
    for (const r of raws.splice(0)) r.socket.destroy()
    await proxy?.close()
  })

  it('forwards a real connection and counts it', async () => {
    proxy = await startProxy({ targetHost: redis.host, targetPort: redis.port })
    expect(proxy.port).toBeGreaterThan(0)
    expect(proxy.state).toBe('open')
    const client = new Redis(proxy.port, '127.0.0.1', { maxRetriesPerRequest: 1 })
    client.on('error', () => undefined)
    try {
      expect(await client.ping()).toBe('PONG')
      await client.set('through-proxy', 'yes')
      expect(await client.get('through-proxy')).toBe('yes')
      expect(proxy.connections).toBe(1)
      expect(proxy.totalConnections).toBe(1)
    } finally {
      client.disconnect()
    }
    // A client that hangs up is forgotten.
    const r = await raw()
    expect(await r.ping(10_000)).toBe(true)
    r.socket.end()
    await r.gone(10_000)
    await until(() => proxy.connections === 0, 10_000)
    expect(proxy.connections).toBe(0)
  })

  it("cut({ mode: 'reset' }) resets live connections and refuses new ones until restore", async () => {
    proxy = await startProxy({ targetHost: redis.host, targetPort: redis.port })
    const live = await raw()
    expect(await live.ping(10_000)).toBe(true)

    proxy.cut({ mode: 'reset' })
    expect(proxy.state).toBe('reset')
    expect(await live.gone(10_000)).toBe(true)
    expect(proxy.connections).toBe(0)

    // A new connection is accepted by the kernel and reset at once: no reply ever comes.
    const late = await Raw.open(proxy.port).catch(() => undefined)
    if (late) {
      raws.push(late)
      late.socket.write('PING\r\n')
      expect(await late.gone(10_000)).toBe(true)
      expect(late.count('+PONG')).toBe(0)
    }

    proxy.restore()
    expect(proxy.state).toBe('open')
    // The reset connection stays dropped; a new one works.
    expect(live.ended).not.toBe('open')
    const fresh = await raw()
    expect(await fresh.ping(10_000)).toBe(true)
  })

  it('a reconnecting client (ioredis) comes back after cut and restore', async () => {
    proxy = await startProxy({ targetHost: redis.host, targetPort: redis.port })
    const client = new Redis(proxy.port, '127.0.0.1', {
      maxRetriesPerRequest: null,
      retryStrategy: () => 50,
    })
    client.on('error', () => undefined)
    try {
      expect(await client.ping()).toBe('PONG')
      proxy.cut()
      await until(() => client.status !== 'ready', 10_000)
      expect(client.status).not.toBe('ready')
      const pending = client.ping()
      proxy.restore()
      expect(await pending).toBe('PONG')
      expect(proxy.totalConnections).toBeGreaterThan(1)
    } finally {
      client.disconnect()
    }
  })

  it("cut({ mode: 'blackhole' }) hangs the path both ways; restore delivers the held bytes", async () => {
    proxy = await startProxy({ targetHost: redis.host, targetPort: redis.port })
    const live = await raw()
    expect(await live.ping(10_000)).toBe(true)

    proxy.cut({ mode: 'blackhole' })
    expect(proxy.state).toBe('blackhole')
    // The live connection stays open but gets no answer.
    expect(await live.ping(700)).toBe(false)
    expect(live.ended).toBe('open')
    // A new connection is accepted (connect succeeds) but nothing comes back.
    const late = await raw()
    expect(await late.ping(300)).toBe(false)
    expect(late.ended).toBe('open')
    expect(proxy.connections).toBe(2)

    proxy.restore()
    // Held bytes flow: both pending PINGs are answered on the same connections.
    expect(await live.until(() => live.count('+PONG') >= 2, 10_000)).toBe(true)
    expect(await late.until(() => late.count('+PONG') >= 1, 10_000)).toBe(true)
    expect(await live.ping(10_000)).toBe(true)
    expect(live.ended).toBe('open')
  })

  it('a black-holed connection can be dropped with a reset cut before restore', async () => {
    proxy = await startProxy({ targetHost: redis.host, targetPort: redis.port })
    const live = await raw()
    expect(await live.ping(10_000)).toBe(true)
    proxy.cut({ mode: 'blackhole' })
    const held = await raw()
    proxy.cut({ mode: 'reset' })
    expect(await live.gone(10_000)).toBe(true)
    expect(await held.gone(10_000)).toBe(true)
    proxy.restore()
    const fresh = await raw()
    expect(await fresh.ping(10_000)).toBe(true)
  })

  it('delay(ms) adds latency to every chunk in both directions', async () => {
    proxy = await startProxy({ targetHost: redis.host, targetPort: redis.port })
    const r = await raw()
    expect(await r.ping(10_000)).toBe(true)

    proxy.delay(250)
    expect(proxy.latencyMs).toBe(250)
    const started = performance.now()
    expect(await r.ping(10_000)).toBe(true)
    // One chunk each way, each held 250 ms: a lower bound only, never an upper one.
    expect(performance.now() - started).toBeGreaterThanOrEqual(480)
    // Order is kept across many chunks.
    for (let i = 0; i < 5; i++) r.socket.write(`ECHO m${i}\r\n`)
    expect(await r.until(() => r.received.includes('m4'), 10_000)).toBe(true)
    const order = [...r.received.matchAll(/m(\d)/g)].map((m) => m[1])
    expect(order).toEqual(['0', '1', '2', '3', '4'])

    proxy.delay(0)
    expect(await r.ping(10_000)).toBe(true)
    expect(() => proxy.delay(-1)).toThrow(RangeError)
  })

  it('an unreachable target resets the client', async () => {
    const nothing = await freePort()
    proxy = await startProxy({ targetHost: '127.0.0.1', targetPort: nothing })
    const r = await raw()
    r.socket.write('PING\r\n')
    expect(await r.gone(10_000)).toBe(true)
    expect(r.count('+PONG')).toBe(0)
  })

  it('close() drops every connection and stops listening', async () => {
    proxy = await startProxy({ targetHost: redis.host, targetPort: redis.port })
    const r = await raw()
    expect(await r.ping(10_000)).toBe(true)
    await proxy.close()
    await proxy.close()
    expect(await r.gone(10_000)).toBe(true)
    await expect(Raw.open(proxy.port)).rejects.toThrow(/ECONNREFUSED/)
  })
})

async function until(condition: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms
  while (!condition() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
}
