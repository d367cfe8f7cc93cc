// The networked backends the CLI knows (their schemes registered in src/cli/backends.ts), each
// with a way to start its private server from testkit/. Cross-process tests run once per
// family listed here, so a backend that lands later is tested with no change to the tests.
import { randomBytes } from 'node:crypto'
import { BACKEND_SCHEMES } from '../../src/cli/backends.js'
import { startEtcd, startPostgres, startRedis } from '../../testkit/index.js'

export interface NetworkedServer {
  family: string
  /** The server's port on 127.0.0.1 (put a fault proxy in front of it with urlFor). */
  port: number
  /** The backend URL for a port: the server's own, or a proxy's forwarding to it. */
  urlFor(port: number): string
  readonly url: string
  stop(): Promise<void>
}

interface Family {
  /** Schemes that name this backend (one test run covers them all). */
  schemes: string[]
  start(): Promise<NetworkedServer>
}

const LOCAL_SCHEMES = new Set(['memory:', 'cluster:'])
// local: has no server nor TCP port (no fault proxy in front of it): its cross-process run test
// is test/local/cli.test.ts.
const NO_SERVER_SCHEMES = new Set(['local:'])

const FAMILIES: Record<string, Family> = {
  redis: {
    // Sentinel and Cluster URLs reach the same backend code through other topologies (their
    // own tests: test/redis/sentinel-*.test.ts, test/redis/cluster.test.ts); the CLI's runs against one server cover them.
    schemes: ['redis:', 'rediss:', 'redis+sentinel:', 'redis+cluster:'],
    async start() {
      const server = await startRedis()
      // A server these tests just started, empty: no grant can have been lost, so the
      // startup grace (one lease without new grants; the tests use leases up to 60 s) is off.
      const urlFor = (port: number) => `redis://127.0.0.1:${port}?startupGrace=false`
      return {
        family: 'redis',
        port: server.port,
        urlFor,
        url: urlFor(server.port),
        stop: () => server.stop(),
      }
    },
  },
  postgres: {
    schemes: ['postgres:', 'postgresql:'],
    async start() {
      const server = await startPostgres()
      const schema = `conclave_cli_${randomBytes(3).toString('hex')}`
      const urlFor = (port: number) =>
        `postgres://${server.user}@127.0.0.1:${port}/${encodeURIComponent(server.database)}?schema=${schema}`
      return {
        family: 'postgres',
        port: server.port,
        urlFor,
        url: urlFor(server.port),
        stop: () => server.stop(),
      }
    },
  },
  etcd: {
    schemes: ['etcd:'],
    async start() {
      const server = await startEtcd()
      const urlFor = (port: number) => `etcd://127.0.0.1:${port}`
      return {
        family: 'etcd',
        port: server.port,
        urlFor,
        url: urlFor(server.port),
        stop: () => server.stop(),
      }
    },
  },
}

/**
 * The families whose schemes are registered now. A registered scheme this file cannot start a
 * server for fails loudly: add it to FAMILIES.
 */
export function registeredFamilies(): string[] {
  const families = new Set<string>()
  for (const scheme of BACKEND_SCHEMES) {
    if (LOCAL_SCHEMES.has(scheme) || NO_SERVER_SCHEMES.has(scheme)) continue
    const family = Object.entries(FAMILIES).find(([, f]) => f.schemes.includes(scheme))?.[0]
    if (!family) {
      throw new Error(
        `backend scheme ${scheme} is registered in src/cli/backends.ts, but test/cli/networked.ts does not know how to start its server: add it to FAMILIES`,
      )
    }
    families.add(family)
  }
  return [...families]
}

export function startServer(family: string): Promise<NetworkedServer> {
  const entry = FAMILIES[family]
  if (!entry) throw new Error(`no server for backend family ${family}`)
  return entry.start()
}

/** The family cross-process tests of other parts use: the first registered one. */
export function firstFamily(): string {
  const families = registeredFamilies()
  if (families.length === 0) {
    throw new Error(
      'no networked backend is registered in src/cli/backends.ts: cross-process tests need one',
    )
  }
  return families[0]!
}
