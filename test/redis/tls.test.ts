// rediss:// with a private CA: `?tlsCa=FILE` trusts it (today's alternative,
// NODE_EXTRA_CA_CERTS, is process-wide). A real redis-server with TLS on its own port, its
// certificate signed by a CA made here with openssl; the same URL without the CA, or with another
// CA, must fail certificate verification, never connect unverified.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { backendFromUrl } from '../../src/backends/redis/index.js'
import type { Backend } from '../../src/backend.js'
import { OptionsError } from '../../src/errors.js'
import { freePort, startRedis, type RedisServer } from '../../testkit/index.js'

let dir: string
let server: RedisServer
let tlsPort: number
const backends: Backend[] = []

/** A CA and a certificate for 127.0.0.1 signed by it, in `dir`: their paths. */
function makeCa(name: string): { ca: string; cert: string; key: string } {
  const at = (file: string) => join(dir, `${name}-${file}`)
  const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' })
  openssl(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '2',
    '-subj',
    `/CN=${name} CA`,
    '-keyout',
    at('ca.key'),
    '-out',
    at('ca.pem'),
  )
  openssl(
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-subj',
    '/CN=127.0.0.1',
    '-keyout',
    at('server.key'),
    '-out',
    at('server.csr'),
  )
  writeFileSync(at('ext.cnf'), 'subjectAltName=IP:127.0.0.1\n')
  openssl(
    'x509',
    '-req',
    '-in',
    at('server.csr'),
    '-CA',
    at('ca.pem'),
    '-CAkey',
    at('ca.key'),
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    at('ext.cnf'),
    '-out',
    at('server.pem'),
  )
  return { ca: at('ca.pem'), cert: at('server.pem'), key: at('server.key') }
}

let ours: { ca: string }
let theirs: { ca: string }

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'conclave-tls-'))
  const made = makeCa('conclave-test')
  ours = made
  theirs = makeCa('other')
  tlsPort = await freePort()
  server = await startRedis({
    args: [
      '--tls-port',
      String(tlsPort),
      '--tls-cert-file',
      made.cert,
      '--tls-key-file',
      made.key,
      '--tls-ca-cert-file',
      made.ca,
      '--tls-auth-clients',
      'no',
    ],
  })
}, 60_000)
afterAll(async () => {
  await Promise.all(backends.map((b) => b.close().catch(() => {})))
  await server?.stop()
  if (dir) rmSync(dir, { recursive: true, force: true })
})

const url = (query: string) => `rediss://127.0.0.1:${tlsPort}?startupGrace=false&${query}`
const ask = (backend: Backend) =>
  backend.acquire({ resource: 'tls', candidate: 'a', tickets: 1, leaseMs: 2_000, metadata: null })

it('connects to a rediss:// server whose certificate the CA file of ?tlsCa= signed', async () => {
  const backend = await backendFromUrl(url(`tlsCa=${encodeURIComponent(ours.ca)}`))
  backends.push(backend)
  expect((await ask(backend)).acquired).toBe(true)
})

it('refuses the same server without that CA, or with another CA: the certificate is not trusted', async () => {
  for (const query of ['', `tlsCa=${encodeURIComponent(theirs.ca)}`]) {
    const backend = await backendFromUrl(url(query))
    backends.push(backend)
    const error = (await ask(backend).catch((e: unknown) => e)) as Error & { cause?: unknown }
    expect(error).toBeInstanceOf(Error)
    // The cause chain names the TLS failure (self-signed chain / unknown issuer).
    expect(String((error.cause as Error | undefined)?.message ?? error.message)).toMatch(
      /certificate|self[- ]signed|issuer/i,
    )
  }
}, 30_000)

it('refuses a tlsCa it cannot use, naming the field, the value and the rule', async () => {
  const missing = (await backendFromUrl(url('tlsCa=/nonexistent/ca.pem')).catch(
    (e: unknown) => e,
  )) as OptionsError
  expect(missing).toBeInstanceOf(OptionsError)
  expect(missing.field).toBe('tlsCa')
  expect(missing.message).toMatch(/\/nonexistent\/ca\.pem.*could not be read \(ENOENT\)/)
  await expect(
    backendFromUrl(`redis://127.0.0.1:${server.port}?tlsCa=${encodeURIComponent(ours.ca)}`),
  ).rejects.toBeInstanceOf(OptionsError)
  await expect(backendFromUrl(url('tlsCa='))).rejects.toBeInstanceOf(OptionsError)
  const notPem = join(dir, 'not.pem')
  writeFileSync(notPem, 'hello')
  await expect(backendFromUrl(url(`tlsCa=${encodeURIComponent(notPem)}`))).rejects.toMatchObject({
    field: 'tlsCa',
  })
})
