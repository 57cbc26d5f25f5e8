// The public names of the stream lifecycle (lifecycle.ts also holds what only the adapters use).
export { RESERVED_TYPE_PREFIX, STREAM_DELETED, STREAM_TRUNCATED, isLifecycleType } from './lifecycle.js';
export type {
  AppendsAfterDelete,
  DeleteStreamOptions,
  LifecycleRequest,
  LifecycleResult,
  LifecycleWritten,
  StreamDeletedData,
  StreamLifecycleEvent,
  StreamTruncatedData,
  TruncateStreamOptions,
} from './lifecycle.js';
export { StreamDeletedError, StreamNotFoundError } from './errors.js';
