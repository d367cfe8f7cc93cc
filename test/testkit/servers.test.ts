// Real redis-server, etcd and postgres processes: they start, answer, restart on the same port
// (etcd and postgres keep their data, redis loses it), and pause/resume hold and release requests.
// Assertions are about behaviour, never about how fast a loaded machine is.
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { Etcd3 } from 'etcd3'
import { Redis } from 'ioredis'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startEtcd, type EtcdServer } from '../../testkit/etcd.js'
import { freePort } from '../../testkit/ports.js'
import { startPostgres, type PostgresServer } from '../../testkit/postgres.js'
import { findBinary, processAlive, ServerStartError } from '../../testkit/process.js'
import { redisPing, startRedis, type RedisServer } from '../../testkit/redis.js'

/** Resolves 'pending' if `promise` has not settled after ms (the promise keeps running). */
async function settledWithin<T>(promise: Promise<T>, ms: number): Promise<'settled' | 'pending'> {
  let timer: NodeJS.Timeout | undefined
  const pending = new Promise<'pending'>((res) => {
    timer = setTimeout(() => res('pending'), ms)
  })
  const settled = promise.then(
    () => 'settled' as const,
    () => 'settled' as const,
  )
  try {
    return await Promise.race([settled, pending])
  } finally {
    clearTimeout(timer)
  }
}

const isAlive = processAlive

function newRedis(server: RedisServer): Redis {
  const client = new Redis(server.port, server.host, {
    maxRetriesPerRequest: null,
    retryStrategy: () => 50,
  })
  client.on('error', () => undefined)
  return client
}

describe('ports', () => {
  it('freePort gives a bindable loopback port', async () => {
    const port = await freePort()
    expect(port).toBeGreaterThan(0)
    const server = createServer()
    await new Promise<void>((res, rej) => {
      server.once('error', rej)
      server.listen(port, '127.0.0.1', res)
    })
    await new Promise((res) => server.close(res))
  })
})

