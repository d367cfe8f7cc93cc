// Errors a user can act on: a failed connection names the server and keeps its real cause
// (refused, an untrusted TLS certificate).
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { redisBackend, type RedisBackend } from '../../src/backends/redis/index.js'
import { BackendError } from '../../src/errors.js'
import { freePort, startRedis, type RedisServer } from '../servers/index.js'
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
