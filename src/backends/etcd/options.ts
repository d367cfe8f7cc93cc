/** Options of the etcd backend: what they are, their defaults, and the rules they must follow. */
import type { IOptions, Namespace } from 'etcd3'
import { describe, OptionsError } from '../../errors.js'
import { checkOptions, milliseconds, optionalMilliseconds, shownValue } from '../../validate.js'
import { redactUrl } from '../kit.js'

/** What etcdBackend() takes: your client or the endpoints, and the key prefix and call deadline. */
export interface EtcdBackendOptions {
  /**
   * Your etcd3 client (an `Etcd3`, or a namespace of one: keys then live under its namespace
   * too). close() leaves it open. Do not also give `hosts`.
   */
  client?: Namespace
  /**
   * Or the etcd endpoints (`http://127.0.0.1:2379`, or `host:port`): the backend makes its own
   * client (etcd3 must be installed) and closes it on close().
   */
  hosts?: string | string[]
  /** etcd3 options for the client made from `hosts` (merged over the backend's defaults). */
  clientOptions?: Omit<IOptions, 'hosts'>
  /** Prepended to every key. Default `conclave/`. */
  prefix?: string
  /**
   * Each etcd call fails after this many ms without an answer (renewals after at most the lease),
   * whatever the client's own settings; every operation is safe to retry. Default 5000.
   */
  timeoutMs?: number
  /**
   * With several `hosts`: each call goes to one member (the last that answered) and, after
   * this many ms without an answer or on an error, to the next, each member once, within
   * `timeoutMs`. A renewal gives each member a tenth of the lease (at least 250 ms) when that
   * is less, so one hung or dead member never costs a term. Default 1000 (capped at timeoutMs).
   */
  memberTimeoutMs?: number
}

/** The options checked, with the defaults filled in and hosts as URLs. */
export interface ResolvedEtcdOptions {
  client: Namespace | undefined
  hosts: string[] | undefined
  clientOptions: Omit<IOptions, 'hosts'>
  prefix: string
  timeoutMs: number
  memberTimeoutMs: number
}

const KNOWN = ['client', 'hosts', 'clientOptions', 'prefix', 'timeoutMs', 'memberTimeoutMs']

/** Where keys live when no prefix is given. */
export const DEFAULT_PREFIX = 'conclave/'
/** The call deadline when none is given. */
export const DEFAULT_TIMEOUT_MS = 5_000
/** How long one member gets before a call moves to the next, when none is given. */
export const DEFAULT_MEMBER_TIMEOUT_MS = 1_000

const PREFIX = /^[\x21-\x7e]{0,100}$/
const HOST = /^(https?:\/\/)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}$/

