/**
 * The one way conclave runs a Lua script on Redis, for the backend and for fencedWrite: EVALSHA
 * (the server keeps the text after the first EVAL), falling back on NOSCRIPT, which a restarted
 * or failed-over server, or a SCRIPT FLUSH, answers. Takes any client with ioredis' methods (a
 * `Redis` or a `Cluster`); ioredis is not imported here.
 */
import { createHash } from 'node:crypto'

/** The part of an ioredis client (Redis or Cluster) that runs scripts. */
export interface ScriptClient {
  evalsha(sha: string, numKeys: number, ...args: (string | number | Buffer)[]): Promise<unknown>
  eval(script: string, numKeys: number, ...args: (string | number | Buffer)[]): Promise<unknown>
}

/** What runPipelined needs besides: a pipeline and SCRIPT LOAD (ioredis' `Redis`). */
export interface PipelineClient {
  pipeline(): {
    evalsha(sha: string, numKeys: number, ...args: (string | number | Buffer)[]): unknown
    eval(script: string, numKeys: number, ...args: (string | number | Buffer)[]): unknown
    call(command: string, ...args: (string | number)[]): unknown
    exec(): Promise<[Error | null, unknown][] | null>
  }
  script(subcommand: 'LOAD', source: string): Promise<unknown>
}

/** A script's text and the SHA1 that EVALSHA names it by. */
export interface Script {
  /** For messages: `acquire`, `fenced-write`... */
  readonly name: string
  /** The text the server runs (for EVAL and SCRIPT LOAD). */
  readonly source: string
  /** The SHA1 of `source`, in hex (computed once, at first use). */
  readonly sha: string
}

/** A Script of `source`; its SHA1 is computed when first asked for, so importing costs nothing. */
export function defineScript(name: string, source: string): Script {
  let sha: string | undefined
  return {
    name,
    source,
    get sha() {
      return (sha ??= createHash('sha1').update(source).digest('hex'))
    },
  }
}

/** Whether a script call failed because the server does not have that script cached. */
export function isNoScript(error: unknown): boolean {
  return error instanceof Error && error.message.startsWith('NOSCRIPT')
}

/** WAIT after a pipeline's scripts: how many replicas must acknowledge, within how long. */
export interface ReplicaWait {
  replicas: number
  timeoutMs: number
}

/** One script call's keys and arguments. */
export type ScriptCall = [keys: readonly string[], args: readonly (string | Buffer)[]]

/**
 * Runs `script` by EVALSHA; on NOSCRIPT (not cached on this server: a restart, a failover, a
 * SCRIPT FLUSH) by EVAL, which also caches it again. Other errors are thrown as they are.
 */
export async function runScript(
  client: ScriptClient,
  script: Script,
  keys: readonly string[],
  args: readonly (string | Buffer)[],
): Promise<unknown> {
  try {
    return await client.evalsha(script.sha, keys.length, ...keys, ...args)
  } catch (error) {
    if (!isNoScript(error)) throw error
    return await client.eval(script.source, keys.length, ...keys, ...args)
  }
}

/**
 * Runs `script` once per call in one pipeline (one round trip), followed by `WAIT` when `wait`
 * is given; if any call found the script missing, loads it with SCRIPT LOAD (or, with
 * `evalOnRetry`, sends its text by EVAL) and runs the whole pipeline again, so only scripts that are harmless to run twice (a renewal only sets the same
 * lease again) may come here. Resolves with each call's [error, reply], in order, and the
 * replicas WAIT counted (undefined without `wait`).
 */
export async function runPipelined(
  client: PipelineClient,
  script: Script,
  calls: readonly ScriptCall[],
  wait?: ReplicaWait,
  evalOnRetry = false,
): Promise<[Error | null, unknown][] & { acked?: number }> {
  let results = await pipelined(client, script, calls, wait, false)
  if (results.some(([error]) => isNoScript(error))) {
    // A Cluster's SCRIPT LOAD reaches one node, not necessarily the pipeline's: EVAL there.
    if (!evalOnRetry) await client.script('LOAD', script.source)
    results = await pipelined(client, script, calls, wait, evalOnRetry)
  }
  return results
}

/**
 * One script call followed by WAIT in one round trip (EVALSHA, or EVAL after NOSCRIPT, as
 * runScript): the reply and how many replicas acknowledged the writes made so far.
 */
export async function runScriptWaiting(
  client: PipelineClient,
  script: Script,
  keys: readonly string[],
  args: readonly (string | Buffer)[],
  wait: ReplicaWait,
): Promise<{ reply: unknown; acked: number }> {
  let [[error, reply], acked] = await waited(client, script, keys, args, wait, false)
  if (isNoScript(error))
    [[error, reply], acked] = await waited(client, script, keys, args, wait, true)
  if (error) throw error
  return { reply, acked }
}

async function waited(
  client: PipelineClient,
  script: Script,
  keys: readonly string[],
  args: readonly (string | Buffer)[],
  wait: ReplicaWait,
  withSource: boolean,
): Promise<[[Error | null, unknown], number]> {
  const pipeline = client.pipeline()
  if (withSource) pipeline.eval(script.source, keys.length, ...keys, ...args)
  else pipeline.evalsha(script.sha, keys.length, ...keys, ...args)
  pipeline.call('WAIT', wait.replicas, wait.timeoutMs)
  const results = await pipeline.exec()
  if (!results) throw new Error('the pipeline was discarded')
  const [, [waitError, acked]] = results as [[Error | null, unknown], [Error | null, unknown]]
  if (waitError) throw waitError
  return [results[0]!, Number(acked)]
}

async function pipelined(
  client: PipelineClient,
  script: Script,
  calls: readonly ScriptCall[],
  wait: ReplicaWait | undefined,
  withSource: boolean,
): Promise<[Error | null, unknown][] & { acked?: number }> {
  const pipeline = client.pipeline()
  for (const [keys, args] of calls) {
    if (withSource) pipeline.eval(script.source, keys.length, ...keys, ...args)
    else pipeline.evalsha(script.sha, keys.length, ...keys, ...args)
  }
  if (wait) pipeline.call('WAIT', wait.replicas, wait.timeoutMs)
  const results = await pipeline.exec()
  if (!results) throw new Error('the pipeline was discarded')
  if (!wait) return results
  const [waitError, acked] = results.pop()!
  if (waitError) throw waitError
  return Object.assign(results, { acked: Number(acked) })
}
