import { InvalidArgumentError, SerializationError, StoreClosedError } from './errors.js';
import type { EventShape, NewEvent, Recorded } from './event.js';
import { appendObserver } from './hooks.js';
import type { MetadataStamp } from './hooks.js';
import type { EventRegistry } from './registry.js';
import { isStorableText, unstorableTextReason } from './validate.js';
import type {
  AppendOptions,
  AppendResult,
  EventStore,
  ExpectedVersion,
  ReadAllOptions,
  ReadDirection,
  ReadStreamOptions,
} from './store.js';
import { checkCategory } from './store.js';
import { assertExpectedVersionArgument, assertStreamId, checkedExpected, checkEvent, optionalCount } from './store-arguments.js';
import type { CheckedEvent } from './store-arguments.js';
// Where they were first written; importers read them from here.
export { readsLifecycleRow, storedTypesOf } from './store-arguments.js';
import { decodeRow, LOOKED_THROUGH, pagedRead } from './paged-read.js';
import { archiveRequest, deleteRequest, isLifecycleType, keepsLifecycleEvents, subjectStreamId, truncateRequest } from './lifecycle.js';
import type { ArchiveStreamOptions, DeleteStreamOptions, LifecycleRequest, LifecycleResult, LifecycleWritten, TruncateStreamOptions } from './lifecycle.js';
import { ENVELOPE_MARK, markPersonal, PersonalData } from './personal/personal-data.js';
import { refuseEnvelopeShapes } from './personal/fields.js';
import { forgetSubject } from './personal/forget.js';
import { markPersonalError } from './personal/withheld.js';
import type { Opened } from './personal/fields.js';
import type { ForgetReport, SubjectKeyStore } from './personal/types.js';

/** An event checked and serialised, ready for an adapter to write. */
export interface PreparedEvent {
  id: string;
  type: string;
  /** JSON text. */
  data: string;
  /** JSON text. */
  metadata: string;
}

/**
 * A row as an adapter reads it back; `data` and `metadata` are JSON text. Each read must return
 * objects of its own: the base turns them into the returned events in place.
 */
export interface StoredEventRow {
  id: string;
  type: string;
  data: string;
  metadata: string;
  streamId: string;
  streamVersion: number;
  position: number;
  timestamp: Date;
}

export interface WrittenEvents {
  /** The stream's version after the write. */
  streamVersion: number;
  /** Global positions of the written events, in order. */
  positions: number[];
  timestamp: Date;
}

/** What a read of the log keeps; both filters must match when both are given. */
export interface LogFilter {
  /** Only these stored types (never empty). */
  types?: readonly string[];
  /** Only streams of this category (see `categoryOf`). */
  category?: string;
}

/** What a typed read keeps of the decoded events (see readAll). */
interface DecodeFilter {
  /** The asked types, when a split can make others; undefined keeps everything. */
  keep: ReadonlySet<string> | undefined;
  /** A stored row was decoded and left no event. */
  skipped(): void;
}

export interface EventStoreBaseOptions<E extends EventShape> {
  /** Checks types and data on append, upcasts and validates on read. Without it, any type is accepted. */
  registry?: EventRegistry<E>;
  /** Events fetched per round trip while iterating a read. Default 500. */
  pageSize?: number;
  /**
   * Where the keys of personal data live (see `personal` in the registry). Adapters pass their own;
   * without one, appends of personal data are refused and envelopes read as stored.
   */
  subjectKeys?: SubjectKeyStore;
  /** How long a key found in `subjectKeys` is reused without asking again (ms); see PersonalDataOptions. */
  keyCacheMs?: number;
}

/**
 * Everything adapters share: argument checks, serialisation, registry decoding, paging and the closed
 * state. An adapter implements only the storage primitives below, and must enforce the expected version
 * inside `writeEvents` (see `assertExpectedVersion`).
 */
export abstract class EventStoreBase<E extends EventShape = EventShape> implements EventStore<E> {
  readonly #registry: EventRegistry<E> | undefined;
  readonly #personal: PersonalData | undefined;
  protected readonly pageSize: number;
  #closed = false;
  #closing: Promise<void> | undefined;
  readonly #appendListeners = new Set<(position: number) => void>();

