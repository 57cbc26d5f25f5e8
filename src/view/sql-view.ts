import { randomUUID } from 'node:crypto';
import { deadLetterFor } from '../core/dead-letter-checks.js';
import { addDeadLetter } from '../core/storable-letter.js';
import type { CheckpointStore } from '../core/checkpoint.js';
import type { DeadLetter } from '../core/dead-letter.js';
import { AlreadyStartedError, ErrorCode, InvalidArgumentError, isEskitError, MigrationError } from '../core/errors.js';
import type { EventShape, Recorded } from '../core/event.js';
import type { Lease, LockRegistry } from '../core/lock.js';
import type { RunnerStatusStore } from '../core/runner-status.js';
import { consoleLogger } from '../core/logger.js';
import type { Logger } from '../core/logger.js';
import { backoffDelay, delay, retryPolicy } from '../core/retry.js';
import type { RetryPolicy } from '../core/retry.js';
import type { EventStore } from '../core/store.js';
import { checkSqlViewSpec, checkTableName } from '../core/view-backend.js';
import type { SqlViewBackend, SqlViews, SqlViewSetup, SqlViewTx, ViewMeta } from '../core/view-backend.js';
import { Subscription } from '../subscription/subscription.js';
import type { ChangeFeed } from './change-feed.js';
import { RebuildFailedError } from '../core/errors.js';
import type { WaitForOptions } from './progress.js';
import { ViewSignals } from './signals.js';
import { subscriptionOptionsOf } from './types.js';
import type { Observable, RebuildProgress, ViewOptions, ViewStatus, Waitable } from './types.js';
import { instruments, TelemetryAttribute } from '../telemetry/telemetry.js';

/**
 * What a SQL view runs on: `sqlite({ path })` or `postgres({ connectionString })`, whose `views` keep
 * the view's tables next to the events. Composing your own: `{ store, views: new SqliteViews({ store }) }`.
 * `SqlViewHost<E>` is any of them, for a view whose evolve uses only `table` and `upsert`.
 */
export interface SqlViewHost<E extends EventShape, Tx = SqlViewTx, R = void | Promise<void>> {
  readonly store: EventStore<E>;
  readonly views: SqlViews<E, Tx, R>;
  /** Leader election for what runs on this backend; undefined when it is off. */
  readonly locks?: LockRegistry | undefined;
  /** Where the view's status row goes (`eskit status`): the one-call backends have it. */
  readonly admin?: { readonly runners: RunnerStatusStore };
}

/**
 * `Tx` and `R` come from the backend: on `postgres()` evolve gets `{ client, table, upsert, flush }`
 * and may be async; on `sqlite()` it gets `{ db, table, prepare, upsert }` and must be synchronous.
 * Leave the type arguments out (type the backend: `postgres<CartEvent>(...)`), or give only `E` for
 * an evolve that uses only `table` and `upsert`, which then runs on either backend.
 */
export interface SqlViewOptions<E extends EventShape, Tx = SqlViewTx, R = void | Promise<void>> extends ViewOptions<E> {
  backend: SqlViewHost<E, Tx, R>;
  setup: SqlViewSetup;
  /**
   * Applies one event, inside the transaction that also saves the checkpoint; a throw rolls the batch
   * back. Give either `evolve` or `evolveBatch`.
   */
  evolve?: (event: Recorded<E>, tx: Tx) => R;
  /**
   * Instead of `evolve`: applies a batch of events (in log order) at once, for example with one
   * multi-row statement. Same transaction, same guarantees; a batch that keeps failing is retried one
   * event at a time, so it must also work for a single event.
   */
  evolveBatch?: (events: readonly Recorded<E>[], tx: Tx) => R;
  /**
   * Leader election: one node updates the view; the others stand by (and can still read it). Default:
   * the backend's (on for `postgres()`); false turns it off.
   */
  leaderLock?: LockRegistry | false;
}

