/**
 * Health of every worker, from any process. Each worker answers with its health check (set by
 * `onHealthCheck`; by default "alive"); a worker that throws, reports unhealthy or does not
 * answer in time makes the whole report unhealthy.
 */
import { OptionsError } from '../errors.js'
import type { ProcessAgent } from './agent.js'
import { HEALTH_HANDLER } from './handlers.js'
import type { CallOptions } from './options.js'
import { getAgent } from './default.js'

/** What a health check returns: a boolean, or an object with `ok` and any JSON details. */
export type HealthResult = boolean | { ok: boolean; [detail: string]: unknown }

/** One worker's answer to a cluster health check. */
export interface WorkerHealth {
  workerId: number
  pid: number
  ok: boolean
  /** healthy, unhealthy (the check said so or threw), silent (no answer: timeout or exit). */
  status: 'healthy' | 'unhealthy' | 'silent'
  detail?: unknown
  error?: Error
}

/** The health of every worker, as `clusterHealth()` answers. */
export interface ClusterHealth {
  /** True when there is at least one worker and every worker answered healthy. */
  ok: boolean
  workers: WorkerHealth[]
}

/** Sets this process's health check (replacing the default "alive"). */
export function onHealthCheck(
  check: () => HealthResult | Promise<HealthResult>,
  options: { agent?: ProcessAgent } = {},
): void {
  if (typeof check !== 'function') {
    throw new OptionsError(
      'check',
      check,
      'A health check is a function returning a boolean or { ok }.',
    )
  }
  const agent = options.agent ?? getAgent()
  agent.register(HEALTH_HANDLER, async () => normalize(await check()), { replace: true })
}

function normalize(result: unknown): { ok: boolean; [detail: string]: unknown } {
  if (typeof result === 'boolean') return { ok: result }
  if (
    typeof result === 'object' &&
    result !== null &&
    typeof (result as { ok?: unknown }).ok === 'boolean'
  ) {
    return result as { ok: boolean }
  }
  return { ok: false, reason: 'the health check returned neither a boolean nor { ok }' }
}

/**
 * Asks every worker's health check (`onHealthCheck`); a worker that does not answer in time is
 * reported silent.
 */
export async function clusterHealth(
  options: CallOptions & { agent?: ProcessAgent } = {},
): Promise<ClusterHealth> {
  const { agent: given, ...callOptions } = options
  const agent = given ?? getAgent()
  const entries = await agent.gather<{ ok: boolean }>(HEALTH_HANDLER, [], callOptions)
  const workers = entries.map((entry): WorkerHealth => {
    const peer = { workerId: entry.workerId, pid: entry.pid }
    if (!entry.ok) {
      const code = (entry.error as { code?: unknown }).code
      const silent =
        code === 'ERR_CONCLAVE_AGENT_TIMEOUT' || code === 'ERR_CONCLAVE_AGENT_WORKER_LOST'
      return { ...peer, ok: false, status: silent ? 'silent' : 'unhealthy', error: entry.error }
    }
    const result = normalize(entry.value)
    return { ...peer, ok: result.ok, status: result.ok ? 'healthy' : 'unhealthy', detail: result }
  })
  return { ok: workers.length > 0 && workers.every((w) => w.ok), workers }
}