  protected constructor(options: EventStoreBaseOptions<E> = {}) {
    this.#registry = options.registry;
    this.#personal = options.subjectKeys === undefined ? undefined : new PersonalData({ keys: options.subjectKeys, cacheMs: options.keyCacheMs });
    this.pageSize = options.pageSize ?? 500;
    if (!Number.isInteger(this.pageSize) || this.pageSize < 1) {
      throw new InvalidArgumentError(`pageSize must be a positive integer, got ${String(options.pageSize)}`);
    }
  }

  /** Atomically writes the events, or throws (`ConcurrencyError` when `expected` does not hold). */
  protected abstract writeEvents(streamId: string, events: PreparedEvent[], expected: ExpectedVersion): Promise<WrittenEvents>;
  /** Up to `limit` events of the stream from `fromVersion` (inclusive) in `direction`. */
  protected abstract readStreamRows(streamId: string, fromVersion: number, direction: ReadDirection, limit: number): Promise<StoredEventRow[]>;
  /** Up to `limit` events after `after` in global order that pass `filter` (its fields are checked already). */
  protected abstract readAllRows(after: number, limit: number, filter: LogFilter): Promise<StoredEventRow[]>;
  protected abstract readStreamVersion(streamId: string): Promise<number>;
  /**
   * Deletes or truncates the stream and appends its lifecycle event, in one transaction under the
   * append serialisation (see lifecycle.ts); `StreamNotFoundError` for an absent stream.
   */
  protected abstract writeLifecycle(streamId: string, request: LifecycleRequest): Promise<LifecycleWritten>;
  /** Up to `limit` archived events of the stream from `fromVersion` (inclusive), in version order. */
  protected abstract readArchivedRows(streamId: string, fromVersion: number, limit: number): Promise<StoredEventRow[]>;
  protected abstract readHeadPosition(): Promise<number>;
  protected abstract closeResources(): Promise<void>;

  get closed(): boolean {
    return this.#closed;
  }

