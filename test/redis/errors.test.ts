// Errors a user can act on: a failed connection names the server and keeps its real cause
// (refused, an untrusted TLS certificate), a password in a URL is never echoed, and a URL's
// query parameters are either known or refused.
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { inspect } from 'node:util'
import type { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  backendFromUrl as redisFromUrl,
  parseRedisUrl,
  redactUrl,
  redisBackend,
  type RedisBackend,
} from '../../src/backends/redis/index.js'
import { backendFromUrl } from '../../src/cli/backends.js'
import { BackendError, OptionsError } from '../../src/errors.js'
import { freePort, startRedis, type RedisServer } from '../../testkit/index.js'
import { fastFailingClient } from './helpers.js'

let server: RedisServer
let tlsPort: number
let certDir: string
let admin: Redis
const backends: RedisBackend[] = []

beforeAll(async () => {
  // A self-signed certificate for 127.0.0.1: untrusted unless the client is given it as its CA.
  certDir = mkdtempSync(join(tmpdir(), 'conclave-redis-tls-'))
  execFileSync(
    'openssl',
    [
      ...['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1'],
      ...['-addext', 'subjectAltName=IP:127.0.0.1'],
      ...['-keyout', join(certDir, 'key.pem'), '-out', join(certDir, 'cert.pem')],
    ],
    { stdio: 'ignore' },
  )
  tlsPort = await freePort()
  server = await startRedis({
    args: [
      ...['--tls-port', String(tlsPort), '--tls-auth-clients', 'no'],
      ...['--tls-cert-file', join(certDir, 'cert.pem'), '--tls-key-file', join(certDir, 'key.pem')],
      ...['--tls-ca-cert-file', join(certDir, 'cert.pem')],
    ],
  })
  admin = fastFailingClient(server.url)
})
afterAll(async () => {
  await Promise.all(backends.map((b) => b.close()))
  admin?.disconnect()
  await server?.stop()
  if (certDir) rmSync(certDir, { recursive: true, force: true })
})

function made(b: RedisBackend): RedisBackend {
  backends.push(b)
  return b
}

async function failure(call: Promise<unknown>): Promise<BackendError> {
  const error = await call.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(error).toBeInstanceOf(BackendError)
  return error as BackendError
}

const unique = (label: string) => `${label}/${randomBytes(4).toString('hex')}`

describe('a failed connection', () => {
  it('names host:port and keeps ECONNREFUSED as the cause, for calls and watches', async () => {
    const port = await freePort() // nothing listens there
    const b = made(redisBackend({ url: `redis://127.0.0.1:${port}`, startupGrace: false }))
    for (const call of [b.holders('x'), b.watch('x', () => {})]) {
      const error = await failure(call)
      expect(error.message).toContain(`127.0.0.1:${port}`)
      expect(error.message).toMatch(/ECONNREFUSED/)
      expect(error.message).not.toMatch(/max retries per request/)
      expect(error.cause).toMatchObject({ code: 'ECONNREFUSED' })
    }
  })

  it('keeps an untrusted TLS certificate as the cause, and works once the CA is given', async () => {
    const url = `rediss://127.0.0.1:${tlsPort}`
    const untrusted = made(redisBackend({ url, startupGrace: false }))
    const error = await failure(untrusted.holders('x'))
    expect(error.message).toContain(`127.0.0.1:${tlsPort}`)
    expect(error.message).toMatch(/self[- ]signed certificate/)
    expect(error.cause).toMatchObject({ code: 'DEPTH_ZERO_SELF_SIGNED_CERT' })
    // The same server with its certificate trusted: the failure was the trust, nothing else.
    const trusted = made(
      redisBackend({
        url,
        startupGrace: false,
        clientOptions: { tls: { ca: readFileSync(join(certDir, 'cert.pem')) } },
      }),
    )
    expect(await trusted.holders(unique('tls'))).toEqual([])
  })

  it('with your own client, still names the server', async () => {
    const port = await freePort()
    const client = fastFailingClient(`redis://127.0.0.1:${port}`)
    const b = made(redisBackend({ client, startupGrace: false }))
    try {
      const error = await failure(b.holders('x'))
      expect(error.message).toContain(`127.0.0.1:${port}`)
      expect(error.cause).toBeInstanceOf(Error)
    } finally {
      client.disconnect()
    }
  })
})

