export { Election, type ElectionEvents } from './election.js'
export { Term } from './term.js'
export type { ElectionOptions, ResolvedOptions } from './options.js'
export type {
  AcquireRequest,
  AcquireResult,
  Backend,
  Holder,
  Json,
  ReleaseRequest,
  RenewRequest,
  Unwatch,
} from './backend.js'
export {
  validateAcquire,
  validateCandidate,
  validateMetadata,
  validateRelease,
  validateRenew,
  validateResource,
} from './validate.js'
export { type Clock, systemClock } from './clock.js'
export {
  BackendError,
  BusyError,
  ConclaveError,
  ElectionClosedError,
  LeadershipLostError,
  OptionsError,
  ProtocolError,
  type TermEndReason,
} from './errors.js'
export { MemoryBackend, memoryBackend, type MemoryBackendOptions } from './backends/memory.js'
export {
  every,
  type EveryContext,
  type EveryOptions,
  Singleton,
  type SingletonEvents,
  type SingletonHandlers,
  singletonService,
  type SingletonState,
  type SingletonStopReason,
  singletonWorker,
} from './singleton.js'
export { type Closable, closeOnSignals, Shutdown, type ShutdownOptions } from './lifecycle.js'
export {
  type ElectionHealth,
  HealthCheck,
  healthCheck,
  type HealthOptions,
  type HealthReport,
} from './health.js'
export {
  ElectionMetrics,
  electionMetrics,
  type ElectionMetricsOptions,
  type MetricsRegistry,
} from './metrics.js'
