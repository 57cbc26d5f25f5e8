import { v7 as uuidv7 } from 'uuid';
import { ConcurrencyError, ErrorCode, InvalidArgumentError, isEskitError } from '../core/errors.js';
import type { EventShape, Metadata, NewEvent, Recorded } from '../core/event.js';
import { backoffDelay, delay, retryPolicy } from '../core/retry.js';
import type { RetryPolicy } from '../core/retry.js';
import { assertExpectedVersion } from '../core/store.js';
import type { SnapshotStore } from '../core/snapshot.js';
import type { EventStore, ExpectedVersion } from '../core/store.js';
import { activeTracer, inSpan, SpanName, TelemetryAttribute } from '../telemetry/telemetry.js';
import { decidedEvents } from './decider.js';
import type { Decider } from './decider.js';
import { DeciderSnapshots, replay } from './snapshots.js';
import type { LoadedStream, SnapshotOptions } from './snapshots.js';
import { personalDataOf } from '../core/personal/personal-data.js';
import { markPersonalError } from '../core/personal/withheld.js';
import { acquireStream } from './stream-queue.js';

/** Conflict retries: default 5 attempts in all, waits from 5 ms doubling up to 200 ms, full jitter. */
export type RetryOptions = Partial<RetryPolicy>;

export interface CommandHandlerOptions<S, C, E extends EventShape> {
  /** Where the streams live: `memory()`, `sqlite({ path })`, `postgres({ connectionString })`, or give `store`. */
  backend?: { readonly store: EventStore<E>; readonly snapshots?: SnapshotStore };
  store?: EventStore<E>;
  decider: Decider<S, C, E>;
  /** How conflicts with concurrent writers are retried. */
  retry?: RetryOptions;
  /**
   * Load streams from snapshots and write them as commands go (`{ version: 1 }`: every 100 events, in
   * `backend.snapshots`). Without it, every command folds the whole stream. See `SnapshotOptions`.
   */
  snapshots?: SnapshotOptions<S>;
}

/** A stream's state as `aggregate` reads it. */
export interface AggregateResult<S> {
  state: S;
  /** The stream's version: pass it as `expectedVersion` for a command based on this state. */
  version: number;
  /** Global position of the stream's last event; undefined when the stream has no events. */
  position: number | undefined;
}

export interface HandleOptions {
  /** Copied onto every new event. `correlationId` and `causationId` default to the command id. */
  metadata?: Metadata;
  /** Identifies this command; default a fresh UUIDv7. Stays the same across retries. */
  commandId?: string;
  /**
   * The version the caller based the command on (for example the version a UI showed). It is checked
   * against the stream before `decide` runs and again by the append; a conflict is then thrown at
   * once, never retried, because a retry could only decide on a state the caller has not seen.
   */
  expectedVersion?: ExpectedVersion;
  /** Cancels the command while it waits to retry (and before each attempt); the call rejects with the signal's reason. */
  signal?: AbortSignal;
}

export interface HandleResult<S, E extends EventShape> {
  /** The state after the new events (the loaded state when nothing was appended). */
  state: S;
  /** The events as appended, in order; empty when `decide` returned none. */
  events: Recorded<E>[];
  /** The stream's version after the command: pass it as `expectedVersion` for a follow-up command. */
  nextExpectedVersion: number;
  /**
   * Global position of the stream's last event that `state` reflects: the last appended event, or,
   * when nothing was appended, the last event read. Wait for a view to reach it to read your own
   * writes, and the view then also reflects the state a no-op decision was based on.
   * `undefined` only when the stream has no events at all. Check `events.length` to know whether
   * anything was written.
   */
  position: number | undefined;
}

const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 5, initialDelayMs: 5, maxDelayMs: 200 };

