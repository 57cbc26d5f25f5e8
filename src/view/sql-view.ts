import { AlreadyStartedError, InvalidArgumentError, MigrationError, RebuildFailedError } from '../core/errors.js';
import type { EventShape, Recorded } from '../core/event.js';
import type { LockRegistry } from '../core/lock.js';
import type { MemberRegistry } from '../core/members.js';
import type { RunnerStatusStore } from '../core/runner-status.js';
import { consoleLogger } from '../core/logger.js';
import type { Logger } from '../core/logger.js';
import { retryPolicy } from '../core/retry.js';
import type { RetryPolicy } from '../core/retry.js';
import type { EventStore } from '../core/store.js';
import { checkSqlViewSpec, checkTableName } from '../core/view-backend.js';
import type { SqlViewBackend, SqlViews, SqlViewSetup, SqlViewTx, ViewMeta } from '../core/view-backend.js';
import type { ChangeFeed } from './change-feed.js';
import type { WaitForOptions } from './progress.js';
import { ViewSignals } from './signals.js';
import { rebuildView } from './sql-rebuild.js';
import type { PinnedFailures, RebuildOptions, RebuildResult } from './sql-rebuild.js';
import type { Observable, RebuildProgress, ViewOptions, ViewStatus, Waitable } from './types.js';
import { ViewLanes } from './view-lanes.js';
import { settleLayout } from './view-layout.js';