describe('redis-server', () => {
  let redis: RedisServer

  beforeAll(async () => {
    redis = await startRedis()
  })
  afterAll(async () => {
    await redis?.stop()
  })

  it('answers PING on 127.0.0.1', async () => {
    expect(redis.host).toBe('127.0.0.1')
    expect(redis.url).toBe(`redis://127.0.0.1:${redis.port}`)
    const client = new Redis(redis.url)
    try {
      expect(await client.ping()).toBe('PONG')
      // No persistence configured.
      expect(await client.config('GET', 'save')).toEqual(['save', ''])
      expect(await client.config('GET', 'appendonly')).toEqual(['appendonly', 'no'])
    } finally {
      client.disconnect()
    }
  })

  it('pause holds a request, resume lets it through', async () => {
    const client = newRedis(redis)
    try {
      expect(await client.ping()).toBe('PONG')
      await redis.pause()
      const reply = client.set('paused-key', 'v')
      expect(await settledWithin(reply, 700)).toBe('pending')
      await redis.resume()
      expect(await reply).toBe('OK')
      expect(await client.get('paused-key')).toBe('v')
    } finally {
      client.disconnect()
    }
  })

  it('restart keeps the port, changes the pid and loses the data', async () => {
    const client = newRedis(redis)
    try {
      await client.set('survives', 'no')
      const { port, pid } = redis
      await redis.restart()
      expect(redis.port).toBe(port)
      expect(redis.pid).not.toBe(pid)
      expect(isAlive(pid)).toBe(false)
      // The old client reconnects by itself.
      expect(await client.get('survives')).toBeNull()
    } finally {
      client.disconnect()
    }
  })

  it('kill ends the process at once; restart brings it back', async () => {
    const pid = redis.pid
    await redis.kill()
    expect(redis.running).toBe(false)
    expect(isAlive(pid)).toBe(false)
    expect(await redisPing(redis.host, redis.port, 1_000)).toBe(false)
    await redis.restart()
    expect(redis.running).toBe(true)
    expect(await redisPing(redis.host, redis.port, 5_000)).toBe(true)
  })

  it('stop is idempotent and removes the temp folder', async () => {
    const other = await startRedis()
    const { dir, pid } = other
    expect(existsSync(dir)).toBe(true)
    await other.stop()
    await other.stop()
    expect(isAlive(pid)).toBe(false)
    expect(existsSync(dir)).toBe(false)
  })

  it('a startup failure names the server and shows the end of its log', async () => {
    const err = await startRedis({ args: ['--no-such-directive', 'x'] }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ServerStartError)
    expect((err as Error).message).toMatch(/redis-server on port \d+ exited during startup/)
    expect((err as Error).message).toMatch(/no-such-directive/)
  })

  it('a taken fixed port fails clearly instead of hanging', async () => {
    const port = await freePort()
    const blocker: Server = createServer((socket) => socket.destroy())
    await new Promise<void>((res) => blocker.listen(port, '127.0.0.1', res))
    try {
      const err = await startRedis({ port }).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(ServerStartError)
      expect((err as Error).message).toMatch(/already in use/i)
    } finally {
      blocker.close()
    }
  })

  it('a missing binary tells how to install it', () => {
    expect(() => findBinary('conclave-no-such-server', 'conclave-pkg')).toThrow(
      'conclave-no-such-server not found: run scripts/ensure-servers.sh (installs Debian package conclave-pkg)',
    )
  })

  it.each(['process.exit', 'SIGTERM'] as const)(
    'a server still running when its process ends (%s) does not survive it',
    async (how) => {
      const scratch = mkdtempSync(join(tmpdir(), 'conclave-orphan-'))
      try {
        const script = join(scratch, 'orphan.ts')
        const module = resolve(import.meta.dirname, '../../testkit/redis.ts')
        writeFileSync(
          script,
          [
            `import { startRedis } from ${JSON.stringify(module)}`,
            `const server = await startRedis()`,
            `console.log(JSON.stringify({ pid: server.pid, dir: server.dir }))`,
            how === 'process.exit' ? `process.exit(0)` : `setInterval(() => {}, 1000)`,
          ].join('\n'),
        )
        const viteNode = resolve(import.meta.dirname, '../../node_modules/vite-node/vite-node.mjs')
        const child = spawn(process.execPath, [viteNode, script], {
          stdio: ['ignore', 'pipe', 'inherit'],
        })
        const exited = new Promise<[number | null, NodeJS.Signals | null]>((res) =>
          child.on('exit', (code, signal) => res([code, signal])),
        )
        let out = ''
        const line = await new Promise<string | undefined>((res) => {
          child.stdout.on('data', (chunk: Buffer) => {
            out += chunk.toString()
            const found = out.split('\n').find((l) => l.startsWith('{') && l.endsWith('}'))
            if (found) res(found)
          })
          void exited.then(() => res(undefined))
        })
        expect(line, `child output: ${out}`).toBeDefined()
        const { pid, dir } = JSON.parse(line!) as { pid: number; dir: string }
        if (how === 'SIGTERM') child.kill('SIGTERM')
        const [code, signal] = await exited
        if (how === 'SIGTERM') expect(signal).toBe('SIGTERM')
        else expect(code).toBe(0)
        // SIGKILL is delivered at once, but let the kernel finish with it.
        for (let i = 0; i < 100 && isAlive(pid); i++) await new Promise((r) => setTimeout(r, 50))
        expect(isAlive(pid)).toBe(false)
        expect(existsSync(dir)).toBe(false)
      } finally {
        rmSync(scratch, { recursive: true, force: true })
      }
    },
  )
})

describe('etcd', () => {
  let etcd: EtcdServer
  let client: Etcd3

  beforeAll(async () => {
    etcd = await startEtcd()
    client = new Etcd3({ hosts: etcd.endpoint })
  })
  afterAll(async () => {
    client?.close()
    await etcd?.stop()
  })

  it('answers put/get', async () => {
    expect(etcd.endpoint).toBe(`http://127.0.0.1:${etcd.port}`)
    expect(etcd.peerPort).not.toBe(etcd.port)
    await client.put('conclave/hello').value('world')
    expect(await client.get('conclave/hello').string()).toBe('world')
  })

  it('pause holds a request, resume lets it through', async () => {
    await etcd.pause()
    const reply = client.put('conclave/paused').value('v').exec()
    expect(await settledWithin(reply, 700)).toBe('pending')
    await etcd.resume()
    await reply
    expect(await client.get('conclave/paused').string()).toBe('v')
  })

  it('restart (a crash) keeps the ports and the data', async () => {
    await client.put('conclave/durable').value('kept')
    const { port, peerPort, pid } = etcd
    await etcd.restart()
    expect(etcd.port).toBe(port)
    expect(etcd.peerPort).toBe(peerPort)
    expect(etcd.pid).not.toBe(pid)
    const fresh = new Etcd3({ hosts: etcd.endpoint })
    try {
      expect(await fresh.get('conclave/durable').string()).toBe('kept')
    } finally {
      fresh.close()
    }
  })

  it('graceful restart keeps the data too', async () => {
    await etcd.restart({ graceful: true })
    const fresh = new Etcd3({ hosts: etcd.endpoint })
    try {
      expect(await fresh.get('conclave/durable').string()).toBe('kept')
    } finally {
      fresh.close()
    }
  })
})