/**
 * Runs commands against a decider: load the stream, fold it, decide, append with the version read.
 *
 * Commands to one stream through one store object run one at a time, in the order they arrived,
 * whichever CommandHandler they go through, so they never conflict with each other. A writer
 * elsewhere (another process, or another store object on the same database) can still append in
 * between: the append then fails with `ESKIT_CONCURRENCY`, and the handler loads the stream again and
 * decides anew, after an exponential backoff with full jitter (a random wait between 0 and the
 * current bound), up to `maxAttempts`. After the last attempt it throws a `ConcurrencyError` that
 * says how many attempts were made, with the last conflict as its cause. Errors thrown by `decide`
 * are domain rejections: thrown unchanged, never retried.
 *
 * With `snapshots`, a load starts from the stream's latest usable snapshot and folds only the events
 * after it, and snapshots are written after commands, outside the append (see `SnapshotOptions`).
 * A stream whose first events were truncated away, with no snapshot covering them, fails with
 * `StreamHistoryMissingError` rather than being decided on a partial history.
 */
export class CommandHandler<S, C, E extends EventShape> {
  readonly #store: EventStore<E>;
  readonly #decider: Decider<S, C, E>;
  readonly #retry: RetryPolicy;
  readonly #snapshots: DeciderSnapshots<S, E> | undefined;

  constructor(options: CommandHandlerOptions<S, C, E>) {
    if (typeof options !== 'object' || options === null) {
      throw new InvalidArgumentError('CommandHandler needs an options object with a backend (or a store) and a decider');
    }
    const { decider } = options;
    const store = options.store ?? options.backend?.store;
    if (typeof store?.append !== 'function' || typeof store.readStream !== 'function') {
      throw new InvalidArgumentError('CommandHandler needs a backend (memory(), sqlite({ path }), postgres({ connectionString })) or an event store (options.store)');
    }
    if (typeof decider?.decide !== 'function' || typeof decider.evolve !== 'function' || !('initialState' in decider)) {
      throw new InvalidArgumentError('CommandHandler needs a decider with initialState, decide and evolve (options.decider)');
    }
    this.#store = store;
    this.#decider = decider;
    this.#retry = retryPolicy(options.retry, DEFAULT_RETRY);
    this.#snapshots =
      options.snapshots === undefined ? undefined : new DeciderSnapshots<S, E>(options.snapshots, decider as Decider<S, unknown, E>, options.backend?.snapshots);
  }

  get decider(): Decider<S, C, E> {
    return this.#decider;
  }

  /**
   * The stream's current state, loaded as a command would load it (from a snapshot when there is a
   * usable one), without deciding anything. Writes nothing, snapshots included.
   */
  async aggregate(streamId: string): Promise<AggregateResult<S>> {
    const { state, version, position } = await this.#load(streamId);
    return { state, version, position };
  }

  /**
   * Waits until the snapshots that commands have started writing are written (or failed, which is
   * logged). Snapshots are written after a command returns, so that they never delay or fail it:
   * call this before closing the backend, or in a test before reading the snapshot store.
   */
  flushSnapshots(): Promise<void> {
    return this.#snapshots?.flush() ?? Promise.resolve();
  }

