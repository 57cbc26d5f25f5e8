// What core's index (so `eskit/adapter`) exports of the stream lifecycle: the public types, and what an
// adapter's `writeLifecycle` needs to write the lifecycle event as the bundled adapters do. The root
// entry picks the public names from here. lifecycle.ts also holds the argument checks only
// EventStoreBase runs. The errors (StreamDeletedError, StreamNotFoundError) come from errors.ts.
export {
  RESERVED_TYPE_PREFIX,
  STREAM_ARCHIVED,
  STREAM_DELETED,
  STREAM_TRUNCATED,
  SUBJECT_FORGOTTEN,
  SUBJECT_TYPE_PREFIX,
  isLifecycleType,
  subjectStreamId,
  lifecycleData,
  lifecycleType,
  truncateBeyondVersion,
} from './lifecycle.js';
export type {
  AppendsAfterDelete,
  ArchiveStreamOptions,
  StreamArchivedData,
  DeleteStreamOptions,
  LifecycleRequest,
  LifecycleResult,
  LifecycleWritten,
  StreamDeletedData,
  StreamLifecycleEvent,
  StreamTruncatedData,
  SubjectForgottenData,
  SubjectForgottenEvent,
  TruncateStreamOptions,
} from './lifecycle.js';
