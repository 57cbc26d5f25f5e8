import type { Backend } from '../core/backend.js';
import type { CheckpointStore } from '../core/checkpoint.js';
import { AlreadyStartedError, InvalidArgumentError, RebuildFailedError } from '../core/errors.js';
import type { EventShape, Recorded } from '../core/event.js';
import { consoleLogger } from '../core/logger.js';
import type { Logger } from '../core/logger.js';
import { retryPolicy } from '../core/retry.js';
import type { EventStore } from '../core/store.js';
import { readsLifecycleRow, storedTypesOf } from '../core/store-base.js';
import { Subscription } from '../subscription/subscription.js';
import type { ChangeFeed } from './change-feed.js';
import type { WaitForOptions } from './progress.js';
import { ViewSignals } from './signals.js';
import { applyPinned } from './sql-rebuild.js';
import type { PinnedFailures, RebuildOptions, RebuildResult } from './sql-rebuild.js';
import { subscriptionOptionsOf } from './types.js';
import type { RebuildProgress, ViewOptions, ViewStatus } from './types.js';

export interface MemoryViewOptions<S, E extends EventShape> extends ViewOptions<E> {
  /** Where the events come from: any backend (`memory()`, `sqlite()`, `postgres()`), or give `store`. */
  backend?: Pick<Backend<E>, 'store'>;
  store?: EventStore<E>;
  /** The state before the first event. */
  initialState: S;
  /**
   * Returns the state after `event`. It must not change `state` in place: a batch whose evolve throws
   * is discarded whole, and that only works if the old state is untouched.
   */
  evolve: (state: S, event: Recorded<E>) => S;
}

/** What `MemoryView.rebuild()` takes: a SQL view's rebuild options, less those only shadow tables have. */
export type MemoryRebuildOptions = Pick<RebuildOptions, 'onProgress' | 'signal' | 'batchSize'>;

/** What `MemoryView.rebuild()` resolves with; `generation` counts the rebuilds of this instance. */
export type MemoryRebuildResult = Pick<RebuildResult, 'position' | 'events' | 'generation' | 'durationMs'>;

/**
 * A view whose state lives in this process's memory: for the memory store, and for small derived
 * state on any backend (a lookup table, a counter). It is rebuilt from the log on every start of the
 * process (its checkpoint is in memory too), and each process that runs it keeps its own copy, so it
 * takes no leader lock.
 *
 * Exactly once: a batch is folded into a new state, and the state and its checkpoint are replaced
 * together in one synchronous step, after the whole batch succeeded.
 *
 * `rebuild()` folds the log again from `initialState` while this state keeps serving: after fixing
 * evolve (hot reload in development, a feature flag), or to drop what the state has accumulated.
 */
export class MemoryView<S, E extends EventShape = EventShape> {
  readonly name: string;
  readonly #options: MemoryViewOptions<S, E>;
  readonly #store: EventStore<E>;
  readonly #logger: Logger;
  readonly #subscription: Subscription<E>;
  readonly #signals: ViewSignals<E>;
  readonly #evolve: (state: S, event: Recorded<E>) => S;
  #state: S;
  #checkpoint: number | undefined;
  #rebuilding: RebuildProgress | undefined;
  #generation = 0;
  /** About how many events `state` has folded in (a rebuild's `total` counts only the events past them). */
  #folded = 0;
  /**
   * The batches the live view applies during a rebuild's last round. A rebuild that read the log
   * itself to the live checkpoint would race the live view, which may always be one batch further by
   * the time the read returns; these let the swap take the rest synchronously.
   */
  #tail: Array<readonly Recorded<E>[]> | undefined;

