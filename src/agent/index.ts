/**
 * `conclave/agent`: run code in one designated process of a node:cluster app, ask every
 * worker, tell every worker; cluster-wide Prometheus metrics and health on top. See docs/agent.md.
 */
export { type AgentEvents, type GatherEntry, ProcessAgent } from './agent.js'
export { type AgentOptions, type CallOptions, DESIGNATED_RESOURCE } from './options.js'
export { type CallContext, currentCall, type Handler, HEALTH_HANDLER } from './handlers.js'
export {
  broadcast,
  call,
  gather,
  getAgent,
  handle,
  runInPrimary,
  startAgent,
  stopAgent,
} from './default.js'
export { RunInPrimary, type RunInPrimaryOptions } from './decorator.js'
export {
  AgentClosedError,
  AgentDisconnectedError,
  AgentError,
  AgentStartedError,
  AgentTimeoutError,
  DesignatedLostError,
  NoHandlerError,
  NoIpcError,
  NotDesignatedError,
  NotSerializableError,
  RemoteError,
  WorkerLostError,
} from '../errors.js'
export {
  clusterMetrics,
  type ClusterMetricsOptions,
  type ClusterMetricsResult,
  collectClusterMetrics,
  METRICS_HANDLER,
  type MetricJson,
  type RegistryLike,
  shareMetrics,
} from './metrics.js'
export {
  clusterHealth,
  type ClusterHealth,
  type HealthResult,
  onHealthCheck,
  type WorkerHealth,
} from './health.js'
export { assertCarriable, type Serialization } from './serialize.js'
export type { Peer } from './protocol.js'
