import { DuplicateEventIdError } from '../core/errors.js';
import { assertExpectedVersion, categoryOf } from '../core/store.js';
import { EventStoreBase } from '../core/store-base.js';
import type { EventStoreBaseOptions, LogFilter, PreparedEvent, StoredEventRow, WrittenEvents } from '../core/store-base.js';
import type { EventShape } from '../core/event.js';
import type { ExpectedVersion, ReadDirection } from '../core/store.js';

export type MemoryEventStoreOptions<E extends EventShape> = EventStoreBaseOptions<E>;

/**
 * The whole log in one array, for tests and examples. Events are kept as JSON text, so what a reader
 * gets back behaves exactly as with the database adapters (and mutating it cannot change the log).
 */
export class MemoryEventStore<E extends EventShape = EventShape> extends EventStoreBase<E> {
  readonly #log: StoredEventRow[] = [];
  readonly #streams = new Map<string, StoredEventRow[]>();
  readonly #ids = new Set<string>();

  constructor(options: MemoryEventStoreOptions<E> = {}) {
    super(options);
  }

  protected async writeEvents(streamId: string, events: PreparedEvent[], expected: ExpectedVersion): Promise<WrittenEvents> {
    const stream = this.#streams.get(streamId) ?? [];
    assertExpectedVersion(streamId, expected, stream.length);
    const batch = new Set<string>();
    for (const event of events) {
      if (this.#ids.has(event.id) || batch.has(event.id)) throw new DuplicateEventIdError(event.id);
      batch.add(event.id);
    }
    const timestamp = new Date();
    const rows = events.map((event, index): StoredEventRow => ({
      ...event,
      streamId,
      streamVersion: stream.length + index + 1,
      position: this.#log.length + index + 1,
      timestamp,
    }));
    for (const row of rows) {
      this.#log.push(row);
      stream.push(row);
      this.#ids.add(row.id);
    }
    this.#streams.set(streamId, stream);
    return { streamVersion: stream.length, positions: rows.map((r) => r.position), timestamp };
  }

  protected async readStreamRows(streamId: string, fromVersion: number, direction: ReadDirection, limit: number): Promise<StoredEventRow[]> {
    const stream = this.#streams.get(streamId) ?? [];
    if (direction === 'forward') return copies(stream.slice(fromVersion - 1, fromVersion - 1 + limit));
    const end = Math.min(fromVersion, stream.length);
    return copies(stream.slice(Math.max(0, end - limit), end).reverse());
  }

  protected async readAllRows(after: number, limit: number, { types, category }: LogFilter): Promise<StoredEventRow[]> {
    if (!types && category === undefined) return copies(this.#log.slice(after, after + limit));
    const wanted = types ? new Set(types) : undefined;
    const out: StoredEventRow[] = [];
    for (let i = after; i < this.#log.length && out.length < limit; i++) {
      const row = this.#log[i] as StoredEventRow;
      if ((wanted === undefined || wanted.has(row.type)) && (category === undefined || categoryOf(row.streamId) === category)) out.push({ ...row });
    }
    return out;
  }

  protected async readStreamVersion(streamId: string): Promise<number> {
    return this.#streams.get(streamId)?.length ?? 0;
  }

  protected async readHeadPosition(): Promise<number> {
    return this.#log.length;
  }

  protected async closeResources(): Promise<void> {}

  /** Test hook: replace a stored row's JSON, as an outside writer might. */
  corruptForTesting(position: number, patch: Partial<Pick<StoredEventRow, 'data' | 'metadata' | 'type'>>): void {
    const row = this.#log[position - 1];
    if (row) Object.assign(row, patch);
  }
}

/** Readers get rows of their own: the base turns them into events in place. */
function copies(rows: StoredEventRow[]): StoredEventRow[] {
  return rows.map((row) => ({ ...row }));
}
