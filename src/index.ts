export { Election, type ElectionEvents, type WaitingInfo } from './election.js'
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
  WatchChange,
  EndedGrant,
  WaitReason,
  Waiter,
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
// Every error class of the package (the catalogue, src/errors.ts); the agent's and the fence's
// are also exported from conclave/agent and conclave/fence.
export {
  AgentClosedError,
  AgentDisconnectedError,
  AgentError,
  AgentStartedError,
  AgentTimeoutError,
  BackendClosedError,
  BackendError,
  BackendTimeoutError,
  BusyError,
  CandidateInUseError,
  ClosedError,
  ConclaveError,
  DesignatedLostError,
  ElectionClosedError,
  type ErrorCode,
  LeadershipLostError,
  MissingPeerError,
  NoHandlerError,
  NoIpcError,
  NotDesignatedError,
  NotPrimaryError,
  NotSerializableError,
  OptionsError,
  Pm2Error,
  ProtocolError,
  REDIS_EVICTION_WARNING,
  ETCD_VERSION_WARNING,
  REDIS_KEYSPACE_WARNING,
  RemoteError,
  RemoteHubError,
  SchemaOldError,
  SchemaTooNewError,
  STANDALONE_CLUSTER_WARNING,
  StaleTokenError,
  type TermEndReason,
  TicketsMismatchError,
  UsageError,
  WorkError,
  WorkerLostError,
  RedisClusterError,
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
export { CHANNELS, type TraceBase, type TraceMessages, type TraceStep } from './trace.js'
export {
  type FireContext,
  type MissedPolicy,
  schedule,
  Schedule,
  type ScheduleEvents,
  type ScheduleOptions,
  singletonCron,
} from './schedule.js'
export type { RecordStore, StoredRecord, WriteRecordRequest, WriteRecordResult } from './backend.js'