export type { RebuildOptions, RebuildResult } from './sql-rebuild.js';

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
  /** Who is alive among the nodes, for `partitions` with leader election: the one-call backends have it. */
  readonly members?: MemberRegistry | undefined;
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
   * Leader election: one node updates the view (or each partition); the others stand by (and can still
   * read it). Default: the backend's (on for `postgres()`); false turns it off.
   */
  leaderLock?: LockRegistry | false;
  /**
   * Splits the updating into this many partitions, each a lane with its own checkpoint (committed with
   * its writes), lease and fencing token, shared out over the live nodes as a partitioned subscription's
   * are (docs/scaling.md). Every partition writes the SAME tables, so the view must be written for it
   * (see the class comment, "Partitioned"): rows keyed by the partition key, or commuting updates.
   */
  partitions?: number;
  /** The key that picks an event's partition (`hash(key) mod partitions`). Default: its stream id. */
  partitionKey?: (event: Recorded<E>) => string;
  /** With `partitions` and leader election: see SubscriptionOptions.rebalanceIntervalMs. Default 500. */
  rebalanceIntervalMs?: number;
  /** With `partitions` and leader election: who is alive among the nodes. Default: the backend's. */
  members?: MemberRegistry;
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
 *
 * Partitioned (`partitions: N`): each partition is a lane that applies the events of its keys, in
 * their order, to the same tables, in transactions that commit its own checkpoint (`<name>#<p>/<N>`),
 * fenced by its own lease and by the generation: exactly once per partition. Partitions commit in any
 * order relative to each other, so the view is correct when every row is either
 * - keyed by the partition key (written by one partition only, in its events' order: any update works), or
 * - updated only by commuting updates (`increment` in `upsert`, `SET total = total + $1`): a row that
 *   events of several partitions update, such as a per-customer total partitioned by order stream.
 * A row that events of several partitions overwrite ends with whichever committed last, which is not
 * the log's order. `waitFor(position)` resolves once every partition's checkpoint passed the position,
 * a rebuild replays unpartitioned and sets every partition's checkpoint at the swap, and a changed count
 * first brings the old partitions to one position, so that no event is applied twice (docs/views.md).
 */
export class SqlView<E extends EventShape = EventShape, Tx = SqlViewTx, R = void | Promise<void>> implements Waitable, Observable {
  readonly name: string;
  // Nothing kept here is typed by Tx or R: a view of any backend is then a SqlView<E>.
  readonly #options: ViewOptions<E> & Pick<SqlViewOptions<E>, 'partitionKey'>;
  readonly #store: EventStore<E>;
  readonly #version: number;
  readonly #backend: SqlViewBackend<E>;
  readonly #lanes: ViewLanes<E>;
  readonly #leaderLock: LockRegistry | undefined;
  readonly #signals: ViewSignals<E>;
  readonly #logger: Logger;
  #rebuilding: RebuildProgress | undefined;

  /** A start() settling a count change: stop() aborts it. */
  #starting: AbortController | undefined;

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
    const { name, types, category, setup, evolve, evolveBatch } = options;
    const backend = views.create({ name, types, category, setup, evolve, evolveBatch });
    this.name = name;
    this.#options = options;
    this.#store = store;
    this.#version = setup.version;
    this.#backend = backend;
    this.#logger = options.logger ?? consoleLogger();
    this.#leaderLock = options.leaderLock === false ? undefined : (options.leaderLock ?? host.locks);
    this.#lanes = new ViewLanes<E>({
      options,
      store,
      backend,
      leaderLock: this.#leaderLock,
      members: host.members,
      statusStore: host.admin?.runners,
      logger: this.#logger,
      checkVersion: (meta) => this.#checkVersion(meta),
      signals: () => this.#signals,
    });
    this.#signals = new ViewSignals<E>({
      view: name,
      store,
      types,
      category,
      keysOf: options.keysOf,
      debounceMs: options.debounceMs,
      maxKeys: options.maxKeys,
      pollIntervalMs: options.checkpointPollMs ?? 50,
      logger: this.#logger,
      readCheckpoint: () => this.#lanes.readPosition(),
      lastRelevant: (after, upTo) => backend.lastRelevant(after, upTo),
      isLeading: () => this.#lanes.leadingAll,
      watch: backend.watch?.bind(backend),
      positionLane: this.#lanes.names.length === 1 ? this.#lanes.names[0] : undefined,
    });
  }

  /**
   * "View changed" notifications, with the affected keys when the view has `keysOf`. Partitioned: each
   * partition's commits are published as they happen, with that partition's checkpoint as `position`.
   */
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
   * are of another setup version: call `rebuildIfChanged()` first. When the view's checkpoints were
   * saved with another partition count, the old partitions first catch up to one position (see
   * `partitions`); refused with `ESKIT_PARTITION_COUNT` while a node still runs the old count.
   */
  async start(): Promise<void> {
    // A stop() while this sets up or catches up a count change must win: the lanes then do not start.
    const starting = new AbortController();
    this.#starting = starting;
    const meta = await this.#backend.ensureSetup(this.#version);
    this.#checkVersion(meta);
    const options = this.#options;
    const settling = settleLayout<E>({
      name: this.name,
      partitions: this.#lanes.partitions,
      partitionKey: options.partitionKey ?? ((event) => event.streamId),
      names: this.#lanes.names,
      locks: this.#leaderLock,
      backend: this.#backend,
      store: this.#store,
      types: options.types,
      category: options.category,
      batchSize: options.batchSize ?? 500,
      failures: this.#failures(),
      logger: this.#logger,
      signal: starting.signal,
    });
    try {
      await settling;
    } catch (error) {
      if (!starting.signal.aborted) throw error;
    }
    if (starting.signal.aborted) return;
    this.#starting = undefined;
    await this.#lanes.start();
  }

  /** Resolves when stopped, rejects when the view failed for good: see `Subscription.done`. */
  get done(): Promise<void> {
    return this.#lanes.done;
  }

  /** Lets the batch in flight commit, releases leadership (of every partition). Safe to call twice. */
  async stop(): Promise<void> {
    this.#starting?.abort(new Error(`SqlView "${this.name}" was stopped while starting`));
    await this.#lanes.stop();
  }

  /** Resolves when the view stopped or failed (the status says which, and why). */
  async whenStopped(): Promise<ViewStatus> {
    await this.#lanes.done.catch(() => undefined);
    return this.status();
  }

  /** Partitioned: `partitions` gives each partition as this node sees it (see SubscriptionStatus). */
  async status(): Promise<ViewStatus> {
    const status = await this.#lanes.status();
    const rebuilding = this.#rebuilding && { ...this.#rebuilding };
    return { ...status, setupVersion: this.#version, rebuilding };
  }

  /** The setup version the stored tables were built with (undefined before the first start or rebuild). */
  async storedVersion(): Promise<number | undefined> {
    return (await this.#backend.readMeta())?.version;
  }

  /**
   * Resolves once the view reflects every event up to `position` (the position an append or a command
   * returned), in this process or any other: partitioned, once every partition's checkpoint passed it.
   * Rejects with `ESKIT_TIMEOUT` after `timeoutMs` (default 5000).
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
   * The shadow tables commit their own checkpoint with each batch: a rebuild whose process died is
   * resumed from there by the next one (built with the same code; `fresh` starts over).
   * Partitioned: the replay is one pass in log order, and the swap sets every partition's checkpoint
   * (those of any other count the view ran with too) to the swap position.
   */
  async rebuild(options: RebuildOptions = {}): Promise<RebuildResult> {
    if (this.#rebuilding) throw new AlreadyStartedError(`A rebuild of view "${this.name}"`);
    const batchSize = options.batchSize ?? 1000;
    if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new InvalidArgumentError(`batchSize must be a positive integer, got ${String(batchSize)}`);
    const progress: RebuildProgress = { done: 0, total: 0 };
    this.#rebuilding = progress;
    try {
      const result = await rebuildView<E>(
        {
          view: this.name,
          store: this.#store,
          backend: this.#backend,
          types: this.#options.types,
          category: this.#options.category,
          version: this.#version,
          checkpoints: this.#lanes.names,
          failures: this.#failures(),
          progress,
          report: () => {
            try {
              options.onProgress?.({ ...progress });
            } catch (error) {
              this.#logger.warn({ view: this.name, err: error }, `View "${this.name}": the rebuild progress callback threw`);
            }
          },
          fail: (event, error) => new RebuildFailedError(this.name, event.position, error),
        },
        { batchSize, signal: options.signal, fresh: options.fresh === true },
      );
      this.#signals.replaced(result.position, result.position);
      this.#logger.info({ view: this.name, ...result }, `View "${this.name}": rebuilt and swapped in at position ${result.position}`);
      return result;
    } finally {
      this.#rebuilding = undefined;
    }
  }

  /** How an event that keeps failing outside the live runner is handled: as the live view would. */
  #failures(): Omit<PinnedFailures<E>, 'signal' | 'source' | 'fail' | 'doing'> {
    const { retry, onHandlerFailure, deadLetters } = this.#options;
    return { view: this.name, retry: retryPolicy(retry, defaultRebuildRetry), onHandlerFailure, deadLetters, logger: this.#logger };
  }

  #checkVersion(meta: ViewMeta): void {
    const version = this.#version;
    if (meta.version === version) return;
    throw new MigrationError(
      `View "${this.name}" is stored at setup version ${meta.version}, but this code declares version ${version}: ` +
        'call rebuildIfChanged() (it rebuilds while the old view keeps serving) before start(), and stop nodes running the old code.',
    );
  }
}
