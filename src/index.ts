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
} from './backend.js'
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
