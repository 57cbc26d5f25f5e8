import { ConcurrencyError } from './errors.js';
import type { EventShape, NewEvent, Recorded } from './event.js';

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
  raw?: boolean;
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
