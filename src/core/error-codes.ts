// The ground of every eskit error: its codes, the base class, and the check by code. errors.ts holds
// the classes and re-exports these: import from there. Apart, so that a file of error classes can
// build on the base without importing the module that re-exports it (an import cycle).

/**
 * Every error eskit raises carries a stable `code`. Check the code (or use `isEskitError`), not
 * `instanceof` alone: two copies of the package in one process break `instanceof`.
 */
export const ErrorCode = {
  Concurrency: 'ESKIT_CONCURRENCY',
  InvalidArgument: 'ESKIT_INVALID_ARGUMENT',
  UnknownEventType: 'ESKIT_UNKNOWN_EVENT_TYPE',
  EventValidation: 'ESKIT_EVENT_VALIDATION',
  Serialization: 'ESKIT_SERIALIZATION',
  CorruptEvent: 'ESKIT_CORRUPT_EVENT',
  StoreClosed: 'ESKIT_STORE_CLOSED',
  StoreBusy: 'ESKIT_STORE_BUSY',
  MissingDriver: 'ESKIT_MISSING_DRIVER',
  DuplicateEventId: 'ESKIT_DUPLICATE_EVENT_ID',
  Fenced: 'ESKIT_FENCED',
  AlreadyStarted: 'ESKIT_ALREADY_STARTED',
  HandlerFailed: 'ESKIT_HANDLER_FAILED',
  LockUnavailable: 'ESKIT_LOCK_UNAVAILABLE',
  Timeout: 'ESKIT_TIMEOUT',
  PermanentFailure: 'ESKIT_PERMANENT_FAILURE',
  Migration: 'ESKIT_MIGRATION',
  Connection: 'ESKIT_CONNECTION',
  /** A checkpoint reset refused (unknown name, a view, a held lock): see ResetRefusedError in admin.ts. */
  ResetRefused: 'ESKIT_RESET_REFUSED',
  /** A partitioned runner met another partition count (a live node, or stored checkpoints): see PartitionCountError. */
  PartitionCount: 'ESKIT_PARTITION_COUNT',
  // Snapshots (issue 19).
  /** A stored snapshot row is not JSON: see CorruptSnapshotError. A command handler ignores it and replays. */
  CorruptSnapshot: 'ESKIT_CORRUPT_SNAPSHOT',
  /** A stream's first events are gone (truncated) and no usable snapshot covers them: see StreamHistoryMissingError. */
  StreamHistoryMissing: 'ESKIT_STREAM_HISTORY_MISSING',
  // Stream lifecycle (issue 19).
  /** An append to a stream deleted with `appends: 'refuse'`: see StreamDeletedError. */
  StreamDeleted: 'ESKIT_STREAM_DELETED',
  /** deleteStream or truncateStream of a stream that has no events: see StreamNotFoundError. */
  StreamNotFound: 'ESKIT_STREAM_NOT_FOUND',
  // Schema evolution (issue 19).
  /** An EventRegistry's definitions contradict each other (a gap in a version chain, a rename clash): see RegistryDefinitionError. */
  RegistryDefinition: 'ESKIT_REGISTRY_DEFINITION',
  /** An append (or a typed read's filter) named a type that was renamed or split: see RetiredEventTypeError. */
  RetiredEventType: 'ESKIT_RETIRED_EVENT_TYPE',
  // Personal data (issue 20).
  /** Personal data appended for a subject that was forgotten, with no new key allowed: see SubjectForgottenError. */
  SubjectForgotten: 'ESKIT_SUBJECT_FORGOTTEN',
  /** A personal field's key id is unknown to the key store (lost, or another store's): see SubjectKeyMissingError. */
  SubjectKeyMissing: 'ESKIT_SUBJECT_KEY_MISSING',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class EskitError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** True when `error` is an eskit error, optionally with the given code. Works across package copies. */
export function isEskitError(error: unknown, code?: string): error is EskitError {
  if (typeof error !== 'object' || error === null) return false;
  const actual = (error as { code?: unknown }).code;
  if (typeof actual !== 'string' || !actual.startsWith('ESKIT_')) return false;
  return code === undefined || actual === code;
}