describe('postgres', () => {
  let server: PostgresServer

  beforeAll(async () => {
    server = await startPostgres()
  })
  afterAll(async () => {
    await server?.stop()
  })

  function newClient(connectionString = server.connectionString): pg.Client {
    const client = new pg.Client({ connectionString })
    client.on('error', () => undefined)
    return client
  }

  it('answers SELECT 1 as user postgres, never as root', async () => {
    expect(server.connectionString).toBe(`postgres://postgres@127.0.0.1:${server.port}/postgres`)
    const client = newClient()
    await client.connect()
    try {
      const { rows } = await client.query('SELECT 1 AS one, current_user AS who')
      expect(rows[0]).toEqual({ one: 1, who: 'postgres' })
      const settings = await client.query<{ name: string; setting: string }>(
        "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'listen_addresses')",
      )
      expect(Object.fromEntries(settings.rows.map((r) => [r.name, r.setting]))).toEqual({
        fsync: 'off',
        listen_addresses: '127.0.0.1',
      })
    } finally {
      await client.end()
    }
    if (process.getuid?.() === 0) expect(server.osUser).not.toBe('root')
  })

  it('createDatabase makes a database to connect to', async () => {
    const url = await server.createDatabase('conclave_extra')
    const client = newClient(url)
    await client.connect()
    try {
      const { rows } = await client.query<{ db: string }>('SELECT current_database() AS db')
      expect(rows[0]?.db).toBe('conclave_extra')
    } finally {
      await client.end()
    }
  })

  it('pause holds a query (and new connections), resume lets them through', async () => {
    const client = newClient()
    await client.connect()
    try {
      await server.pause()
      const query = client.query<{ two: number }>('SELECT 2 AS two')
      const fresh = newClient()
      const connecting = fresh.connect()
      expect(await settledWithin(query, 700)).toBe('pending')
      expect(await settledWithin(connecting, 10)).toBe('pending')
      await server.resume()
      expect((await query).rows[0]?.two).toBe(2)
      await connecting
      await fresh.end()
    } finally {
      await client.end()
    }
  })

  it('restart (a crash of the postmaster and its children) keeps the port and the data', async () => {
    const setup = newClient()
    await setup.connect()
    await setup.query('CREATE TABLE kept (v text)')
    await setup.query("INSERT INTO kept VALUES ('row')")
    await setup.query('CREATE SEQUENCE tokens')
    const before = Number(
      (await setup.query<{ n: string }>("SELECT nextval('tokens') AS n")).rows[0]?.n,
    )
    const { port, pid } = server
    await server.restart()
    await setup.end().catch(() => undefined)
    expect(server.port).toBe(port)
    expect(server.pid).not.toBe(pid)
    expect(isAlive(pid)).toBe(false)
    const client = newClient()
    await client.connect()
    try {
      expect((await client.query('SELECT v FROM kept')).rows).toEqual([{ v: 'row' }])
      const after = Number(
        (await client.query<{ n: string }>("SELECT nextval('tokens') AS n")).rows[0]?.n,
      )
      expect(after).toBeGreaterThan(before)
    } finally {
      await client.end()
    }
  })

  it('kill takes the children down too; restart recovers', async () => {
    const client = newClient()
    await client.connect()
    const backend = Number(
      (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid,
    )
    const pid = server.pid
    await server.kill()
    expect(server.running).toBe(false)
    expect(isAlive(pid)).toBe(false)
    expect(isAlive(backend)).toBe(false)
    await client.end().catch(() => undefined)
    await server.restart({ graceful: true })
    const again = newClient()
    await again.connect()
    try {
      expect(
        (await again.query<{ n: number }>('SELECT count(*)::int AS n FROM kept')).rows[0]?.n,
      ).toBe(1)
    } finally {
      await again.end()
    }
  })
})
