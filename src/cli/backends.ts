/**
 * Backend URLs, wherever the CLI (or a user) names a backend by string:
 *   memory:            this process only
 *   cluster:           node:cluster IPC (in a cluster app)
 *   local:[NAME]       the processes of one host, through a hub one of them hosts
 * Commands whose separate processes must agree (`conclave run`, `status`, `watch`) refuse
 * those two: see `requireSharedBackend`.
 * Each networked backend adds its schemes here, loading its module (and so its client
 * library, an optional peer dependency) only when named.
 */
import type { Backend } from '../backend.js'
import { OptionsError } from '../errors.js'
import { redact } from './report.js'

type Factory = (url: string) => Promise<Backend>

const SCHEMES: Record<string, Factory> = {
  'memory:': async () => (await import('../backends/memory.js')).memoryBackend(),
  'cluster:': async () => (await import('../backends/cluster/index.js')).clusterBackend(),
  // more schemes: one line per backend, below this comment
  'redis:': async (url) => (await import('../backends/redis/index.js')).backendFromUrl(url),
  'rediss:': async (url) => (await import('../backends/redis/index.js')).backendFromUrl(url),
  'postgres:': async (url) => (await import('../backends/postgres/index.js')).backendFromUrl(url),
  'postgresql:': async (url) => (await import('../backends/postgres/index.js')).backendFromUrl(url),
  'etcd:': async (url) => (await import('../backends/etcd/index.js')).backendFromUrl(url),
  'redis+sentinel:': async (url) =>
    (await import('../backends/redis/index.js')).backendFromUrl(url),
  'redis+cluster:': async (url) => (await import('../backends/redis/index.js')).backendFromUrl(url),
  'local:': async (url) => (await import('../backends/local/index.js')).backendFromUrl(url),
}

/** The URL schemes `backendFromUrl` knows. */
export const BACKEND_SCHEMES = Object.keys(SCHEMES)

/**
 * Schemes whose state lives in one process (or one node:cluster app), with why separate CLI
 * processes cannot share it.
 */
const ONE_PROCESS: Record<string, string> = {
  'memory:':
    'memory: keeps its grants inside one process, so every separate conclave process would have a state of its own (each `conclave run` would hold NAME and run CMD at once; status and watch would only ever see their own empty state)',
  'cluster:':
    'cluster: works only between the node:cluster workers of one app; separate conclave processes are not workers of one primary, so each would host a hub of its own and elect itself (each `conclave run` would run CMD at once)',
}

/** Where to go instead of a one-process backend. */
export const SHARED_BACKENDS_HINT =
  'Use a backend the processes share: redis://, postgres:// or etcd:// (or local:NAME for the processes of one machine).'

function schemeOf(url: unknown): string | undefined {
  return typeof url === 'string'
    ? /^([a-z][a-z0-9+.-]*:)/i.exec(url)?.[1]?.toLowerCase()
    : undefined
}

/**
 * Throws an OptionsError (the CLI's exit 2) when `url` names a backend whose state lives in one
 * process (`memory:`, `cluster:`): `command` is run by separate processes that must agree.
 */
export function requireSharedBackend(url: string, field: string, command: string): void {
  const reason = ONE_PROCESS[schemeOf(url) ?? '']
  if (reason === undefined) return
  throw new OptionsError(
    field,
    url,
    `${command} needs a backend that separate processes share, and ${reason}.`,
    SHARED_BACKENDS_HINT,
  )
}

/** Makes the backend a URL names; the backend owns (and closes) any client it creates. */
export async function backendFromUrl(url: string, field = 'backend'): Promise<Backend> {
  // The scheme alone decides; the rest is the backend's to parse (etcd's host lists are
  // not WHATWG URLs).
  const scheme = schemeOf(url)
  if (scheme === undefined) {
    throw new OptionsError(
      field,
      typeof url === 'string' ? redact(url) : url,
      `A backend is a URL with one of the schemes ${BACKEND_SCHEMES.join(' ')} (e.g. redis://127.0.0.1:6379).`,
    )
  }
  const factory = SCHEMES[scheme]
  if (!factory) {
    throw new OptionsError(
      field,
      redact(url),
      `Unknown backend scheme "${scheme}". Known: ${BACKEND_SCHEMES.join(' ')}.`,
    )
  }
  return factory(url)
}
