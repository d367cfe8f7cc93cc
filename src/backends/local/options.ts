/**
 * The `local` backend's options and where they put things: the app name (the namespace two apps
 * never share), the per-user directory, the socket address, the hub lock and the hub state file.
 */
import { createHash } from 'node:crypto'
import { lstatSync, mkdirSync, realpathSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { OptionsError } from '../../errors.js'
import { checkOptions, optionalMilliseconds } from '../../validate.js'

/** Options of `localBackend()`. */
export interface LocalBackendOptions {
  /** The app: every process of one app on one host passes the same name. 1 to 64 of [A-Za-z0-9._-]. */
  name: string
  /**
   * The per-user directory holding the socket and the hub state (mode 0700, owned by this user).
   * Default `$XDG_RUNTIME_DIR/conclave`, else `<tmpdir>/conclave-<uid>`. Containers sharing a
   * volume pass a directory on it.
   */
  dir?: string
  /** How long a call waits for the hub's answer (and for a hub to appear), ms. Default 5000. */
  timeoutMs?: number
  /**
   * How the hub is chosen: `abstract` (Linux default) binds an abstract socket name the kernel
   * frees when its holder dies; `pidfile` (default elsewhere) an exclusive file naming the holder's
   * pid, taken over only when that pid is gone. Windows uses the named pipe itself.
   */
  lock?: 'abstract' | 'pidfile'
  /** Told about malformed messages and failed sends at the hub. */
  onError?: (error: Error) => void
}

/** The checked options and every address derived from them. */
export interface LocalSettings {
  name: string
  dir: string
  timeoutMs: number
  lock: 'abstract' | 'pidfile' | 'pipe'
  /** Where the hub listens: a socket path, or a Windows pipe name. */
  address: string
  /** The abstract lock name (with its leading NUL), or the pid file's path. */
  lockAddress: string
  /** The hub state file (epoch, longest lease, a clean hand-over): fsynced on each change. */
  statePath: string
  onError: ((error: Error) => void) | undefined
}

const NAME = /^[A-Za-z0-9._-]{1,64}$/
/** macOS's sun_path is 104 bytes with its NUL; Linux allows 108. Stay under both. */
export const MAX_SOCKET_PATH = 100

/** This user's id ('w' plus the user name on Windows, which has no uid). */
function userId(): string {
  if (typeof process.getuid === 'function') return String(process.getuid())
  return `w${(process.env.USERNAME ?? 'user').replace(/[^A-Za-z0-9._-]/g, '_')}`
}

/** The default per-user directory (see LocalBackendOptions.dir). */
export function defaultDir(): string {
  const runtime = process.env.XDG_RUNTIME_DIR
  if (runtime && runtime.startsWith('/')) return join(runtime, 'conclave')
  return join(tmpdir(), `conclave-${userId()}`)
}

/**
 * Makes `dir` (mode 0700) or checks it: a directory, not a symlink, owned by this user, with no
 * access for group or others. Another user who made it first must not see or squat the socket.
 */
export function ensurePrivateDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 })
  } catch (error) {
    throw new OptionsError('dir', dir, `could not create it: ${(error as Error).message}.`)
  }
  if (process.platform === 'win32') return
  const st = lstatSync(dir)
  if (!st.isDirectory()) {
    throw new OptionsError('dir', dir, 'dir must be a directory (not a symlink).')
  }
  const uid = process.getuid?.()
  if (uid !== undefined && st.uid !== uid) {
    throw new OptionsError(
      'dir',
      dir,
      `dir is owned by uid ${st.uid}, not by this user (uid ${uid}): another user could read or replace the socket.`,
    )
  }
  if ((st.mode & 0o077) !== 0) {
    throw new OptionsError(
      'dir',
      dir,
      `dir has mode ${(st.mode & 0o777).toString(8)}: it must give no access to group or others (0700).`,
    )
  }
}

/** Checks the options and derives the addresses (makes and checks the directory). */
export function resolveLocalOptions(options: LocalBackendOptions): LocalSettings {
  if (options === undefined || options === null) {
    throw new OptionsError(
      'name',
      undefined,
      'name is the app name: localBackend({ name }) needs one (every process of the app passes the same one).',
    )
  }
  checkOptions(
    options,
    ['name', 'dir', 'timeoutMs', 'lock', 'onError'],
    'local backend',
    'localBackend options must be an object with a name.',
  )
  const name: unknown = options.name
  if (typeof name !== 'string' || !NAME.test(name)) {
    throw new OptionsError(
      'name',
      name,
      'name is the app name: 1 to 64 characters of A-Z a-z 0-9 . _ - (every process of the app passes the same one).',
    )
  }
  if (options.dir !== undefined && (typeof options.dir !== 'string' || options.dir === '')) {
    throw new OptionsError('dir', options.dir, 'dir is a directory path.')
  }
  if (options.lock !== undefined && options.lock !== 'abstract' && options.lock !== 'pidfile') {
    throw new OptionsError('lock', options.lock, "lock is 'abstract' (Linux only) or 'pidfile'.")
  }
  if (options.lock === 'abstract' && process.platform !== 'linux') {
    throw new OptionsError('lock', options.lock, 'abstract sockets exist on Linux only.')
  }
  if (options.onError !== undefined && typeof options.onError !== 'function') {
    throw new OptionsError('onError', options.onError, 'onError must be a function.')
  }
  const timeoutMs = optionalMilliseconds('timeoutMs', options.timeoutMs, 5_000, 1)
  const given = resolve(options.dir ?? defaultDir())
  ensurePrivateDir(given)
  // One directory, one lock: two spellings of it (a trailing slash, a symlinked parent) must
  // not get two lock names for one socket path.
  const dir = realpathSync(given)
  const uid = userId()
  const lock =
    process.platform === 'win32'
      ? 'pipe'
      : (options.lock ?? (process.platform === 'linux' ? 'abstract' : 'pidfile'))
  // A long directory would overflow sun_path: name the socket by a short hash instead.
  let socket = join(dir, `${name}.sock`)
  if (Buffer.byteLength(socket) > MAX_SOCKET_PATH) {
    socket = join(dir, `${createHash('sha256').update(name).digest('hex').slice(0, 16)}.sock`)
  }
  if (process.platform !== 'win32' && Buffer.byteLength(socket) > MAX_SOCKET_PATH) {
    throw new OptionsError(
      'dir',
      dir,
      `the socket path ${socket} would be over ${MAX_SOCKET_PATH} bytes (macOS allows 104): pick a shorter dir.`,
    )
  }
  // The lock is namespaced by user, app and directory: two apps, two users or two directories
  // (two volumes) never share it.
  const dirHash = createHash('sha256').update(dir).digest('hex').slice(0, 12)
  const address =
    process.platform === 'win32' ? `\\\\.\\pipe\\conclave-${uid}-${dirHash}-${name}` : socket
  const lockAddress =
    lock === 'abstract' ? `\0conclave-${uid}-${dirHash}-${name}.lock` : join(dir, `${name}.pid`)
  return {
    name,
    dir,
    timeoutMs,
    lock,
    address,
    lockAddress,
    statePath: join(dir, `${name}.hub.json`),
    onError: options.onError,
  }
}
