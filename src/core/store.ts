import { ConcurrencyError, InvalidArgumentError } from './errors.js';
import type { EventShape, NewEvent, Recorded } from './event.js';
import type { ArchiveStreamOptions, DeleteStreamOptions, LifecycleResult, TruncateStreamOptions } from './lifecycle.js';
import type { ForgetReport } from './personal/types.js';

/**
 * What the writer believes about the stream. Enforced inside the write by every adapter:
 * - a number: the stream is exactly at that version (0 = it has no events),
 * - `'no_stream'`: the stream has no events,
 * - `'stream_exists'`: the stream has at least one event,
 * - `'any'`: no check.
 */
export type ExpectedVersion = number | 'no_stream' | 'stream_exists' | 'any';

export interface AppendOptions {
  /** Defaults to `'any'`. */
  expectedVersion?: ExpectedVersion;
}

export interface AppendResult<E extends EventShape = EventShape> {
  /** The stream's version after the append: pass it as `expectedVersion` for the next one. */
  nextExpectedVersion: number;
  /** Global position of the last appended event (what read-your-writes waits for). */
  position: number;
  events: Recorded<E>[];
}

export type ReadDirection = 'forward' | 'backward';

export interface ReadStreamOptions {
  /** Inclusive. Forward default 1; backward default the stream's last version. */
  fromVersion?: number;
  direction?: ReadDirection;
  /** Stop after this many events. */
  limit?: number;
  /** Skip registry decoding and receive events as stored (needed for unknown types). */
  raw?: boolean;
}

export interface ReadAllOptions {
  /** Exclusive global position to start after; 0 (the default) reads from the beginning. */
  after?: number;
  limit?: number;
  /** Only events of these types. */
  types?: readonly string[];
  /**
   * Only events of streams in this category: the stream id up to its first `-` (the whole id when it
   * has none), so `'order'` reads `order-1`, `order-2`, ... and `shopping-cart-1` is in `'shopping'`.
   * Indexed on every adapter, so a category costs about its own events; with `types`, both must match.
   */
  category?: string;
  raw?: boolean;
}

/** Throws unless `category` is a usable category name (or undefined: no category filter). */
export function checkCategory(category: unknown): asserts category is string | undefined {
  if (category === undefined) return;
  if (typeof category !== 'string' || category === '' || category.includes('-')) {
    throw new InvalidArgumentError(
      `category must be a non-empty stream-id prefix without "-" (the text before the first "-" of a stream id, e.g. 'order' for 'order-42'), got ${JSON.stringify(category) ?? String(category)}`,
    );
  }
}

/** The category of a stream: its id up to the first `-`, or the whole id when it has none. */
export function categoryOf(streamId: string): string {
  const dash = streamId.indexOf('-');
  return dash === -1 ? streamId : streamId.slice(0, dash);
}

/**
 * The event log. Reads are async iterables that page under the hood, so a long read does not hold
 * memory or a connection for the whole log.
 *
 * Global order guarantee: once a reader has seen position p, no event can later become visible at a
 * position at or before p. A subscriber may therefore checkpoint a bare position.
 */
export interface EventStore<E extends EventShape = EventShape> {
  append(streamId: string, events: readonly NewEvent<E>[], options?: AppendOptions): Promise<AppendResult<E>>;
  readStream(streamId: string, options: ReadStreamOptions & { raw: true }): AsyncIterable<Recorded>;
  readStream(streamId: string, options?: ReadStreamOptions): AsyncIterable<Recorded<E>>;
  readAll(options: ReadAllOptions & { raw: true }): AsyncIterable<Recorded>;
  readAll(options?: ReadAllOptions): AsyncIterable<Recorded<E>>;
  /** The stream's current version; 0 when it has no events. */
  streamVersion(streamId: string): Promise<number>;
  /**
   * Deletes the stream: its events leave every read at once (soft: kept in deleted_events, out of
   * reads; `hard: true`: removed for good), its snapshots are removed, and a `$stream.deleted` event
   * is appended (see `StreamLifecycleEvent`). The stream then reads as absent (version 0); the next
   * append starts it again at 1, or fails with `StreamDeletedError` when `appends: 'refuse'`. An
   * absent stream fails with `StreamNotFoundError`.
   */
  deleteStream(streamId: string, options?: DeleteStreamOptions): Promise<LifecycleResult>;
  /**
   * Removes the stream's events before `beforeVersion` for good (2 <= beforeVersion <= its version:
   * the last event always stays) and appends a `$stream.truncated` event. Versions do not change, and
   * appends go on as before; a read of the stream from 1 starts at `beforeVersion`.
   */
  truncateStream(streamId: string, beforeVersion: number, options?: TruncateStreamOptions): Promise<LifecycleResult>;
  /**
   * Moves a finished stream to the archive (a table of its own; the memory store keeps it in memory):
   * its events leave every read of the log at once, its snapshots are removed, `$stream.archived` is
   * appended, and later appends are refused. `readArchived` reads it back.
   */
  archiveStream(streamId: string, options?: ArchiveStreamOptions): Promise<LifecycleResult>;
  /** The events of an archived stream, in version order, decoded like any read. */
  readArchived(streamId: string, options: { raw: true }): AsyncIterable<Recorded>;
  readArchived(streamId: string, options?: { raw?: boolean }): AsyncIterable<Recorded<E>>;
  /**
   * Erases a data subject's personal data (see `personal` in EventRegistry): destroys the subject's
   * keys, so their personal fields read as the redaction marker everywhere, and appends
   * `$subject.forgotten`. Later appends of the subject's personal data fail until `allowNewKey`.
   */
  forget(subject: string): Promise<ForgetReport>;
  /** Lets a forgotten subject have personal data again, under a new key. */
  allowNewKey(subject: string): Promise<void>;
  /** The highest global position visible to readers; 0 when the store is empty. */
  headPosition(): Promise<number>;
  /**
   * Calls `listener` when new events may have been appended (by this process, or by others where the
   * backend can tell). A hint only: it can be late, spurious or lost, so readers poll as well.
   * Returns a function that removes the listener.
   */
  onAppend(listener: (position: number) => void): () => void;
  /** Releases connections or file handles. Every later call fails with `ESKIT_STORE_CLOSED`. */
  close(): Promise<void>;
}

/** Throws the concurrency error when `actual` does not satisfy `expected`. For adapters, inside the write. */
export function assertExpectedVersion(streamId: string, expected: ExpectedVersion, actual: number): void {
  const ok =
    expected === 'any' ||
    (expected === 'no_stream' && actual === 0) ||
    (expected === 'stream_exists' && actual > 0) ||
    expected === actual;
  if (!ok) throw new ConcurrencyError(streamId, expected, actual);
}