  handle(streamId: string, command: C, options: HandleOptions = {}): Promise<HandleResult<S, E>> {
    const tracer = activeTracer();
    if (tracer === undefined) return this.#handle(streamId, command, options, undefined);
    const type = (command as { type?: unknown } | null | undefined)?.type;
    const attributes = {
      [TelemetryAttribute.StreamId]: String(streamId),
      ...(typeof type === 'string' ? { [TelemetryAttribute.CommandType]: type } : {}),
    };
    // The appends (one per attempt) become children of this span: it is active while they run.
    return inSpan(tracer, SpanName.Command, { attributes }, async (span) => {
      const result = await this.#handle(streamId, command, options, (attempts) => {
        span.setAttribute(TelemetryAttribute.CommandAttempts, attempts);
      });
      span.setAttribute(TelemetryAttribute.EventCount, result.events.length);
      span.setAttribute(TelemetryAttribute.StreamVersion, result.nextExpectedVersion);
      if (result.position !== undefined) span.setAttribute(TelemetryAttribute.Position, result.position);
      return result;
    });
  }

  async #handle(
    streamId: string,
    command: C,
    options: HandleOptions,
    attempted: ((attempts: number) => void) | undefined,
  ): Promise<HandleResult<S, E>> {
    const { signal, expectedVersion } = options;
    const metadata = this.#metadataFor(options);
    signal?.throwIfAborted();
    // One writer per stream in this process: commands to the stream wait for each other here rather
    // than conflict at the append and retry (50 concurrent ones on PostgreSQL otherwise spend most of
    // their attempts losing to each other).
    const release = await acquireStream(this.#store, streamId, signal);
    try {
      // The caller's version is a statement about the state it saw; re-deciding on a newer state would
      // silently break it, so such a command gets exactly one attempt.
      const maxAttempts = expectedVersion === undefined ? this.#retry.maxAttempts : 1;
      for (let attempt = 1; ; attempt++) {
        signal?.throwIfAborted();
        attempted?.(attempt);
        const outcome = await this.#attempt(streamId, command, metadata, expectedVersion);
        if (!('conflict' in outcome)) return outcome;
        if (expectedVersion !== undefined) throw outcome.conflict;
        if (attempt >= maxAttempts) throw gaveUp(outcome.conflict, attempt);
        await delay(backoffDelay(this.#retry, attempt), signal);
      }
    } finally {
      release();
    }
  }

  /**
   * One load-decide-append round. A conflict of the append comes back as a value, so that only it is
   * retried: anything else, a concurrency error thrown by `decide` included, propagates as is.
   */
  async #attempt(
    streamId: string,
    command: C,
    metadata: Metadata,
    expectedVersion: ExpectedVersion | undefined,
  ): Promise<HandleResult<S, E> | { conflict: ConcurrencyError }> {
    const decider = this.#decider;
    const loaded = await this.#load(streamId);
    let { state } = loaded;
    const { version, position } = loaded;
    if (expectedVersion !== undefined) assertExpectedVersion(streamId, expectedVersion, version);
    // Before decide, which may change the state it is given: a snapshot is built from this copy only.
    const prepared = this.#snapshots?.prepare(streamId, loaded);

    let decided: E[];
    try {
      decided = decidedEvents(decider.decide(state, command));
    } catch (error) {
      // Yours as thrown; spans record it withheld when the state was folded from personal fields.
      if (loaded.kids.size > 0) markPersonalError(error);
      throw error;
    }
    if (decided.length === 0) return { state, events: [], nextExpectedVersion: version, position };

    const toAppend = decided.map((event) => ({ type: event.type, data: event.data, metadata: { ...metadata } }) as NewEvent<E>);
    let appended;
    try {
      appended = await this.#store.append(streamId, toAppend, { expectedVersion: expectedVersion ?? version });
    } catch (error) {
      if (isEskitError(error, ErrorCode.Concurrency)) return { conflict: error as ConcurrencyError };
      throw error;
    }
    this.#snapshots?.committed(streamId, prepared, appended.events, personalDataOf(this.#store));
    // The events as appended (validated by the registry, equal to a read), as a later load folds them:
    // not decide's own objects, which a validate that fills defaults or normalises would not match.
    for (const event of appended.events) state = decider.evolve(state, event as unknown as E);
    return {
      state,
      events: appended.events,
      nextExpectedVersion: appended.nextExpectedVersion,
      position: appended.position,
    };
  }

  #load(streamId: string): Promise<LoadedStream<S>> {
    const snapshots = this.#snapshots;
    return snapshots === undefined ? replay(this.#store, this.#decider as Decider<S, unknown, E>, streamId) : snapshots.load(this.#store, streamId);
  }

  #metadataFor(options: HandleOptions): Metadata {
    const { metadata, commandId } = options;
    if (metadata !== undefined && (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata))) {
      throw new InvalidArgumentError('options.metadata must be a plain object of metadata keys');
    }
    if (commandId !== undefined && (typeof commandId !== 'string' || commandId.length === 0)) {
      throw new InvalidArgumentError(`options.commandId must be a non-empty string, got ${JSON.stringify(commandId) ?? String(commandId)}`);
    }
    const id = commandId ?? uuidv7();
    return { ...metadata, correlationId: metadata?.correlationId ?? id, causationId: metadata?.causationId ?? id };
  }
}

/** The conflict that ended the last attempt, retold with how many attempts were made (it is the cause). */
function gaveUp(conflict: ConcurrencyError, attempts: number): ConcurrencyError {
  // Another package copy's error has the fields but not the class: read them, do not rely on instanceof.
  const { streamId, expectedVersion, actualVersion } = conflict;
  return new ConcurrencyError(streamId, expectedVersion, actualVersion, { attempts, cause: conflict });
}
