/**
 * Backend URLs, wherever the CLI (or a user) names a backend by string:
 *   memory:            this process only
 *   cluster:           node:cluster IPC (in a cluster app)
 * Each networked backend adds its schemes here, loading its module (and so its client
 * library, an optional peer dependency) only when named.
 */
import type { Backend } from '../backend.js'
import { OptionsError } from '../errors.js'

type Factory = (url: string) => Promise<Backend>

const SCHEMES: Record<string, Factory> = {
  'memory:': async () => (await import('../backends/memory.js')).memoryBackend(),
  'cluster:': async () => (await import('../backends/cluster/index.js')).clusterBackend(),
  // more schemes: one line per backend, below this comment
  'redis:': async (url) => (await import('../backends/redis/index.js')).backendFromUrl(url),
  'rediss:': async (url) => (await import('../backends/redis/index.js')).backendFromUrl(url),
  'postgres:': async (url) => (await import('../backends/postgres/index.js')).backendFromUrl(url),
  'postgresql:': async (url) => (await import('../backends/postgres/index.js')).backendFromUrl(url),
  'etcd:': async (url) => (await import('../backends/etcd.js')).backendFromUrl(url),
}

export const BACKEND_SCHEMES = Object.keys(SCHEMES)

/** Makes the backend a URL names; the backend owns (and closes) any client it creates. */
export async function backendFromUrl(url: string, field = 'backend'): Promise<Backend> {
  // The scheme alone decides; the rest is the backend's to parse (etcd's host lists are
  // not WHATWG URLs).
  const scheme =
    typeof url === 'string' ? /^([a-z][a-z0-9+.-]*:)/i.exec(url)?.[1]?.toLowerCase() : undefined
  if (scheme === undefined) {
    throw new OptionsError(
      field,
      url,
      `A backend is a URL with one of the schemes ${BACKEND_SCHEMES.join(' ')} (e.g. redis://127.0.0.1:6379).`,
    )
  }
  const factory = SCHEMES[scheme]
  if (!factory) {
    throw new OptionsError(
      field,
      url,
      `Unknown backend scheme "${scheme}". Known: ${BACKEND_SCHEMES.join(' ')}.`,
    )
  }
  return factory(url)
}
