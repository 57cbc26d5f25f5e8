import { DuplicateEventIdError, StreamDeletedError, StreamNotFoundError } from '../core/errors.js';
import { lifecycleData, lifecycleType, truncateBeyondVersion } from '../core/lifecycle.js';
import type { LifecycleRequest, LifecycleWritten } from '../core/lifecycle.js';
import { assertExpectedVersion, categoryOf } from '../core/store.js';
import { EventStoreBase } from '../core/store-base.js';
import type { EventStoreBaseOptions, LogFilter, PreparedEvent, StoredEventRow, WrittenEvents } from '../core/store-base.js';
import type { EventShape } from '../core/event.js';
import type { ExpectedVersion, ReadDirection } from '../core/store.js';
import { MemorySubjectKeyStore } from './memory-subject-key-store.js';

export type MemoryEventStoreOptions<E extends EventShape> = EventStoreBaseOptions<E>;

/**
 * The whole log in one array, for tests and examples. Events are kept as JSON text, so what a reader
 * gets back behaves exactly as with the database adapters (and mutating it cannot change the log).
 * Every call runs synchronously once started, so appends, deletes and truncates never interleave.
 */
export class MemoryEventStore<E extends EventShape = EventShape> extends EventStoreBase<E> {
  /** In position order. Positions come from a counter, not the index: deletes remove rows, and a position is never handed out twice. */
  #log: StoredEventRow[] = [];
  #lastPosition = 0;
  /** Each stream's events (version > 0) in version order; after a truncate the first is not version 1. */
  readonly #streams = new Map<string, StoredEventRow[]>();
  /** Each stream's latest lifecycle event: the next one's version, and whether appends are refused. */
  readonly #lifecycle = new Map<string, { version: number; refuse: boolean }>();
  /** What soft deletes kept (deleted_events on the database adapters). */
  readonly #deleted: StoredEventRow[] = [];
  /** What archiveStream moved out of the log, by stream (archived_events on the database adapters). */
  readonly #archived = new Map<string, StoredEventRow[]>();
  readonly #ids = new Set<string>();
  readonly #onDeleted = new Set<(streamId: string) => void>();

  constructor(options: MemoryEventStoreOptions<E> = {}) {
    super({ ...options, subjectKeys: options.subjectKeys ?? new MemorySubjectKeyStore() });
  }