  protected assertOpen(): void {
    if (this.#closed) throw new StoreClosedError();
  }

  append(streamId: string, events: readonly NewEvent<E>[], options: AppendOptions = {}): Promise<AppendResult<E>> {
    // Without an observer (telemetry not loaded, or no tracer provider) this is one call: no closure
    // or object per append.
    const observe = appendObserver();
    if (observe === undefined) return this.#append(streamId, events, options);
    const call = { streamId, events, expectedVersion: options?.expectedVersion ?? 'any' };
    return observe(call, (stamp) => this.#append(streamId, events, options, stamp));
  }

  /** `stamp`: the observer's additions (the append span's trace context) to each event's metadata. */
  async #append(streamId: string, events: readonly NewEvent<E>[], options: AppendOptions = {}, stamp?: MetadataStamp): Promise<AppendResult<E>> {
    this.assertOpen();
    assertStreamId(streamId);
    if (!isStorableText(streamId)) {
      throw new SerializationError('streamId', {
        path: 'streamId',
        reason: `Cannot append: streamId ${JSON.stringify(streamId)} ${unstorableTextReason(streamId)}. Nothing was written.`,
      });
    }
    const expected = options.expectedVersion ?? 'any';
    assertExpectedVersionArgument(expected);
    if (!Array.isArray(events) || events.length === 0) {
      throw new InvalidArgumentError('append needs at least one event; to check a version without writing, use streamVersion()');
    }
    const count = events.length;
    const prepared = new Array<PreparedEvent>(count);
    // The checked copies are what a read returns, so the result hands them out instead of parsing the
    // JSON back: equal to a read, and sharing no objects with the caller's input.
    const values = new Array<CheckedEvent>(count);
    const registry = this.#registry;
    // Each event's personal fields, by its type (undefined: none), when the registry has any at all.
    const definitions = registry?.hasPersonalData === true ? events.map((event) => registry.personalOf(String((event as { type?: unknown } | null)?.type))) : undefined;
    const hasPersonal = definitions?.some((definition) => definition !== undefined) === true;
    let personal: Array<{ data: unknown; kids: string[] } | undefined> | undefined;
    try {
      for (let i = 0; i < count; i++) values[i] = checkEvent(events[i] as NewEvent<E>, i, registry, stamp);
      if (hasPersonal) personal = await this.#personalData('Appending personal data').encrypt(values, definitions as NonNullable<typeof definitions>);
    } catch (error) {
      // A validate or subject function refusing personal data may quote it: yours as thrown, withheld on spans.
      if (hasPersonal) markPersonalError(error);
      throw error;
    }
    for (let i = 0; i < count; i++) {
      const value = values[i] as CheckedEvent;
      const encrypted = personal?.[i]?.data;
      const data = JSON.stringify(encrypted ?? value.data);
      // What readers would take for an encrypted field must come from encryption (a cheap text test first).
      if (data.includes(ENVELOPE_MARK)) refuseEnvelopeShapes(value.type, encrypted ?? value.data, encrypted === undefined ? undefined : definitions?.[i]);
      prepared[i] = { id: value.id, type: value.type, data, metadata: JSON.stringify(value.metadata) };
    }
    const written = await this.writeEvents(streamId, prepared, expected);
    this.notifyAppended(written.positions[written.positions.length - 1] as number);
    const recorded = values.map((value, index) => {
      const event = {
        id: value.id,
        type: value.type,
        data: value.data,
        metadata: value.metadata,
        streamId,
        streamVersion: written.streamVersion - count + index + 1,
        position: written.positions[index] as number,
        timestamp: written.timestamp,
      } as Recorded<E>;
      const kids = personal?.[index]?.kids;
      if (kids !== undefined) markPersonal(event, kids);
      return event;
    });
    return {
      nextExpectedVersion: written.streamVersion,
      position: written.positions[written.positions.length - 1] as number,
      events: recorded,
    };
  }

  readStream(streamId: string, options: ReadStreamOptions & { raw: true }): AsyncIterable<Recorded>;
  readStream(streamId: string, options?: ReadStreamOptions): AsyncIterable<Recorded<E>>;
  readStream(streamId: string, options: ReadStreamOptions = {}): AsyncIterable<Recorded> {
    let remaining = 0;
    let from = 0;
    let direction: ReadDirection = 'forward';
    let opened: Map<object, Opened> | undefined;
    const start = (): void => {
      this.assertOpen();
      assertStreamId(streamId);
      direction = options.direction ?? 'forward';
      if (direction !== 'forward' && direction !== 'backward') {
        throw new InvalidArgumentError(`direction must be "forward" or "backward", got ${String(direction)}`);
      }
      remaining = optionalCount('limit', options.limit) ?? Number.POSITIVE_INFINITY;
      from = optionalCount('fromVersion', options.fromVersion) ?? (direction === 'forward' ? 1 : Number.MAX_SAFE_INTEGER);
    };
    return pagedRead(start, async () => {
      if (remaining <= 0 || from < 1) return undefined;
      this.assertOpen();
      const pageLimit = Math.min(this.pageSize, remaining);
      const rows = await this.readStreamRows(streamId, from, direction, pageLimit);
      remaining = rows.length < pageLimit ? 0 : remaining - rows.length;
      const last = rows[rows.length - 1];
      if (last) from = direction === 'forward' ? last.streamVersion + 1 : last.streamVersion - 1;
      opened = await this.#openPage(rows, options.raw === true);
      return rows;
    }, (row) => {
      const decoded = decodeRow(row, this.#registry, options.raw === true, undefined, opened?.get(row));
      // Backward is newest first down to the parts of a split: its last part is the stream's last event.
      return direction === 'backward' && Array.isArray(decoded) ? decoded.reverse() : decoded;
    });
  }

  readAll(options: ReadAllOptions & { raw: true }): AsyncIterable<Recorded>;
  readAll(options?: ReadAllOptions): AsyncIterable<Recorded<E>>;
  readAll(options: ReadAllOptions = {}): AsyncIterable<Recorded> {
    let after = 0;
    let remaining = 0;
    let opened: Map<object, Opened> | undefined;
    const types = options.types;
    const category = options.category;
    const filter: LogFilter = {};
    // Schema evolution: a typed read fetches the stored names of its types (old names, split types)
    // and keeps only the asked types of a split's parts; a stored event that left none does not count
    // against the limit (else a page of such events would end a read with nothing read).
    let atEnd = false;
    const decoding: DecodeFilter = {
      keep: undefined,
      skipped: () => {
        if (!atEnd) remaining += 1;
      },
    };
    const keepLifecycle = keepsLifecycleEvents(options.raw === true, types);
    const start = (): void => {
      this.assertOpen();
      after = options.after ?? 0;
      if (!Number.isSafeInteger(after) || after < 0) {
        throw new InvalidArgumentError(`after must be a non-negative integer position, got ${String(options.after)}`);
      }
      remaining = optionalCount('limit', options.limit) ?? Number.POSITIVE_INFINITY;
      if (types !== undefined && (!Array.isArray(types) || types.some((t) => typeof t !== 'string' || t === ''))) {
        throw new InvalidArgumentError('types must be an array of event type names');
      }
      if (types !== undefined && types.length === 0) remaining = 0;
      checkCategory(category);
      if (types !== undefined && this.#registry !== undefined && options.raw !== true) {
        const stored = this.#registry.storedTypesFor(types);
        filter.types = stored.types;
        decoding.keep = stored.keep;
      } else if (types !== undefined) filter.types = types;
      if (category !== undefined) filter.category = category;
    };
    const read = pagedRead(start, async () => {
      if (remaining <= 0) return undefined;
      this.assertOpen();
      const pageLimit = Math.min(this.pageSize, remaining);
      const rows = await this.readAllRows(after, pageLimit, filter);
      // The end of the log is told by the rows the adapter returned; the limit counts the ones kept.
      const kept = keepLifecycle ? rows : rows.filter((row) => !isLifecycleType(row.type));
      atEnd = rows.length < pageLimit;
      remaining = atEnd ? 0 : remaining - kept.length;
      const last = rows[rows.length - 1];
      if (last) after = last.position;
      opened = await this.#openPage(kept, options.raw === true);
      return kept;
    }, (row) => decodeRow(row, this.#registry, options.raw === true, decoding.keep, opened?.get(row)), decoding.skipped);
    return Object.defineProperty(read, LOOKED_THROUGH, { get: () => after });
  }

  async deleteStream(streamId: string, options: DeleteStreamOptions = {}): Promise<LifecycleResult> {
    this.assertOpen();
    assertStreamId(streamId);
    return this.#lifecycle(streamId, deleteRequest(options, checkedExpected));
  }

  async truncateStream(streamId: string, beforeVersion: number, options: TruncateStreamOptions = {}): Promise<LifecycleResult> {
    this.assertOpen();
    assertStreamId(streamId);
    return this.#lifecycle(streamId, truncateRequest(beforeVersion, options, checkedExpected));
  }

  async archiveStream(streamId: string, options: ArchiveStreamOptions = {}): Promise<LifecycleResult> {
    this.assertOpen();
    assertStreamId(streamId);
    return this.#lifecycle(streamId, archiveRequest(options, checkedExpected));
  }

  /**
   * The events `archiveStream` moved out of the log, in version order, decoded like any read (personal
   * fields of forgotten subjects read as the marker).
   */
  readArchived(streamId: string, options: { raw: true }): AsyncIterable<Recorded>;
  readArchived(streamId: string, options?: { raw?: boolean }): AsyncIterable<Recorded<E>>;
  readArchived(streamId: string, options: { raw?: boolean } = {}): AsyncIterable<Recorded> {
    let from = 1;
    let done = false;
    let opened: Map<object, Opened> | undefined;
    const raw = options.raw === true;
    return pagedRead(() => {
      this.assertOpen();
      assertStreamId(streamId);
    }, async () => {
      if (done) return undefined;
      this.assertOpen();
      const rows = await this.readArchivedRows(streamId, from, this.pageSize);
      done = rows.length < this.pageSize;
      const last = rows[rows.length - 1];
      if (last) from = last.streamVersion + 1;
      opened = await this.#openPage(rows, raw);
      return rows;
    }, (row) => decodeRow(row, this.#registry, raw, undefined, opened?.get(row)));
  }

  async #lifecycle(streamId: string, request: LifecycleRequest): Promise<LifecycleResult> {
    // A subject's stream records its erasures: closed or emptied, a later forget could not tell the views.
    if (streamId.startsWith(subjectStreamId(''))) {
      throw new InvalidArgumentError(`Cannot ${request.kind} stream "${streamId}": the $subject- streams record forget's erasures, which views rely on; they are never deleted, truncated or archived.`);
    }
    const { position } = await this.writeLifecycle(streamId, request);
    this.notifyAppended(position);
    return { position };
  }

  /**
   * Erases the subject's personal data: records the erasure and destroys the subject's keys (see
   * SubjectKeyStore), then appends `$subject.forgotten` to the stream `$subject-<subject>`. From then on
   * the subject's personal fields read as the redaction marker everywhere, copies sealed with the keys
   * (snapshots, dead letters) cannot be opened, and appends of personal data for the subject fail
   * with SubjectForgottenError until `allowNewKey(subject)`. Idempotent.
   */
  async forget(subject: string): Promise<ForgetReport> {
    this.assertOpen();
    return forgetSubject(this.#personalData('forget'), subject, async (streamId, event) => {
      const position = (await this.writeEvents(streamId, [event], 'any')).positions[0] as number;
      this.notifyAppended(position);
      return position;
    });
  }

  /**
   * Lets a forgotten subject have personal data again, under a new key (their data from before the
   * erasure stays unreadable). Returns nothing secret.
   */
  async allowNewKey(subject: string): Promise<void> {
    this.assertOpen();
    await this.#personalData('allowNewKey').allowNewKey(subject);
  }

  /** This store's personal data (keys, sealing), for the parts of eskit that copy event data. */
  get personalData(): PersonalData | undefined {
    return this.#personal;
  }

  #personalData(what: string): PersonalData {
    if (this.#personal === undefined) {
      throw new InvalidArgumentError(`${what} needs a key store for personal data: this store was made without subjectKeys (the bundled adapters always have one)`);
    }
    return this.#personal;
  }

  /** A typed read's page with its personal fields opened (one key lookup); raw reads get envelopes. */
  async #openPage(rows: readonly StoredEventRow[], raw: boolean): Promise<Map<object, Opened> | undefined> {
    if (raw || this.#personal === undefined || rows.length === 0) return undefined;
    return this.#personal.openPage(rows);
  }

  async streamVersion(streamId: string): Promise<number> {
    this.assertOpen();
    assertStreamId(streamId);
    return this.readStreamVersion(streamId);
  }

  /**
   * The stored type names a typed read of `types` fetches: with a registry, also the old names of
   * renamed types and the stored types that split into them. For code that reads raw or queries the
   * log table itself (the SQL views' waitFor) and must select what a typed read would.
   */
  storedTypes(types: readonly string[]): string[] {
    return this.#registry === undefined ? [...types] : [...this.#registry.storedTypesFor(types).types];
  }

  async headPosition(): Promise<number> {
    this.assertOpen();
    return this.readHeadPosition();
  }

  onAppend(listener: (position: number) => void): () => void {
    this.#appendListeners.add(listener);
    return () => {
      this.#appendListeners.delete(listener);
    };
  }

  /** Wakes the append listeners. Adapters that hear of other processes' appends call it too. */
  protected notifyAppended(position: number): void {
    for (const listener of this.#appendListeners) {
      try {
        listener(position);
      } catch {
        // A listener's failure must not fail the append that already committed.
      }
    }
  }

  /** How many append listeners are registered (adapters start a LISTEN connection only when needed). */
  protected get appendListenerCount(): number {
    return this.#appendListeners.size;
  }

  /** Waits for the appends already made (group commit may still be writing them), then lets go. Every call waits alike. */
  close(): Promise<void> {
    if (this.#closing === undefined) {
      this.#closed = true;
      this.#appendListeners.clear();
      this.#closing = this.closeResources();
    }
    return this.#closing;
  }
}
