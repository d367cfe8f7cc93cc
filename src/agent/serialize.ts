/**
 * What can cross the cluster's IPC channel, checked before sending so a bad value fails at the
 * caller with the path to the culprit instead of being silently changed on the way (JSON turns
 * a Map into `{}`, a Date into a string, NaN into null) or killing the channel.
 */
import cluster from 'node:cluster'
import { NotSerializableError } from '../errors.js'

/** The cluster's IPC serialization: what a value must survive to cross. */
export type Serialization = 'json' | 'advanced'

/** The primary's setting (what `cluster.fork()` uses); workers learn it from the primary. */
export function primarySerialization(): Serialization {
  return (cluster.settings as { serialization?: string }).serialization === 'advanced'
    ? 'advanced'
    : 'json'
}

const MAX_DEPTH = 200

/** Built-ins the structured clone algorithm carries with their type. */
const CLONABLE: readonly (abstract new (...args: never[]) => unknown)[] = [
  Date,
  RegExp,
  ArrayBuffer,
  DataView,
  Error,
  Boolean,
  String,
  Number,
]

/** Throws a NotSerializableError naming the first part of `value` that cannot be carried. */
export function assertCarriable(value: unknown, mode: Serialization, path: string): void {
  // A quick walk first; only a value that fails it is walked again to name the culprit's path.
  if (typeof value !== 'object' && typeof value !== 'function' && typeof value !== 'symbol') {
    if (mode === 'advanced' || typeof value !== 'bigint') {
      if (typeof value !== 'number' || mode === 'advanced' || Number.isFinite(value)) return
    }
  }
  if (mode === 'json') {
    if (quickJson(value, 0, new Set())) return
    checkJson(value, path, 0, new Set())
  } else {
    if (quickAdvanced(value, 0, new Set())) return
    checkAdvanced(value, path, 0, new Set())
  }
}

/** True when JSON carries `value` unchanged (may say false where checkJson finds nothing). */
function quickJson(value: unknown, depth: number, stack: Set<object>): boolean {
  switch (typeof value) {
    case 'string':
    case 'boolean':
    case 'undefined':
      return true
    case 'number':
      return Number.isFinite(value)
    case 'object':
      break
    default:
      return false
  }
  if (value === null) return true
  if (depth > MAX_DEPTH || stack.has(value)) return false
  stack.add(value)
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const item: unknown = value[i]
      if (item === undefined || !quickJson(item, depth + 1, stack)) return false
    }
  } else {
    const proto = Object.getPrototypeOf(value) as unknown
    if (proto !== Object.prototype && proto !== null) return false
    for (const key in value) {
      if (!quickJson((value as Record<string, unknown>)[key], depth + 1, stack)) return false
    }
  }
  stack.delete(value)
  return true
}

/** True when structured clone carries `value` with its types (may say false too often). */
function quickAdvanced(value: unknown, depth: number, seen: Set<object>): boolean {
  switch (typeof value) {
    case 'function':
    case 'symbol':
      return false
    case 'object':
      break
    default:
      return true
  }
  if (value === null || seen.has(value)) return true
  if (depth > MAX_DEPTH) return false
  seen.add(value)
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++)
      if (!quickAdvanced(value[i], depth + 1, seen)) return false
    return true
  }
  const proto = Object.getPrototypeOf(value) as unknown
  if (proto === Object.prototype || proto === null) {
    for (const key in value) {
      if (!quickAdvanced((value as Record<string, unknown>)[key], depth + 1, seen)) return false
    }
    return true
  }
  if (ArrayBuffer.isView(value)) return true
  // Map, Set and the other built-ins: the full check handles them.
  return false
}

function fail(path: string, mode: Serialization, rule: string): never {
  throw new NotSerializableError(path, mode, rule)
}

function typeName(value: object): string {
  const proto = Object.getPrototypeOf(value) as { constructor?: { name?: string } } | null
  return proto?.constructor?.name || 'an object without a class name'
}

const JSON_HINT =
  "JSON carries plain objects, arrays, strings, finite numbers, booleans and null; start the cluster with serialization: 'advanced' to carry"

