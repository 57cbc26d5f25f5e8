/**
 * Every error class eskit raises; each carries a stable `code` (error-codes.ts). Check the code (or
 * use `isEskitError`), not `instanceof` alone: two copies of the package in one process break it.
 */
import { ErrorCode, EskitError } from './error-codes.js';

export { ErrorCode, EskitError, isEskitError } from './error-codes.js';
export { SubjectForgottenError, SubjectKeyMissingError } from './personal/errors.js';

export class ConcurrencyError extends EskitError {
  /**
   * Set when a command handler gave up: how many times it loaded, decided and tried to append
   * (`cause` is the last conflict). Undefined for the conflict of a single append.
   */
  readonly attempts: number | undefined;
  constructor(
    readonly streamId: string,
    readonly expectedVersion: string | number,
    /** The stream's version when the write was attempted (0 when the stream does not exist). */
    readonly actualVersion: number,
    options?: { attempts?: number; cause?: unknown },
  ) {
    const attempts = options?.attempts;
    super(
      ErrorCode.Concurrency,
      `Stream "${streamId}" is at version ${actualVersion}, expected ${String(expectedVersion)}. ` +
        (attempts === undefined
          ? 'Another writer got there first: reload the stream and decide again.'
          : `The command gave up after ${attempts} attempt${attempts === 1 ? '' : 's'}: another writer (another process, or another ` +
            'store object on the same database) appended to the stream between each read and write. Commands to one stream ' +
            'through one store object queue instead of conflicting; raise retry.maxAttempts, or send this stream\'s commands to one process.'),
      options?.cause === undefined ? undefined : { cause: options.cause },
    );
    this.attempts = attempts;
  }
}

export class InvalidArgumentError extends EskitError {
  constructor(message: string) {
    super(ErrorCode.InvalidArgument, message);
  }
}

export class UnknownEventTypeError extends EskitError {
  constructor(
    readonly eventType: string,
    readonly position?: number,
  ) {
    super(
      ErrorCode.UnknownEventType,
      `Event type "${eventType}"${position === undefined ? '' : ` at position ${position}`} is not in the registry. ` +
        'Register it, or read with { raw: true } to receive events without decoding.',
    );
  }
}

export class EventValidationError extends EskitError {
  constructor(
    readonly eventType: string,
    reason: string,
    options?: { cause?: unknown; position?: number },
  ) {
    super(
      ErrorCode.EventValidation,
      `Event "${eventType}"${options?.position === undefined ? '' : ` at position ${options.position}`} failed validation: ${reason}`,
      options,
    );
  }
}

export class SerializationError extends EskitError {
  /**
   * Where the value was refused, as code would reach it: `data.items[3].price`, `metadata.at`,
   * `type`, `streamId`. Absent when the refusal cannot be pinned to one place.
   */
  readonly path: string | undefined;
  /** `reason` replaces the default explanation (for values that are JSON but the backend refuses). */
  constructor(what: string, options?: { cause?: unknown; reason?: string; path?: string }) {
    super(
      ErrorCode.Serialization,
      options?.reason ?? `${what} is not JSON-serialisable (BigInt, cycles, functions and undefined are not allowed); nothing was written.`,
      options,
    );
    this.path = options?.path;
  }
}

export class CorruptEventError extends EskitError {
  constructor(
    readonly position: number,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(
      ErrorCode.CorruptEvent,
      `The stored event at position ${position} cannot be read: ${reason}. The row was changed outside eskit; repair or remove it.`,
      options,
    );
  }
}

export class StoreClosedError extends EskitError {
  constructor(what = 'event store') {
    super(ErrorCode.StoreClosed, `The ${what} is closed; create a new one to go on.`);
  }
}

/**
 * An adapter's database driver is not installed. eskit lists the drivers as optional peer
 * dependencies, so that an application installs only the one for its database.
 */
export class MissingDriverError extends EskitError {
  constructor(
    /** The package to install, e.g. 'pg'. */
    readonly driver: string,
    /** The eskit entry point that needs it, e.g. 'eskit/postgres'. */
    readonly entryPoint: string,
    /** What to install: the package with a version range when only some versions work. */
    install: string,
    options?: { cause?: unknown },
  ) {
    super(
      ErrorCode.MissingDriver,
      `${entryPoint} needs the "${driver}" package, which is not installed. ` +
        `Install it in your application (npm install ${install}); TypeScript users add @types/${driver} too.`,
      options,
    );
  }
}

export class MigrationError extends EskitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.Migration, message, options);
  }
}

/** Where a failed connection was going: enough to find the mistake, never the password. */
export interface ConnectionTarget {
  host: string;
  port: number;
  database: string;
}

