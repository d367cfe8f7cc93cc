/**
 * The hub state file, in the per-user directory: what the next hub must know of the previous
 * ones. Written with fsync (file and directory) before it counts, so a crash never loses it.
 *   epoch       one more per hub: the hub's tokens start at epoch * 2^32, above every older one
 *   maxLeaseMs  the longest lease any hub granted: how long a new hub after a crash waits
 *   clean       a hub that closed cleanly leaves its grants here, so the next one needs no wait
 *   clients     every client handle that may hold a grant of this hub or of an older one still
 *               running (a handle id and its process), written before the handle's first call is
 *               served: after a crash, the next hub ends its wait early once each of them has
 *               re-registered what it holds or is surely dead. null: unknown (a client that did
 *               not say who it is, or a file of an older version), so the next hub waits it out.
 */
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs'
import { dirname } from 'node:path'
import { BackendError } from '../../errors.js'
import type { GrantRecord } from '../memory.js'
import { parseIdentity, type ProcessIdentity } from './identity.js'

/** A client handle (one LocalBackend) as the state file names it. */
export interface ClientEntry {
  /** The handle's random id, as its hello says. */
  handle: string
  /** Its process. */
  identity: ProcessIdentity
}

/** What the state file holds. */
export interface HubState {
  epoch: number
  maxLeaseMs: number
  clean: { at: number; grants: GrantRecord[] } | null
  clients: ClientEntry[] | null
}

/** A handle id: what a client may name itself (bounded: the hub keeps and writes it). */
export function isHandle(value: unknown): value is string {
  return typeof value === 'string' && /^[0-9a-f]{8,64}$/.test(value)
}

/** The clients list, or null (unknown) when it is missing or any entry is not one. */
function parseClients(value: unknown): ClientEntry[] | null {
  if (!Array.isArray(value)) return null
  const out: ClientEntry[] = []
  for (const entry of value as unknown[]) {
    const { handle, identity } = (entry ?? {}) as Record<string, unknown>
    const who = parseIdentity(identity)
    if (!isHandle(handle) || !who) return null
    out.push({ handle, identity: who })
  }
  return out
}

/** Tokens of one hub: epoch * TOKEN_SPAN + a counter (2^21 epochs fit in a safe integer). */
export const TOKEN_SPAN = 2 ** 32

/**
 * The state, or a fresh one when there is no file. Any other failure (unreadable, not JSON)
 * throws: a hub that guessed a fresh state could reuse the old hub's tokens and skip its wait.
 */
export function readState(path: string): HubState {
  try {
    const raw = JSON.parse(readFileSync(path, 'utf8')) as Partial<HubState>
    const epoch = Number.isSafeInteger(raw.epoch) && raw.epoch! >= 0 ? raw.epoch! : 0
    const maxLeaseMs =
      Number.isSafeInteger(raw.maxLeaseMs) && raw.maxLeaseMs! >= 0 ? raw.maxLeaseMs! : 0
    const clean =
      raw.clean && Array.isArray(raw.clean.grants) && typeof raw.clean.at === 'number'
        ? raw.clean
        : null
    return { epoch, maxLeaseMs, clean, clients: parseClients(raw.clients) }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      return { epoch: 0, maxLeaseMs: 0, clean: null, clients: [] }
    }
    throw new BackendError(
      `local: the hub state file ${path} cannot be read (${(error as Error).message}); refusing to host the hub, which could reuse the last hub's tokens. Fix or remove the file once no process of this app runs.`,
      { cause: error },
    )
  }
}

/** Replaces the state atomically and durably (temp file, fsync, rename, fsync of the directory). */
export function writeState(path: string, state: HubState): void {
  const temp = `${path}.${process.pid}.tmp`
  const fd = openSync(temp, 'w', 0o600)
  try {
    writeSync(fd, JSON.stringify(state))
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  renameSync(temp, path)
  if (process.platform === 'win32') return
  const dir = openSync(dirname(path), 'r')
  try {
    fsyncSync(dir)
  } finally {
    closeSync(dir)
  }
}