export interface RebuildOptions {
  /** Called as events are applied to the shadow tables (for a progress bar). */
  onProgress?: (progress: RebuildProgress) => void;
  /** Stops the rebuild; the shadow tables are dropped and the live view stays as it was. */
  signal?: AbortSignal;
  /** Events per shadow transaction. Default 1000. */
  batchSize?: number;
}

export interface RebuildResult {
  /** The checkpoint the rebuilt view was swapped in at. */
  position: number;
  /** Events applied. */
  events: number;
  /** Incremented by every swap. */
  generation: number;
  durationMs: number;
}

const defaultRebuildRetry: RetryPolicy = { maxAttempts: 3, initialDelayMs: 50, maxDelayMs: 1000 };

/**
 * A read model in SQL tables next to the events, updated exactly once per event: a subscription whose
 * batch handler applies `evolve` and saves the checkpoint in one transaction, rebuilds into shadow
 * tables swapped in atomically, read-your-writes waiting and a change feed. The database side is the
 * backend's (`backend.views`).
 *
 * ```ts
 * const backend = postgres<CartEvent>({ connectionString });
 * const carts = new SqlView({
 *   backend,
 *   name: 'carts',
 *   setup: { version: 1, statements: (t) => [`CREATE TABLE ${t('carts')} (id text PRIMARY KEY, items int NOT NULL)`] },
 *   evolve: (event, { upsert }) => upsert('carts', { id: event.streamId, items: 1 }, { key: ['id'], increment: ['items'] }),
 * });
 * await carts.start();
 * ```
 *
 * How the live view and a rebuild stay out of each other's way: the versions table holds a generation
 * number that every swap increments. The live runner reads it together with its checkpoint, and every
 * transaction it commits checks it first. After a swap, the runner's next transaction is refused
 * (`ViewFencedError`, treated like lost leadership): it rolls back, reloads the checkpoint the swap
 * set, and carries on from there against the new tables. A swap waits until the shadow has caught up
 * with the live checkpoint, so the view's checkpoint never moves backwards.
 */
export class SqlView<E extends EventShape = EventShape, Tx = SqlViewTx, R = void | Promise<void>> implements Waitable, Observable {
  readonly name: string;
  // Nothing kept here is typed by Tx or R: a view of any backend is then a SqlView<E>.
  readonly #options: ViewOptions<E>;
  readonly #store: EventStore<E>;
  readonly #version: number;
  readonly #backend: SqlViewBackend<E>;
  readonly #subscription: Subscription<E>;
  readonly #signals: ViewSignals<E>;
  readonly #logger: Logger;
  #generation: number | undefined;
  #leading = false;
  #rebuilding: RebuildProgress | undefined;

