/**
 * conclave/etcd: the etcd backend (see backend.ts for how it works). This file is the public
 * face: the factories and what a user of the backend needs to name.
 */
import { EtcdBackend } from './backend.js'
import { type EtcdBackendOptions, optionsFromUrl } from './options.js'

export { EtcdBackend } from './backend.js'
export { ETCD_CLIENT_DEFAULTS, type EtcdBackendOptions } from './options.js'

/** An etcd backend over your etcd3 client (`{ client }`) or one it makes and owns (`{ hosts }`). */
export function etcdBackend(options: EtcdBackendOptions): EtcdBackend {
  return new EtcdBackend(options)
}

/**
 * `etcd://host:port[,host:port...][?prefix=...&timeoutMs=...&memberTimeoutMs=...]`; the backend owns its client.
 * Fails at once with a MissingPeerError when etcd3 is not installed.
 */
export async function backendFromUrl(url: string): Promise<EtcdBackend> {
  return new EtcdBackend(optionsFromUrl(url))
}