/** Checks every option (unknown ones too, never echoing a secret) and fills in the defaults. */
export function resolveEtcdOptions(options: unknown): ResolvedEtcdOptions {
  const o = checkOptions(options as Record<string, unknown>, KNOWN, 'etcd backend', ETCD_TAKES)
  if ((o.client === undefined) === (o.hosts === undefined)) {
    throw new OptionsError(
      o.client === undefined ? 'client' : 'hosts',
      o.client === undefined ? undefined : 'both client and hosts',
      'Give exactly one of client (your etcd3 client, e.g. new Etcd3({ hosts })) or hosts (endpoints, e.g. "http://127.0.0.1:2379").',
    )
  }
  let client: Namespace | undefined
  if (o.client !== undefined) {
    const c = o.client as Partial<Record<'kv' | 'leaseClient' | 'watch' | 'prefix', unknown>>
    if (
      typeof c !== 'object' ||
      c === null ||
      typeof c.kv !== 'object' ||
      typeof c.leaseClient !== 'object' ||
      typeof c.watch !== 'function' ||
      !Buffer.isBuffer(c.prefix)
    ) {
      throw new OptionsError(
        'client',
        o.client,
        'client must be an etcd3 client (new Etcd3({ hosts }) from the etcd3 package, 1.x) or a namespace of one.',
      )
    }
    client = o.client as Namespace
  }
  let hosts: string[] | undefined
  if (o.hosts !== undefined) {
    const list = typeof o.hosts === 'string' ? [o.hosts] : o.hosts
    if (
      !Array.isArray(list) ||
      list.length === 0 ||
      !list.every((h) => typeof h === 'string' && HOST.test(h))
    ) {
      throw new OptionsError(
        'hosts',
        // An endpoint with user info in it may hold a password: never shown.
        redactHosts(o.hosts),
        'hosts is an endpoint or a non-empty array of endpoints, each "host:port" or "http(s)://host:port".',
      )
    }
    hosts = (list as string[]).map((h) => (/^https?:\/\//.test(h) ? h : `http://${h}`))
  }
  if (
    o.clientOptions !== undefined &&
    (typeof o.clientOptions !== 'object' || o.clientOptions === null || client !== undefined)
  ) {
    throw new OptionsError(
      'clientOptions',
      o.clientOptions,
      client !== undefined
        ? 'clientOptions applies only to the client made from hosts; configure your own client directly.'
        : 'clientOptions must be an object of etcd3 options.',
    )
  }
  const prefix = o.prefix === undefined ? DEFAULT_PREFIX : o.prefix
  if (typeof prefix !== 'string' || !PREFIX.test(prefix)) {
    throw new OptionsError(
      'prefix',
      o.prefix,
      'prefix must be 0 to 100 printable ASCII characters without spaces.',
    )
  }
  const timeoutMs = optionalMilliseconds('timeoutMs', o.timeoutMs, DEFAULT_TIMEOUT_MS, 10, 600_000)
  const memberTimeoutMs = Math.min(
    timeoutMs,
    optionalMilliseconds(
      'memberTimeoutMs',
      o.memberTimeoutMs,
      DEFAULT_MEMBER_TIMEOUT_MS,
      10,
      600_000,
    ),
  )
  return {
    client,
    hosts,
    clientOptions: o.clientOptions ?? {},
    prefix,
    timeoutMs,
    memberTimeoutMs,
  }
}

/**
 * etcd3 fault handling for a client the backend makes: no retries and no circuit breaker, since
 * the election core retries with its own backoff, and a breaker left open for 5 s after a blip
 * would outlast a short lease.
 */
const PASS_THROUGH = {
  execute: <T>(fn: (context: { signal: AbortSignal; attempt: number }) => PromiseLike<T> | T) =>
    Promise.resolve().then(() => fn({ signal: new AbortController().signal, attempt: 1 })),
  onSuccess: () => ({ dispose() {} }),
  onFailure: () => ({ dispose() {} }),
} as unknown as NonNullable<NonNullable<IOptions['faultHandling']>['global']>

type WatchBackoff = NonNullable<NonNullable<IOptions['faultHandling']>['watchBackoff']>

/**
 * Watch reconnects for a client the backend makes: 100 ms doubling up to 1 s, jittered (etcd3's
 * default grows to 30 s, so a waiter could sleep through many leases after an outage).
 */
function watchBackoff(attempt = 0): WatchBackoff {
  return {
    duration: Math.min(1_000, 100 * 2 ** attempt) * (0.5 + Math.random() / 2),
    next: () => watchBackoff(Math.min(attempt + 1, 10)),
  }
}

/**
 * What a client made from `hosts` starts with, and what to give your own client for the same
 * fast recovery: `new Etcd3({ hosts, ...ETCD_CLIENT_DEFAULTS })`.
 */
export const ETCD_CLIENT_DEFAULTS: Readonly<Pick<IOptions, 'faultHandling'>> = Object.freeze({
  faultHandling: Object.freeze({
    global: PASS_THROUGH,
    host: () => PASS_THROUGH,
    watchBackoff: watchBackoff(),
  }),
})

/**
 * gRPC keepalive for the clients the backend makes: a connection to a member that stopped
 * answering (a hung process, a dead host, a half-open path) is found and dropped within ~12 s,
 * so a watch on it moves to another member. etcd refuses pings more often than every 5 s
 * (its --grpc-keepalive-min-time), so 10 s it is; calls are guarded by their own deadlines.
 */
export const ETCD_GRPC_KEEPALIVE: Readonly<Record<string, number>> = Object.freeze({
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 2_000,
})

const URL_PARAMS = ['prefix', 'timeoutMs', 'memberTimeoutMs']
const ETCD_TAKES =
  'etcdBackend takes an options object: { client } (your etcd3 client) or { hosts }.'

function redactHosts(hosts: unknown): unknown {
  const one = (h: unknown) =>
    typeof h === 'string' ? h.replace(/^((?:https?:\/\/)?)[^/@]*@/i, '$1***@') : h
  return Array.isArray(hosts) ? hosts.map(one) : one(hosts)
}

/**
 * `etcd://host:port[,host:port...][/][?prefix=...&timeoutMs=...]` to options. Written by hand:
 * WHATWG URL parsing rejects the comma-separated host list.
 */
export function optionsFromUrl(url: unknown, field = 'backend'): EtcdBackendOptions {
  const rule =
    'An etcd backend URL is etcd://host:port[,host:port...][?prefix=...&timeoutMs=...&memberTimeoutMs=...] (e.g. etcd://127.0.0.1:2379).'
  if (typeof url !== 'string') throw new OptionsError(field, url, rule)
  const shown = redactUrl(url)
  const match = /^etcd:\/\/([^/?#]+)\/?(\?[^#]*)?$/i.exec(url)
  if (!match) throw new OptionsError(field, shown, rule)
  if (match[1]!.includes('@')) {
    throw new OptionsError(
      field,
      shown,
      'An etcd backend URL carries no credentials.',
      'Give them to etcdBackend({ hosts, clientOptions: { auth: { username, password } } }).',
    )
  }
  const hosts = match[1]!.split(',')
  if (!hosts.every((h) => HOST.test(h) && !/^https?:/.test(h))) {
    throw new OptionsError(
      field,
      shown,
      `${rule} Each host is host:port; got ${describe(match[1])}.`,
    )
  }
  const options: EtcdBackendOptions = { hosts: hosts.map((h) => `http://${h}`) }
  const params = new URLSearchParams(match[2] ?? '')
  for (const key of new Set(params.keys())) {
    const values = params.getAll(key)
    if (!URL_PARAMS.includes(key)) {
      throw new OptionsError(
        key,
        shownValue(key, values.length > 1 ? values : values[0]),
        `"${key}" is not a parameter of etcd backend URLs.`,
        `Known: ${URL_PARAMS.join(', ')}.`,
      )
    }
    if (values.length > 1) {
      throw new OptionsError(key, values, `Give the ${key} parameter once.`)
    }
    const value = values[0]!
    if (key === 'prefix') options.prefix = value
    if (key === 'timeoutMs' || key === 'memberTimeoutMs') {
      // Digits only (Number() would take "1e3" or " 5"); anything else fails with the rule.
      options[key] = /^\d+$/.test(value) ? Number(value) : milliseconds(key, value, 10, 600_000)
    }
  }
  return options
}