/**
 * A database could not be reached, or a connection to it was lost. `transient` says whether waiting
 * can heal it (refused, reset, timed out, host lookup failed, the server starting up or shutting
 * down): subscriptions and automations retry those, as a restarting database must not stop them for
 * good. Settings that waiting will not fix (the login refused, no such database) are not transient.
 */
export class ConnectionError extends EskitError {
  readonly host: string;
  readonly port: number;
  readonly database: string;
  readonly transient: boolean;
  constructor(target: ConnectionTarget, message: string, options: { cause: unknown; transient: boolean }) {
    super(ErrorCode.Connection, message, { cause: options.cause });
    this.host = target.host;
    this.port = target.port;
    this.database = target.database;
    this.transient = options.transient;
  }
}

export class DuplicateEventIdError extends EskitError {
  constructor(readonly eventId: string) {
    super(
      ErrorCode.DuplicateEventId,
      `An event with id ${eventId} is already stored; nothing was written. Give each event a new id (or omit it).`,
    );
  }
}

/** A write carried a fencing token older than the newest holder's: this node is no longer the leader. */
export class FencedError extends EskitError {
  constructor(
    readonly lockName: string,
    readonly fencingToken: number,
    readonly currentToken: number,
  ) {
    super(
      ErrorCode.Fenced,
      `"${lockName}" is now held with fencing token ${currentToken}; this node's token ${fencingToken} is stale, ` +
        'so its write was rejected. It must stop processing and stand by.',
    );
  }
}

/**
 * A view's write was refused because its tables changed under it. Carries `ESKIT_FENCED`, so the
 * subscription runner treats it as lost leadership: it rolls back, reloads the checkpoint and goes on
 * from there. Users rarely see it (a log line) unless they call the internals themselves.
 * - 'swapped': a rebuild swapped new tables in since this node loaded the checkpoint;
 * - 'superseded': another rebuild of the same view started after this one, which therefore stops.
 */
export class ViewFencedError extends EskitError {
  constructor(
    readonly view: string,
    readonly reason: 'swapped' | 'superseded',
  ) {
    super(
      ErrorCode.Fenced,
      reason === 'swapped'
        ? `View "${view}" was rebuilt and its new tables swapped in since this node loaded its checkpoint; ` +
            'the write was rolled back and the view resumes from the new checkpoint.'
        : `Another rebuild of view "${view}" started and took over its shadow tables; this rebuild stopped and changed nothing. ` +
            'Run one rebuild of a view at a time.',
    );
  }
}

export class AlreadyStartedError extends EskitError {
  constructor(what: string) {
    super(ErrorCode.AlreadyStarted, `${what} is already started; call stop() first, or create a new instance.`);
  }
}

/** A handler kept failing after its last retry. `cause` is what it threw (any value, not only an Error). */
export class HandlerFailedError extends EskitError {
  constructor(
    readonly subscription: string,
    readonly position: number,
    readonly attempts: number,
    cause: unknown,
  ) {
    super(
      ErrorCode.HandlerFailed,
      `Subscription "${subscription}" stopped: its handler failed ${attempts} time(s) on the event at position ${position}: ` +
        `${describeError(cause)}. Fix the handler or the event, then start the subscription again (it resumes from its checkpoint).`,
      { cause },
    );
  }
}

/**
 * A partitioned runner was started with a partition count other than the one in use: a live node runs
 * it with another count, or its checkpoints were saved under another count while one of those
 * partitions is still held. Two partitionings at once would hand one key to two nodes.
 */
export class PartitionCountError extends EskitError {
  constructor(message: string) {
    super(ErrorCode.PartitionCount, message);
  }
}

export class LockUnavailableError extends EskitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.LockUnavailable, message, options);
  }
}

/** A readable one-line description of any thrown value. */
export function describeError(error: unknown): string {
  try {
    if (error instanceof Error) return `${error.name}: ${error.message}`;
    if (typeof error === 'string') return error;
    const json = JSON.stringify(error);
    if (json !== undefined) return json;
  } catch {
    // A cycle, a BigInt, a getter that throws: fall back to the plain forms below.
  }
  // Describing a failure must not fail: String() throws for an object without a prototype.
  try {
    return String(error);
  } catch {
    return Object.prototype.toString.call(error);
  }
}

export class TimeoutError extends EskitError {
  constructor(what: string, readonly timeoutMs: number) {
    super(ErrorCode.Timeout, `${what} did not finish within ${timeoutMs} ms.`);
  }
}

/**
 * Thrown by an automation's `execute` (or a subscription's handler) to say "retrying will not help":
 * the item goes straight to the dead-letter queue.
 */