  constructor(options: MemoryViewOptions<S, E>) {
    if (typeof options.evolve !== 'function') throw new InvalidArgumentError(`MemoryView "${String(options.name)}" needs an evolve(state, event) function.`);
    const store = options.store ?? options.backend?.store;
    if (store === undefined) throw new InvalidArgumentError(`MemoryView "${String(options.name)}" needs a backend (memory(), sqlite({ path }), postgres(...)) or a store.`);
    this.name = options.name;
    this.#options = options;
    this.#store = store;
    this.#evolve = options.evolve;
    this.#state = options.initialState;
    const logger = (this.#logger = options.logger ?? consoleLogger());
    const checkpoints: CheckpointStore = {
      load: async () => this.#checkpoint,
      claim: async () => this.#checkpoint,
      save: async (_name, position) => {
        // The runner saves where it read, which may be short of where a rebuild swapped in.
        if (position <= (this.#checkpoint ?? 0)) return;
        this.#checkpoint = position;
        this.#signals.advanced(position);
      },
      list: async () => [],
    };
    // eagerPassOver: the checkpoint is this object's memory, so passing over events the view does not
    // get (other types, a split's other parts) costs nothing, and waitFor on one returns at once.
    this.#subscription = new Subscription<E>({
      ...subscriptionOptionsOf(options),
      store,
      checkpoints,
      logger,
      batchHandler: (events) => this.#apply(events),
    }, { checkpointsInHandler: true, kind: 'view', eagerPassOver: true });
    this.#signals = new ViewSignals<E>({
      view: options.name,
      store,
      types: options.types,
      category: options.category,
      keysOf: options.keysOf,
      debounceMs: options.debounceMs,
      maxKeys: options.maxKeys,
      pollIntervalMs: options.checkpointPollMs ?? 50,
      logger,
      readCheckpoint: async () => this.#checkpoint,
      isLeading: () => true,
    });
  }

  /** The current state (as of `position`). */
  get state(): S {
    return this.#state;
  }

  /** The position of the last event reflected in `state` (undefined before the first). */
  get position(): number | undefined {
    return this.#checkpoint;
  }

  /** "View changed" notifications, with the affected keys when the view has `keysOf`. */
  get changes(): ChangeFeed {
    return this.#signals.changes;
  }

  /** Starts following the log in the background (catching up first). */
  start(): Promise<void> {
    return this.#subscription.start();
  }

  /** Lets the batch in flight finish, then stops. Safe to call twice; the state stays. */
  stop(): Promise<void> {
    return this.#subscription.stop();
  }

  /** Resolves when stopped, rejects when the view failed for good: see `Subscription.done`. */
  get done(): Promise<void> {
    return this.#subscription.done;
  }

  async whenStopped(): Promise<ViewStatus> {
    await this.#subscription.whenStopped();
    return this.status();
  }

  async status(): Promise<ViewStatus> {
    const status = await this.#subscription.status();
    const rebuilding = this.#rebuilding && { ...this.#rebuilding };
    return { ...status, setupVersion: 0, rebuilding };
  }

  /** Resolves once `state` reflects every event up to `position` (what an append returned). */
  waitFor(position: number, options?: WaitForOptions): Promise<void> {
    return this.#signals.waitFor(position, options);
  }

  /**
   * Folds every event of the view's types, from the start of the log, into a new state built from
   * `initialState`, while the view keeps serving (and, when started, following the log) with its old
   * state. Once the new state has caught up with the head and with the live checkpoint, it replaces the
   * state and the checkpoint in one synchronous step: readers see the old state or the new one, and the
   * checkpoint (so `waitFor`) never moves backwards. Change listeners are then told "everything changed".
   * Events after the swap are applied to the new state. Not started, it just replaces the state and
   * checkpoint (start() goes on from there).
   *
   * An event evolve keeps failing on (retried with the view's `retry`) is skipped when the view has
   * `deadLetters` (dead-lettered once: the live view may have done so already) or `onHandlerFailure`
   * says 'skip'; else the rebuild rejects with `RebuildFailedError` naming its position. A failed or
   * aborted (`signal`) rebuild leaves the state as it was. One rebuild at a time (`ESKIT_ALREADY_STARTED`).
   */
  async rebuild(options: MemoryRebuildOptions = {}): Promise<MemoryRebuildResult> {
    if (this.#rebuilding) throw new AlreadyStartedError(`A rebuild of view "${this.name}"`);
    const batchSize = options.batchSize ?? 1000;
    if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new InvalidArgumentError(`batchSize must be a positive integer, got ${String(batchSize)}`);
    const { signal } = options;
    const started = performance.now();
    const progress: RebuildProgress = { done: 0, total: 0 };
    this.#rebuilding = progress;
    const report = (): void => {
      try {
        options.onProgress?.({ ...progress });
      } catch (error) {
        this.#logger.warn({ view: this.name, err: error }, `View "${this.name}": the rebuild progress callback threw`);
      }
    };
    const { retry, onHandlerFailure, deadLetters, types, category } = this.#options;
    const failures: PinnedFailures<E> = {
      view: this.name,
      retry: retryPolicy(retry, defaultRebuildRetry),
      onHandlerFailure,
      deadLetters,
      logger: this.#logger,
      signal,
      source: this.name,
      doing: 'rebuild',
      fail: (event, error) => new RebuildFailedError(this.name, event.position, error),
    };
    try {
      signal?.throwIfAborted();
      let state = this.#options.initialState;
      let position = 0;
      // Two rounds, each to the end of the log: the replay, then a short one that also keeps what the
      // live view applies meanwhile, which the swap folds in (see #tail).
      for (let round = 0; round < 2; round++) {
        if (round === 1) this.#tail = [];
        const head = await this.#store.headPosition();
        // The state already folded (or skipped) every event up to the live checkpoint: count only past it.
        const [known, counted] = round === 0 && this.#checkpoint !== undefined ? [this.#folded, this.#checkpoint] : [0, position];
        progress.total = progress.done + known + (await this.#countRelevant(counted, head, batchSize, signal));
        report();
        for (;;) {
          signal?.throwIfAborted();
          const batch: Recorded<E>[] = [];
          for await (const event of this.#store.readAll({ after: position, limit: batchSize, types, category })) batch.push(event);
          if (batch.length > 0) {
            await applyPinned(
              batch,
              async (events) => {
                state = this.#fold(state, events);
              },
              failures,
            );
            position = (batch[batch.length - 1] as Recorded<E>).position;
            progress.done += batch.length;
            progress.total = Math.max(progress.total, progress.done);
            report();
          }
          if (batch.length < batchSize) break;
          // A synchronous driver (SQLite) would otherwise hold the event loop, and the live view, for the whole replay.
          await new Promise((resolve) => setImmediate(resolve));
        }
        // The last read began after `head` was read, so every event up to `head` is folded in.
        position = Math.max(position, head);
      }
      signal?.throwIfAborted();
      // From here to the swap is synchronous, so the live view cannot move in between. Whatever it got
      // past `position` it applied during the second round (its checkpoint was at most that round's
      // head when #tail began): those events are in #tail, or were skipped by it as failing.
      for (const batch of this.#tail ?? []) {
        for (const event of batch) {
          if (event.position <= position) continue;
          try {
            state = this.#evolve(state, event);
          } catch (error) {
            throw new RebuildFailedError(this.name, event.position, error);
          }
          progress.done++;
        }
      }
      position = Math.max(position, this.#checkpoint ?? 0);
      this.#state = state;
      this.#folded = progress.done;
      if (position > 0) this.#checkpoint = position;
      const generation = ++this.#generation;
      this.#signals.replaced(position, position);
      progress.total = progress.done;
      report();
      const result: MemoryRebuildResult = { position, events: progress.done, generation, durationMs: performance.now() - started };
      this.#logger.info({ view: this.name, ...result }, `View "${this.name}": rebuilt and swapped in at position ${position}`);
      return result;
    } finally {
      this.#rebuilding = undefined;
      this.#tail = undefined;
    }
  }

  #apply(events: readonly Recorded<E>[]): void {
    // A rebuild may have swapped in a state that has these already (read before the swap, or by a
    // runner behind the checkpoint the swap set).
    const after = this.#checkpoint ?? 0;
    const fresh = (events[0] as Recorded<E>).position > after ? events : events.filter((event) => event.position > after);
    if (fresh.length === 0) return;
    this.#state = this.#fold(this.#state, fresh);
    this.#folded += fresh.length;
    const position = (fresh[fresh.length - 1] as Recorded<E>).position;
    this.#checkpoint = position;
    this.#tail?.push(fresh);
    this.#signals.committed(fresh, position, position);
  }

  #fold(state: S, events: readonly Recorded<E>[]): S {
    for (const event of events) state = this.#evolve(state, event);
    return state;
  }

  /** Events of the view's types in (after, upTo], for the rebuild's `total`: read a page at a time, as the replay is. */
  async #countRelevant(after: number, upTo: number, pageSize: number, signal: AbortSignal | undefined): Promise<number> {
    let count = 0;
    let position = after;
    for (;;) {
      signal?.throwIfAborted();
      let read = 0;
      const { types, category } = this.#options;
      for await (const event of this.#store.readAll({ after: position, limit: pageSize, types: storedTypesOf(this.#store, types), category, raw: true })) {
        read++;
        if (event.position > upTo) return count;
        if (readsLifecycleRow(event.type, types)) count++;
        position = event.position;
      }
      if (read < pageSize) return count;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
}

const defaultRebuildRetry = { maxAttempts: 3, initialDelayMs: 50, maxDelayMs: 1000 };