describe('passwords in URLs', () => {
  const secret = 's3cr3t-pw'
  const rendered = (error: unknown) => `${String(error)}\n${inspect(error, { depth: 5 })}`

  it('are redacted in every URL the backend prints', () => {
    const cases: [string, () => unknown][] = [
      ['no host', () => redisBackend({ url: `redis://user:${secret}@` })],
      ['malformed', () => redisBackend({ url: `redis://u:pa#${secret}@h:1` })],
      ['wrong scheme', () => redisBackend({ url: `http://user:${secret}@h:1` })],
      [
        'client and url',
        () => redisBackend({ client: admin, url: `redis://user:${secret}@127.0.0.1:1` }),
      ],
      ['a secret-looking parameter', () => redisBackend({ url: `redis://h:1?passwrd=${secret}` })],
      ['a password parameter, no host', () => redisBackend({ url: `redis://?password=${secret}` })],
    ]
    for (const [label, make] of cases) {
      let error: unknown
      try {
        make()
      } catch (e) {
        error = e
      }
      expect(error, label).toBeInstanceOf(OptionsError)
      expect(rendered(error), label).not.toContain(secret)
    }
    expect(() => redisBackend({ url: `redis://user:${secret}@` })).toThrow(
      'Invalid url: "redis://user:***@"',
    )
  })

  it('are replaced by *** (redactUrl), wherever the userinfo ends', () => {
    expect(redactUrl(`redis://user:${secret}@h:6379/2`)).toBe('redis://user:***@h:6379/2')
    expect(redactUrl(`rediss://:${secret}@h`)).toBe('rediss://:***@h')
    // An @ in the password (not encoded) still goes: the userinfo ends at the last @.
    expect(redactUrl(`redis://u:a@b${secret}@h:1?db=1`)).toBe('redis://u:***@h:1?db=1')
    expect(redactUrl('redis://h:6379/?prefix=a@b')).toBe('redis://h:6379/?prefix=a@b')
    expect(redactUrl('redis://user@h')).toBe('redis://user@h')
    // Malformed: everything up to the last @ goes.
    expect(redactUrl(`redis://u:pa#${secret}@h`)).toBe('redis://u:***@h')
    expect(redactUrl(`redis://h?db=1&password=${secret}&family=4`)).toBe(
      'redis://h?db=1&password=***&family=4',
    )
  })

  it('never reach a connection error', async () => {
    const port = await freePort()
    const b = made(redisBackend({ url: `redis://user:${secret}@127.0.0.1:${port}` }))
    const error = await failure(b.holders('x'))
    expect(error.message).toContain(`127.0.0.1:${port}`)
    expect(rendered(error)).not.toContain(secret)
  })
})

describe('URL parameters', () => {
  it('refuses an unknown one, naming it, its value and the known ones', async () => {
    for (const make of [
      () => redisBackend({ url: `${server.url}?startupgrace=false` }),
      () => redisFromUrl(`${server.url}?startupgrace=false`),
      () => backendFromUrl(`${server.url}?startupgrace=false`),
    ]) {
      const error = await (async () => make())().then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(error).toBeInstanceOf(OptionsError)
      expect(error).toMatchObject({ field: 'startupgrace', value: 'false' })
      const message = (error as Error).message
      expect(message).toMatch(/^Invalid startupgrace: "false"\. Unknown Redis URL parameter/)
      for (const known of ['startupGrace', 'prefix', 'db', 'family', 'username', 'password']) {
        expect(message).toContain(known)
      }
    }
    expect(() => redisBackend({ url: `${server.url}?tls=true` })).toThrow(/Invalid tls: "true"/)
    expect(() => redisBackend({ url: `${server.url}?prefix=a&prefix=b` })).toThrow(/twice/)
    expect(() => redisBackend({ url: `${server.url}?prefix=a{b}` })).toThrow(/^Invalid prefix/)
    expect(() => redisBackend({ url: `${server.url}?prefix=a:`, prefix: 'b:' })).toThrow(
      /given both as an option and in the URL/,
    )
  })

  it('hands ioredis the URL as given, or with only conclave parameters cut out', () => {
    for (const url of [
      'redis://u:p%25w@h:1/2',
      'REDIS://h',
      'redis://h:1/?db=3&family=6&connectionName=a+b#x',
    ]) {
      expect(parseRedisUrl(url)).toEqual({ url })
    }
    expect(parseRedisUrl('redis://u:p%40w@h:1/2?db=3&prefix=app%3A&family=6#x')).toEqual({
      url: 'redis://u:p%40w@h:1/2?db=3&family=6#x',
      prefix: 'app:',
    })
    expect(parseRedisUrl('rediss://h?startupGrace=false&prefix=')).toEqual({
      url: 'rediss://h',
      startupGrace: false,
      prefix: '',
    })
  })

  it('?prefix= puts the keys under the prefix, so status through the CLI sees them', async () => {
    const resource = unique('prefixed')
    const prefix = `app${randomBytes(2).toString('hex')}:`
    const holder = made(
      redisBackend({ url: `${server.url}/?prefix=${prefix}&db=3`, startupGrace: false }),
    )
    expect(holder.prefix).toBe(prefix)
    const got = await holder.acquire({
      resource,
      candidate: 'a',
      tickets: 1,
      leaseMs: 10_000,
      metadata: null,
    })
    expect(got.acquired).toBe(true)
    // ioredis got the rest of the URL: the keys are in db 3, under the prefix.
    await admin.select(3)
    expect(await admin.keys(`${prefix}{${resource}}:*`)).toHaveLength(5) // holders, grants, token, guard, history
    await admin.select(0)
    const withPrefix = (await backendFromUrl(
      `${server.url}/3?prefix=${prefix}&startupGrace=false`,
    )) as RedisBackend
    const without = (await backendFromUrl(`${server.url}/3?startupGrace=false`)) as RedisBackend
    backends.push(withPrefix, without)
    expect((await withPrefix.holders(resource)).map((h) => h.candidate)).toEqual(['a'])
    expect(await without.holders(resource)).toEqual([])
    expect(withPrefix).toMatchObject({ prefix, startupGrace: false })
    await holder.release({ resource, candidate: 'a' })
  })
})
