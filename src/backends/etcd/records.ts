/**
 * The etcd backend's record store (Backend.readRecord/writeRecord). A record is one key,
 * `<namespace><prefix><resource>!record!<key>` (`!` is in no resource name, and a record key
 * has no `#`, so it lies in no resource's candidate range and wakes no watcher), holding JSON
 * `{ "token": T, "value": V }`; its version is the key's mod revision. A write reads the key,
 * checks the token, and puts in a transaction that compares the mod revision with the one read
 * (0: the key must not exist), so the check and the put are one atomic step.
 *
 * etcd has no clock of its own in its API: this backend has no `now()`, and schedule() decides
 * fire times on this host's clock (documented in docs/cron.md); its record still keeps each
 * fire to one run.
 */
import type { Json, StoredRecord } from '../../backend.js'
import { keyBuffer } from './layout.js'

/** The record key, with the namespace (raw KV calls need it). */
export function recordKeyOf(base: string, resource: string, key: string): Buffer {
  return keyBuffer(`${base}${resource}!record!${key}`)
}

/** A record as stored at `modRevision`. */
export function decodeRecord(value: Buffer, modRevision: string | number): StoredRecord {
  const parsed = JSON.parse(value.toString('utf8')) as { token: number; value: Json }
  return { token: Number(parsed.token), value: parsed.value ?? null, version: Number(modRevision) }
}

export function encodeRecord(token: number, value: Json): Buffer {
  return Buffer.from(JSON.stringify({ token, value }))
}