export class PermanentFailure extends EskitError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.PermanentFailure, message, options);
  }
}

/** A rebuild stopped because `evolve` kept failing on one event. The live view is unchanged. */
export class RebuildFailedError extends EskitError {
  constructor(
    readonly view: string,
    readonly position: number,
    cause: unknown,
  ) {
    super(
      ErrorCode.HandlerFailed,
      `Rebuilding view "${view}" stopped at the event at position ${position}: ${describeError(cause)}. ` +
        'The live view is unchanged and keeps serving. Fix evolve (or give the view a deadLetters store to skip such events), then rebuild again.',
      { cause },
    );
  }
}

// Snapshots (issue 19).

/** A stored snapshot cannot be read back. Only a cache: a command handler ignores it and replays the stream. */
export class CorruptSnapshotError extends EskitError {
  constructor(
    readonly streamId: string,
    /** The snapshot's name (`name` is the error's). */
    readonly snapshotName: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(
      ErrorCode.CorruptSnapshot,
      `The snapshot "${snapshotName}" of stream "${streamId}" cannot be read: ${reason}. It was changed outside eskit; ` +
        'delete it (snapshots.deleteStream) and the next command writes a new one.',
      options,
    );
  }
}

/**
 * A stream's history does not start where it was asked to: its first events were removed (truncated)
 * and no usable snapshot covers them, so its state cannot be rebuilt.
 */
export class StreamHistoryMissingError extends EskitError {
  constructor(
    readonly streamId: string,
    /** The version the read asked for (1 for a full replay). */
    readonly fromVersion: number,
    /** The version of the first event that is still there. */
    readonly firstVersion: number,
  ) {
    super(
      ErrorCode.StreamHistoryMissing,
      `Stream "${streamId}" was truncated before version ${firstVersion} and no usable snapshot covers it, so its state cannot be rebuilt ` +
        `(asked for version ${fromVersion}, the first event left is version ${firstVersion}). Load it with the snapshots option whose name and ` +
        `version match a snapshot at version ${firstVersion} or later, or restore the removed events. Before truncating a stream, make sure ` +
        'such a snapshot is written (handler.flushSnapshots()) and that every decider loading the stream uses it.',
    );
  }
}

// Schema evolution (issue 19).

/**
 * An EventRegistry was built from definitions that contradict each other: a version chain with a gap,
 * a duplicate or a step past the current version, an old name that is also a current type, a split
 * into a type that does not exist. Thrown by the constructor, so a bad deploy fails at startup.
 */
export class RegistryDefinitionError extends EskitError {
  constructor(message: string) {
    super(ErrorCode.RegistryDefinition, `Invalid event registry: ${message}`);
  }
}

/**
 * A type that was renamed or split is never written again, and a typed read cannot ask for it (its
 * events are read as the types that replaced it). `replacedBy` names those types.
 */
export class RetiredEventTypeError extends EskitError {
  constructor(
    readonly eventType: string,
    readonly replacedBy: readonly string[],
    readonly how: 'renamed' | 'split',
    readonly action: 'append' | 'read',
  ) {
    const names = replacedBy.map((name) => `"${name}"`).join(', ');
    super(
      ErrorCode.RetiredEventType,
      how === 'renamed'
        ? `Event type "${eventType}" was renamed to ${names}: ${action === 'append' ? 'append' : 'ask for'} ${names} instead. ` +
            `Stored "${eventType}" events are read as ${names}.`
        : `Event type "${eventType}" was split into ${names}: ${action === 'append' ? 'append those events' : `ask for ${names}`} instead. ` +
            `Stored "${eventType}" events are read as those.`,
    );
  }
}

// Stream lifecycle (issue 19).

/** An append to a stream that was deleted with `appends: 'refuse'`. Nothing was written. */
export class StreamDeletedError extends EskitError {
  constructor(readonly streamId: string) {
    super(
      ErrorCode.StreamDeleted,
      `Stream "${streamId}" was deleted with appends: 'refuse', or archived, and refuses appends; nothing was written. ` +
        'Append to another stream id: a deletion is final for this one (an archived stream reads back with readArchived).',
    );
  }
}

/** deleteStream or truncateStream of a stream that has no events (never written, or deleted already). */
export class StreamNotFoundError extends EskitError {
  constructor(
    readonly streamId: string,
    operation: string,
  ) {
    super(
      ErrorCode.StreamNotFound,
      `Cannot ${operation} stream "${streamId}": it has no events (never written, or deleted or archived already); nothing was written. Check the stream id.`,
    );
  }
}
