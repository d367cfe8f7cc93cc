/**
 * The PostgreSQL backend's record store (Backend.readRecord/writeRecord: the `records` table of
 * migration 003, written by one compare-and-set statement) and clock (Backend.now:
 * clock_timestamp()). The statements live in sql/, rendered for one schema.
 */
import type { Json, StoredRecord, WriteRecordResult } from '../../backend.js'
import { render } from './layout.js'
import nowSql from './sql/now.sql.js'
import readRecordSql from './sql/read-record.sql.js'
import writeRecordSql from './sql/write-record.sql.js'

/** The record statements of one schema. */
export interface RecordStatements {
  read: string
  write: string
  now: string
}

export function recordStatements(schema: string): RecordStatements {
  return {
    read: render(readRecordSql, schema),
    write: render(writeRecordSql, schema),
    now: render(nowSql, schema),
  }
}

/** A row of read-record.sql (bigints arrive as strings). */
export interface RecordRow {
  value: Json
  token: string
  version: string
}

export function toRecord(row: RecordRow | undefined): StoredRecord | undefined {
  if (!row) return undefined
  return { value: row.value, token: Number(row.token), version: Number(row.version) }
}

/** The row of write-record.sql. */
export interface WriteRow {
  written_version: string | null
  before: { value: Json; token: number; version: number } | null
}

export function toWriteResult(row: WriteRow): WriteRecordResult {
  if (row.written_version !== null) return { written: true, version: Number(row.written_version) }
  const before = row.before
  return {
    written: false,
    current: before
      ? { value: before.value, token: Number(before.token), version: Number(before.version) }
      : undefined,
  }
}
