// Stream lifecycle: deleting and truncating streams, and the system events that record it. The
// operations are EventStore methods (deleteStream, truncateStream); this module holds their types,
// argument checks and the reserved `$stream.` types, so every adapter reads and writes them alike.
import { newEventId } from './event-id.js';
import { InvalidArgumentError } from './errors.js';
import type { ExpectedVersion } from './store.js';

/** Types starting with this are eskit's own (lifecycle events): appends of them are refused. */
export const RESERVED_TYPE_PREFIX = '$stream.';
export const STREAM_DELETED = '$stream.deleted';
export const STREAM_TRUNCATED = '$stream.truncated';
export const STREAM_ARCHIVED = '$stream.archived';
/** Types starting with this are eskit's events about data subjects (personal data): refused on append too. */
export const SUBJECT_TYPE_PREFIX = '$subject.';
/** Appended by `forget(subject)` to the stream `$subject-<subject>` (see `SubjectForgottenEvent`). */
export const SUBJECT_FORGOTTEN = '$subject.forgotten';

export interface SubjectForgottenData {
  subject: string;
  /** Keys destroyed by this forget (0 when the subject was forgotten before, or never had one). */
  keysDestroyed: number;
}

/**
 * The event `forget(subject)` appends once the subject's keys are destroyed: a view keyed by subject
 * clears its rows on it (name the type in its `types`, as for the lifecycle events).
 */
export type SubjectForgottenEvent = { type: typeof SUBJECT_FORGOTTEN; data: SubjectForgottenData };

/** The stream a subject's `$subject.forgotten` events are appended to. */
export function subjectStreamId(subject: string): string {
  return `$subject-${subject}`;
}

/** What an append to a deleted stream does: start it again at version 1, or fail with `StreamDeletedError`. */
export type AppendsAfterDelete = 'restart' | 'refuse';

export interface StreamDeletedData {
  /** The last version the stream had: every event up to it was deleted. */
  version: number;
  /** true: the rows were removed for good; false: kept out of every read (deleted_events). */
  hard: boolean;
  appends: AppendsAfterDelete;
}

export interface StreamTruncatedData {
  /** The stream now starts at this version; everything before it was removed for good. */
  before: number;
  /** The stream's version when it was truncated (unchanged by the truncation). */
  version: number;
}

export interface StreamArchivedData {
  /** The last version the stream had: every event up to it moved to the archive. */
  version: number;
  /** An archived stream is finished: appends are refused (see `readArchived`). */
  appends: 'refuse';
}

/**
 * The system events eskit appends when a stream is deleted, truncated or archived. They belong to the stream
 * they concern (same stream id, so category readers get them) but sit outside its numbering (negative
 * stream versions): `readStream`, `streamVersion` and version checks never meet them. `readAll`,
 * subscriptions and views receive them only when their `types` name them (or for raw reads without a
 * types filter); add this type to your event union to handle them.
 */
export type StreamLifecycleEvent =
  | { type: typeof STREAM_DELETED; data: StreamDeletedData }
  | { type: typeof STREAM_ARCHIVED; data: StreamArchivedData }
  | { type: typeof STREAM_TRUNCATED; data: StreamTruncatedData };

export interface DeleteStreamOptions {
  /** true: remove the rows for good (the stream's earlier soft-deleted rows too). Default false (soft). */
  hard?: boolean;
  /** Default 'restart': the next append starts the stream again at version 1. */
  appends?: AppendsAfterDelete;
  /** Checked against the stream's version under the append lock, as for an append. Default 'any'. */
  expectedVersion?: ExpectedVersion;
}

export interface TruncateStreamOptions {
  /** Checked against the stream's version under the append lock, as for an append. Default 'any'. */
  expectedVersion?: ExpectedVersion;
}

export type ArchiveStreamOptions = TruncateStreamOptions;

/** Where the lifecycle event was written: a reader that has seen this position sees the stream as changed. */
export interface LifecycleResult {
  position: number;
}

/** What an adapter writes in one transaction under its append serialisation (argument checks done). */
export type LifecycleRequest =
  | { kind: 'delete'; id: string; expected: ExpectedVersion; hard: boolean; appends: AppendsAfterDelete }
  | { kind: 'archive'; id: string; expected: ExpectedVersion }
  | { kind: 'truncate'; id: string; expected: ExpectedVersion; before: number };