  constructor(options: SqlViewOptions<E, Tx, R>) {
    checkSqlViewSpec('SqlView', options);
    const host = options.backend as Partial<SqlViewHost<E, Tx, R>> | undefined;
    const views = host?.views;
    const store = host?.store;
    if (host === undefined || host === null) {
      throw new InvalidArgumentError(
        `SqlView "${options.name}" needs a backend: sqlite({ path }) or postgres({ connectionString }) (or { store, views } of your own).`,
      );
    }
    if (typeof views?.create !== 'function' || store === undefined) {
      throw new InvalidArgumentError(
        `SqlView "${options.name}": this backend has no SQL views (memory() has none; MemoryView runs there). ` +
          'Give it sqlite({ path }) or postgres({ connectionString }).',
      );
    }
    const { name, types, setup, evolve, evolveBatch } = options;
    const backend = views.create({ name, types, setup, evolve, evolveBatch });
    this.name = name;
    this.#options = options;
    this.#store = store;
    this.#version = setup.version;
    this.#backend = backend;
    this.#logger = options.logger ?? consoleLogger();
    const checkpoints: CheckpointStore = {
      load: () => this.#resume(() => backend.loadCheckpoint()),
      claim: (_name, fencingToken) => this.#resume(() => backend.claimCheckpoint(fencingToken)),
      save: async (_name, position, saveOptions = {}) => {
        // Only for events the runner skipped (dead-lettered): the handler saves everything else.
        await backend.saveCheckpoint(position, this.#generation ?? -1, saveOptions.fencingToken);
        this.#signals.advanced(position);
      },
      list: () => backend.listCheckpoints(),
    };
    const leaderLock = options.leaderLock === false ? undefined : (options.leaderLock ?? host?.locks);
    this.#subscription = new Subscription<E>({
      ...subscriptionOptionsOf(options),
      store,
      checkpoints,
      leaderLock: leaderLock ? this.#watchLeadership(leaderLock) : false,
      logger: this.#logger,
      batchHandler: async (events, context) => {
        await backend.applyLive(events, this.#generation ?? -1, context.fencingToken);
        this.#signals.committed(events, (events[events.length - 1] as Recorded<E>).position);
      },
    }, { checkpointsInHandler: true, onEnded: () => (this.#leading = false), kind: 'view', statusStore: options.backend.admin?.runners });
    this.#signals = new ViewSignals<E>({
      view: name,
      store,
      types,
      keysOf: options.keysOf,
      debounceMs: options.debounceMs,
      maxKeys: options.maxKeys,
      pollIntervalMs: options.checkpointPollMs ?? 50,
      logger: this.#logger,
      readCheckpoint: () => backend.loadCheckpoint(),
      lastRelevant: (after, upTo) => backend.lastRelevant(after, upTo),
      isLeading: () => this.#leading,
    });
  }

  /** "View changed" notifications, with the affected keys when the view has `keysOf`. */
  get changes(): ChangeFeed {
    return this.#signals.changes;
  }

  /** The live table `name` as SQL text, for queries that read the view. */
  table(name: string): string {
    return this.#backend.table(checkTableName(this.name, name));
  }

  /**
   * Creates the view's tables if it was never set up, then follows the log in the background (standing
   * by while another node holds the leader lock). Fails with `ESKIT_MIGRATION` when the stored tables
   * are of another setup version: call `rebuildIfChanged()` first.
   */
  async start(): Promise<void> {
    const meta = await this.#backend.ensureSetup(this.#version);
    this.#checkVersion(meta);
    await this.#subscription.start();
  }

  /** Resolves when stopped, rejects when the view failed for good: see `Subscription.done`. */
  get done(): Promise<void> {
    return this.#subscription.done;
  }

  /** Lets the batch in flight commit, releases leadership. Safe to call twice. */
  async stop(): Promise<void> {
    await this.#subscription.stop();
    this.#leading = false;
  }

  /** Resolves when the view stopped or failed (the status says which, and why). */
  async whenStopped(): Promise<ViewStatus> {
    await this.#subscription.whenStopped();
    return this.status();
  }

  async status(): Promise<ViewStatus> {
    const status = await this.#subscription.status();
    const rebuilding = this.#rebuilding && { ...this.#rebuilding };
    return { ...status, setupVersion: this.#version, rebuilding };
  }

  /** The setup version the stored tables were built with (undefined before the first start or rebuild). */
  async storedVersion(): Promise<number | undefined> {
    return (await this.#backend.readMeta())?.version;
  }

  /**
   * Resolves once the view reflects every event up to `position` (the position an append or a command
   * returned), in this process or any other. Rejects with `ESKIT_TIMEOUT` after `timeoutMs` (default 5000).
   */
  waitFor(position: number, options?: WaitForOptions): Promise<void> {
    return this.#signals.waitFor(position, options);
  }

  /** Rebuilds the view when the stored setup version differs from this code's. Returns undefined when it did not. */
  async rebuildIfChanged(options: RebuildOptions = {}): Promise<RebuildResult | undefined> {
    const meta = await this.#backend.ensureSetup(this.#version);
    if (meta.version === this.#version) return undefined;
    this.#logger.info(
      { view: this.name, from: meta.version, to: this.#version },
      `View "${this.name}": setup version changed from ${meta.version} to ${this.#version}; rebuilding`,
    );
    return this.rebuild(options);
  }

  /**
   * Replays every event into shadow tables while the live view keeps serving (and keeps being updated,
   * on whichever node leads it), catches up with the head, then swaps the shadow tables in and sets the
   * checkpoint in one transaction. Readers see the old view or the new one, never a part-built one.
   * Can run on any node; one rebuild per view at a time (a second one takes over from the first).
   */
  async rebuild(options: RebuildOptions = {}): Promise<RebuildResult> {
    if (this.#rebuilding) throw new AlreadyStartedError(`A rebuild of view "${this.name}"`);
    const batchSize = options.batchSize ?? 1000;
    if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new InvalidArgumentError(`batchSize must be a positive integer, got ${String(batchSize)}`);
    const progress: RebuildProgress = { done: 0, total: 0 };
    this.#rebuilding = progress;
    const report = (): void => {
      try {
        options.onProgress?.({ ...progress });
      } catch (error) {
        this.#logger.warn({ view: this.name, err: error }, `View "${this.name}": the rebuild progress callback threw`);
      }
    };
    const started = performance.now();
    const rebuildId = randomUUID();
    const { signal } = options;
    const version = this.#version;
    let generation: number | undefined;
    let swapped = false;
    try {
      signal?.throwIfAborted();
      await this.#backend.ensureSetup(version);
      generation = await this.#backend.beginRebuild(rebuildId);
      let position = 0;
      for (;;) {
        const head = await this.#store.headPosition();
        progress.total = progress.done + (await this.#backend.countRelevant(position, head));
        report();
        for (;;) {
          signal?.throwIfAborted();
          const batch: Recorded<E>[] = [];
          for await (const event of this.#store.readAll({ after: position, limit: batchSize, types: this.#options.types })) batch.push(event);
          if (batch.length > 0) {
            await this.#applyShadow(batch, rebuildId, generation, signal);
            position = (batch[batch.length - 1] as Recorded<E>).position;
            progress.done += batch.length;
            progress.total = Math.max(progress.total, progress.done);
            report();
            // A synchronous driver (SQLite) would otherwise hold the event loop for the whole replay.
            await new Promise((resolve) => setImmediate(resolve));
          }
          if (batch.length < batchSize) break;
        }
        // The last read began after `head` was read, so every event up to `head` has been applied.
        position = Math.max(position, head);
        signal?.throwIfAborted();
        const swap = await this.#backend.swap(rebuildId, generation, position, version);
        if (swap !== 'behind') {
          position = swap.position;
          progress.done += swap.applied;
          break;
        }
        // The live view got further than the shadow in between: catch up with it, then try again.
      }
      swapped = true;
      progress.total = progress.done;
      report();
      this.#signals.replaced(position);
      const result: RebuildResult = { position, events: progress.done, generation, durationMs: performance.now() - started };
      this.#logger.info({ view: this.name, ...result }, `View "${this.name}": rebuilt and swapped in at position ${position}`);
      return result;
    } finally {
      this.#rebuilding = undefined;
      if (!swapped && generation !== undefined) {
        await this.#backend.abandonRebuild(rebuildId, generation).catch((error: unknown) => {
          this.#logger.warn({ view: this.name, err: error }, `View "${this.name}": dropping the shadow tables of a failed rebuild failed`);
        });
      }
    }
  }

  /** Applies a batch to the shadow tables; a failing batch is replayed event by event to pin the failure. */
  async #applyShadow(events: readonly Recorded<E>[], rebuildId: string, generation: number, signal: AbortSignal | undefined): Promise<void> {
    if (events.length > 1) {
      try {
        await this.#backend.applyShadow(events, rebuildId, generation);
        return;
      } catch (error) {
        if (isEskitError(error, ErrorCode.Fenced)) throw error;
      }
    }
    const policy = retryPolicy(this.#options.retry, defaultRebuildRetry);
    for (const event of events) {
      for (let attempt = 1; ; attempt++) {
        try {
          await this.#backend.applyShadow([event], rebuildId, generation);
          break;
        } catch (error) {
          if (isEskitError(error, ErrorCode.Fenced)) throw error;
          if (attempt < policy.maxAttempts && !isEskitError(error, ErrorCode.PermanentFailure)) {
            await delay(backoffDelay(policy, attempt), signal);
            continue;
          }
          await this.#rebuildFailure(event, error, attempt);
          break;
        }
      }
    }
  }

  /** An event evolve keeps failing on during a rebuild: skipped like the live view would, or the end of the rebuild. */
  async #rebuildFailure(event: Recorded<E>, error: unknown, attempts: number): Promise<void> {
    const { onHandlerFailure, deadLetters } = this.#options;
    if (onHandlerFailure) {
      if ((await onHandlerFailure({ event, error, attempts, fencingToken: undefined, signal: new AbortController().signal })) === 'skip') return;
      throw new RebuildFailedError(this.name, event.position, error);
    }
    if (!deadLetters) throw new RebuildFailedError(this.name, event.position, error);
    if (!(await this.#deadLettered(event.position))) {
      await addDeadLetter(deadLetters, deadLetterFor(this.name, 'handler', event, attempts, error));
      instruments().deadLetters.add(1, { [TelemetryAttribute.Subscription]: this.name, [TelemetryAttribute.Stage]: 'handler' });
    }
    this.#logger.warn({ view: this.name, position: event.position, err: error }, `View "${this.name}": rebuild skipped a failing event (dead-lettered)`);
  }

  async #deadLettered(position: number): Promise<boolean> {
    const deadLetters = this.#options.deadLetters;
    if (!deadLetters) return false;
    let afterId: string | undefined;
    for (;;) {
      const page: DeadLetter[] = await deadLetters.list({ source: this.name, limit: 500, afterId });
      if (page.some((letter) => letter.eventPosition === position)) return true;
      if (page.length < 500) return false;
      afterId = (page[page.length - 1] as DeadLetter).id;
    }
  }

  /** Reads the generation, then the checkpoint: a swap between the two only costs one more reload. */
  async #resume(read: () => Promise<number | undefined>): Promise<number | undefined> {
    const meta = await this.#backend.readMeta();
    if (meta === undefined) {
      throw new MigrationError(`View "${this.name}" has no tables: start() creates them; was the versions table dropped?`);
    }
    this.#checkVersion(meta);
    const position = await read();
    const swapped = this.#generation !== undefined && this.#generation !== meta.generation;
    this.#generation = meta.generation;
    this.#leading = true;
    // A rebuild swapped in elsewhere: what this node's listeners were shown may all have changed.
    if (swapped) this.#signals.replaced(position ?? 0);
    else if (position !== undefined) this.#signals.advanced(position);
    return position;
  }

  #checkVersion(meta: ViewMeta): void {
    const version = this.#version;
    if (meta.version === version) return;
    throw new MigrationError(
      `View "${this.name}" is stored at setup version ${meta.version}, but this code declares version ${version}: ` +
        'call rebuildIfChanged() (it rebuilds while the old view keeps serving) before start(), and stop nodes running the old code.',
    );
  }

  /** The leader lock, watched so that the view knows when this node stops leading. */
  #watchLeadership(registry: LockRegistry): LockRegistry {
    return {
      acquire: async (name, acquireOptions): Promise<Lease> => {
        const lease = await registry.acquire(name, acquireOptions);
        lease.signal.addEventListener('abort', () => (this.#leading = false), { once: true });
        return lease;
      },
      close: () => registry.close(),
    };
  }
}