  protected async writeEvents(streamId: string, events: PreparedEvent[], expected: ExpectedVersion): Promise<WrittenEvents> {
    const stream = this.#streams.get(streamId) ?? [];
    const current = versionOf(stream);
    if (current === 0 && this.#lifecycle.get(streamId)?.refuse === true) throw new StreamDeletedError(streamId);
    assertExpectedVersion(streamId, expected, current);
    const batch = new Set<string>();
    for (const event of events) {
      if (this.#ids.has(event.id) || batch.has(event.id)) throw new DuplicateEventIdError(event.id);
      batch.add(event.id);
    }
    const timestamp = new Date();
    const rows = events.map((event, index): StoredEventRow => ({
      ...event,
      streamId,
      streamVersion: current + index + 1,
      position: this.#lastPosition + index + 1,
      timestamp,
    }));
    this.#lastPosition += rows.length;
    for (const row of rows) {
      this.#log.push(row);
      stream.push(row);
      this.#ids.add(row.id);
    }
    this.#streams.set(streamId, stream);
    return { streamVersion: current + rows.length, positions: rows.map((r) => r.position), timestamp };
  }

  protected async writeLifecycle(streamId: string, request: LifecycleRequest): Promise<LifecycleWritten> {
    const stream = this.#streams.get(streamId) ?? [];
    const version = versionOf(stream);
    if (version === 0) throw new StreamNotFoundError(streamId, request.kind);
    assertExpectedVersion(streamId, request.expected, version);
    if (request.kind === 'truncate' && request.before > version) throw truncateBeyondVersion(streamId, request.before, version);
    const removed = new Set(request.kind === 'truncate' ? stream.filter((row) => row.streamVersion < request.before) : stream);
    const timestamp = new Date();
    if (request.kind === 'archive') {
      this.#streams.delete(streamId);
      this.#archived.set(streamId, [...(this.#archived.get(streamId) ?? []), ...stream]);
      for (const listener of this.#onDeleted) listener(streamId);
    } else if (request.kind === 'delete') {
      this.#streams.delete(streamId);
      if (request.hard) {
        for (let i = this.#deleted.length - 1; i >= 0; i--) if ((this.#deleted[i] as StoredEventRow).streamId === streamId) this.#deleted.splice(i, 1);
      } else {
        this.#deleted.push(...stream);
      }
      for (const listener of this.#onDeleted) listener(streamId);
    } else {
      this.#streams.set(streamId, stream.filter((row) => !removed.has(row)));
    }
    if (removed.size > 0) this.#log = this.#log.filter((row) => !removed.has(row));
    for (const row of removed) this.#ids.delete(row.id);
    const previous = this.#lifecycle.get(streamId);
    const row: StoredEventRow = {
      id: request.id,
      type: lifecycleType(request),
      data: JSON.stringify(lifecycleData(request, version)),
      metadata: '{}',
      streamId,
      streamVersion: (previous?.version ?? 0) - 1,
      position: ++this.#lastPosition,
      timestamp,
    };
    this.#log.push(row);
    this.#ids.add(row.id);
    this.#lifecycle.set(streamId, {
      version: row.streamVersion,
      refuse: request.kind === 'delete' ? request.appends === 'refuse' : request.kind === 'archive' || (previous?.refuse ?? false),
    });
    return { position: row.position, timestamp };
  }

  /**
   * Internal to eskit/memory (the memory snapshot store): `listener` is called, synchronously and
   * inside the deletion, with the id of every stream deleted (soft or hard). Returns the remover.
   */
  onStreamDeleted(listener: (streamId: string) => void): () => void {
    this.#onDeleted.add(listener);
    return () => {
      this.#onDeleted.delete(listener);
    };
  }

  /** Test hook: the versions of the stream's events kept by soft deletes (deleted_events on the database adapters). */
  deletedVersionsForTesting(streamId: string): number[] {
    return this.#deleted.filter((row) => row.streamId === streamId).map((row) => row.streamVersion).sort((a, b) => a - b);
  }

  protected async readStreamRows(streamId: string, fromVersion: number, direction: ReadDirection, limit: number): Promise<StoredEventRow[]> {
    const stream = this.#streams.get(streamId) ?? [];
    // Versions are consecutive from the first one kept (a truncate removes a prefix).
    const first = stream[0]?.streamVersion ?? 1;
    if (direction === 'forward') {
      const start = Math.max(0, fromVersion - first);
      return copies(stream.slice(start, start + limit));
    }
    const end = Math.min(fromVersion - first + 1, stream.length);
    return end <= 0 ? [] : copies(stream.slice(Math.max(0, end - limit), end).reverse());
  }

  protected async readAllRows(after: number, limit: number, { types, category }: LogFilter): Promise<StoredEventRow[]> {
    const from = this.#indexAfter(after);
    if (!types && category === undefined) return copies(this.#log.slice(from, from + limit));
    const wanted = types ? new Set(types) : undefined;
    const out: StoredEventRow[] = [];
    for (let i = from; i < this.#log.length && out.length < limit; i++) {
      const row = this.#log[i] as StoredEventRow;
      if ((wanted === undefined || wanted.has(row.type)) && (category === undefined || categoryOf(row.streamId) === category)) out.push({ ...row });
    }
    return out;
  }

  protected async readArchivedRows(streamId: string, fromVersion: number, limit: number): Promise<StoredEventRow[]> {
    const rows = (this.#archived.get(streamId) ?? []).filter((row) => row.streamVersion >= fromVersion);
    return copies(rows.slice(0, limit));
  }

  protected async readStreamVersion(streamId: string): Promise<number> {
    return versionOf(this.#streams.get(streamId));
  }

  protected async readHeadPosition(): Promise<number> {
    return this.#log[this.#log.length - 1]?.position ?? 0;
  }

  /** The index of the first row with a position above `after` (binary search: positions grow with the index). */
  #indexAfter(after: number): number {
    let low = 0;
    let high = this.#log.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if ((this.#log[middle] as StoredEventRow).position <= after) low = middle + 1;
      else high = middle;
    }
    return low;
  }

  protected async closeResources(): Promise<void> {}

  /** Test hook: replace a stored row's JSON, as an outside writer might. */
  corruptForTesting(position: number, patch: Partial<Pick<StoredEventRow, 'data' | 'metadata' | 'type'>>): void {
    const row = this.#log[this.#indexAfter(position - 1)];
    if (row?.position === position) Object.assign(row, patch);
  }
}

function versionOf(stream: StoredEventRow[] | undefined): number {
  return stream?.[stream.length - 1]?.streamVersion ?? 0;
}

/** Readers get rows of their own: the base turns them into events in place. */
function copies(rows: StoredEventRow[]): StoredEventRow[] {
  return rows.map((row) => ({ ...row }));
}