/** What an adapter reports back. */
export interface LifecycleWritten {
  position: number;
  timestamp: Date;
}

/** eskit's own events: the stream lifecycle (`$stream.*`) and data subjects (`$subject.*`). */
export function isLifecycleType(type: string): boolean {
  return type.startsWith(RESERVED_TYPE_PREFIX) || type.startsWith(SUBJECT_TYPE_PREFIX);
}

/** The lifecycle event's data, as every adapter stores it (the stream's version is known only under the lock). */
export function lifecycleData(request: LifecycleRequest, version: number): StreamDeletedData | StreamTruncatedData | StreamArchivedData {
  if (request.kind === 'delete') return { version, hard: request.hard, appends: request.appends };
  if (request.kind === 'archive') return { version, appends: 'refuse' };
  return { before: request.before, version };
}

export function lifecycleType(request: LifecycleRequest): string {
  return request.kind === 'delete' ? STREAM_DELETED : request.kind === 'archive' ? STREAM_ARCHIVED : STREAM_TRUNCATED;
}

/** The checked request of `archiveStream`. */
export function archiveRequest(options: ArchiveStreamOptions, checkExpected: (expected: unknown) => ExpectedVersion): LifecycleRequest {
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('archiveStream options must be an object');
  return { kind: 'archive', id: newEventId(), expected: checkExpected(options.expectedVersion ?? 'any') };
}

/** The checked request of `deleteStream`; throws InvalidArgumentError on a bad option. */
export function deleteRequest(options: DeleteStreamOptions, checkExpected: (expected: unknown) => ExpectedVersion): LifecycleRequest {
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('deleteStream options must be an object');
  const { hard = false, appends = 'restart' } = options;
  if (typeof hard !== 'boolean') throw new InvalidArgumentError(`deleteStream: hard must be true or false, got ${String(hard)}`);
  if (appends !== 'restart' && appends !== 'refuse') {
    throw new InvalidArgumentError(`deleteStream: appends must be "restart" or "refuse", got ${JSON.stringify(appends) ?? String(appends)}`);
  }
  return { kind: 'delete', id: newEventId(), expected: checkExpected(options.expectedVersion ?? 'any'), hard, appends };
}

/** The checked request of `truncateStream`; the upper bound (the stream's version) is checked by the adapter. */
export function truncateRequest(before: unknown, options: TruncateStreamOptions, checkExpected: (expected: unknown) => ExpectedVersion): LifecycleRequest {
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('truncateStream options must be an object');
  if (typeof before !== 'number' || !Number.isSafeInteger(before) || before < 2) {
    throw new InvalidArgumentError(
      `truncateStream: beforeVersion must be an integer of at least 2 (the events before it are removed, and version 1 alone is nothing to remove), got ${String(before)}`,
    );
  }
  return { kind: 'truncate', id: newEventId(), expected: checkExpected(options.expectedVersion ?? 'any'), before };
}

/** The refusal of `truncateStream` when `before` is past the stream's version (the last event always stays). */
export function truncateBeyondVersion(streamId: string, before: number, version: number): InvalidArgumentError {
  return new InvalidArgumentError(
    `Cannot truncate stream "${streamId}" before version ${before}: it is at version ${version}, and its last event always stays. ` +
      `Pass a beforeVersion from 2 to ${version}, or delete the stream instead.`,
  );
}

/** The refusal of an append of a reserved type. */
export function reservedType(type: string, index: number): InvalidArgumentError {
  return new InvalidArgumentError(
    `event ${index} has type "${type}": types starting with "${RESERVED_TYPE_PREFIX}" or "${SUBJECT_TYPE_PREFIX}" are eskit's own events, written only by deleteStream, truncateStream and forget. Rename your event type.`,
  );
}

/**
 * Rows a read returns to the caller: without a types filter, a decoded (not raw) read of the log skips
 * lifecycle events, so code written before they existed never meets a type it does not know.
 */
export function keepsLifecycleEvents(raw: boolean, types: readonly string[] | undefined): boolean {
  return raw || types !== undefined;
}
