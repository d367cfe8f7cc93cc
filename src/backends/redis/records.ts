/**
 * The Redis backend's record store (Backend.readRecord/writeRecord) and clock (Backend.now): a
 * record is a hash `<prefix>{<resource>}:record:<key>` in the resource's hash slot, written only
 * by scripts/write-record.lua (a fenced compare-and-set); `now` is the server's TIME.
 */
import type { Json, StoredRecord, WriteRecordResult } from '../../backend.js'
import { BackendError } from '../../errors.js'
import { defineScript } from './scripts.js'
import writeRecordLua from './scripts/write-record.lua.js'

/** The compare-and-set script. */
export const WRITE_RECORD = defineScript('write-record', writeRecordLua)

/** The record `key` of `resource`: in the resource's hash tag, so in its slot. */
export function recordKey(prefix: string, resource: string, key: string): string {
  return `${prefix}{${resource}}:record:${key}`
}

/** HMGET version token value, as a StoredRecord. */
export function parseRecordReply(reply: unknown): StoredRecord | undefined {
  if (!Array.isArray(reply)) throw new BackendError('redis readRecord: unexpected reply')
  const [version, token, value] = reply as (string | null)[]
  if (version === null || version === undefined) return undefined
  return { version: Number(version), token: Number(token), value: JSON.parse(value!) as Json }
}

/** write-record.lua's answer. */
export function parseWriteReply(reply: unknown): WriteRecordResult {
  if (!Array.isArray(reply)) throw new BackendError('redis writeRecord: unexpected reply')
  const [written, version, token, value] = reply as [number, number, number?, string?]
  if (written === 1) return { written: true, version: Number(version) }
  return {
    written: false,
    current:
      Number(version) === 0
        ? undefined
        : { version: Number(version), token: Number(token), value: JSON.parse(value!) as Json },
  }
}

/** TIME's [seconds, microseconds] as ms since the epoch. */
export function parseTime(reply: unknown): number {
  const [seconds, micros] = reply as [string, string]
  return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000)
}
