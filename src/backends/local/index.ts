/**
 * `conclave/local`: elections among the processes of one app on one host, with no server: PM2
 * (cluster or fork mode), systemd units, plain shells, node:cluster workers, containers sharing
 * a volume. One of the processes hosts the hub (whoever takes the lock and binds the socket);
 * the others connect over a unix socket (a named pipe on Windows). When the hub's process dies,
 * a survivor takes over. See docs/local.md.
 */
import type { Backend } from '../../backend.js'
import { OptionsError } from '../../errors.js'
import { LocalBackend } from './backend.js'
import { type LocalBackendOptions, resolveLocalOptions } from './options.js'

export { LocalBackend } from './backend.js'
export { defaultDir, type LocalBackendOptions, type LocalSettings } from './options.js'

/**
 * A handle on the elections of the app `name` on this host. Each call returns a new handle; its
 * `close()` (after its `onClose` hooks) ends only what was done through it. It never keeps the
 * process alive by itself.
 */
export function localBackend(options: LocalBackendOptions): LocalBackend {
  return new LocalBackend(resolveLocalOptions(options))
}

/**
 * `local:` (the app name `default`) or `local:NAME` (also `local://NAME`), with optional
 * `?dir=...&timeoutMs=...`.
 */
export function backendFromUrl(url: string): Backend {
  const match = /^local:(?:\/\/)?([^?#]*)(?:\?([^#]*))?$/i.exec(url)
  if (!match) {
    throw new OptionsError('backend', url, 'A local URL is local: or local:NAME[?dir=DIR].')
  }
  const options: LocalBackendOptions = { name: decodeURIComponent(match[1]!) || 'default' }
  for (const [key, value] of new URLSearchParams(match[2] ?? '')) {
    if (key === 'dir') options.dir = value
    else if (key === 'timeoutMs') options.timeoutMs = Number(value)
    else {
      throw new OptionsError(key, value, `"${key}" is not a local URL parameter (dir, timeoutMs).`)
    }
  }
  return localBackend(options)
}