function checkJson(value: unknown, path: string, depth: number, stack: Set<object>): void {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return
    case 'number':
      if (!Number.isFinite(value))
        fail(path, 'json', `${value} is not a finite number (JSON makes it null).`)
      return
    case 'undefined':
      return
    case 'bigint':
      fail(path, 'json', `a BigInt. ${JSON_HINT} BigInt.`)
    // falls through (fail never returns)
    case 'function':
      fail(path, 'json', 'a function cannot be carried.')
    // falls through
    case 'symbol':
      fail(path, 'json', 'a symbol cannot be carried.')
  }
  if (value === null) return
  const object = value as object
  if (depth > MAX_DEPTH) fail(path, 'json', `nested deeper than ${MAX_DEPTH} levels.`)
  if (stack.has(object)) fail(path, 'json', 'a cyclic reference (JSON cannot carry cycles).')
  stack.add(object)
  if (Array.isArray(object)) {
    for (let i = 0; i < object.length; i++) {
      const item: unknown = object[i]
      if (item === undefined)
        fail(`${path}[${i}]`, 'json', 'undefined in an array (JSON makes it null).')
      checkJson(item, `${path}[${i}]`, depth + 1, stack)
    }
  } else {
    const proto = Object.getPrototypeOf(object) as unknown
    if (proto !== Object.prototype && proto !== null) {
      fail(
        path,
        'json',
        `a ${typeName(object)}. ${JSON_HINT} Map, Set, Date, BigInt and typed arrays.`,
      )
    }
    for (const key in object) {
      checkJson(
        (object as Record<string, unknown>)[key],
        `${path}${propertyPath(key)}`,
        depth + 1,
        stack,
      )
    }
  }
  stack.delete(object)
}

function checkAdvanced(value: unknown, path: string, depth: number, seen: Set<object>): void {
  switch (typeof value) {
    case 'function':
      fail(path, 'advanced', 'a function cannot be carried.')
    // falls through
    case 'symbol':
      fail(path, 'advanced', 'a symbol cannot be carried.')
    // falls through
    case 'object':
      break
    default:
      return
  }
  if (value === null) return
  const object = value
  // Cycles and shared references are fine for structured clone; visit each object once.
  if (seen.has(object)) return
  if (depth > MAX_DEPTH) fail(path, 'advanced', `nested deeper than ${MAX_DEPTH} levels.`)
  seen.add(object)
  if (Array.isArray(object)) {
    for (let i = 0; i < object.length; i++)
      checkAdvanced(object[i], `${path}[${i}]`, depth + 1, seen)
    return
  }
  if (object instanceof Map) {
    let i = 0
    for (const [k, v] of object) {
      checkAdvanced(k, `${path}.<key ${i}>`, depth + 1, seen)
      checkAdvanced(v, `${path}.get(${describeKey(k)})`, depth + 1, seen)
      i++
    }
    return
  }
  if (object instanceof Set) {
    let i = 0
    for (const v of object) checkAdvanced(v, `${path}.<item ${i++}>`, depth + 1, seen)
    return
  }
  if (ArrayBuffer.isView(object)) return
  const proto = Object.getPrototypeOf(object) as unknown
  if (proto !== Object.prototype && proto !== null) {
    if (!CLONABLE.some((type) => object instanceof type)) {
      fail(
        path,
        'advanced',
        `a ${typeName(object)}: structured clone carries plain objects, arrays, Map, Set, Date, RegExp, BigInt, Error, ArrayBuffer and typed arrays, and would drop this class.`,
      )
    }
    return
  }
  for (const key in object) {
    checkAdvanced(
      (object as Record<string, unknown>)[key],
      `${path}${propertyPath(key)}`,
      depth + 1,
      seen,
    )
  }
}

function propertyPath(key: string): string {
  return /^[A-Za-z_$][\w$]*$/.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`
}

function describeKey(key: unknown): string {
  if (typeof key === 'string') return JSON.stringify(key)
  if (typeof key === 'number' || typeof key === 'boolean') return String(key)
  if (typeof key === 'bigint') return `${key}n`
  return '…'
}

/** A copy as the other side would see it, for calls that run in the calling process. */
export function copyValue<T>(value: T, mode: Serialization): T {
  if (value === undefined) return value
  return mode === 'advanced' ? structuredClone(value) : (JSON.parse(JSON.stringify(value)) as T)
}
