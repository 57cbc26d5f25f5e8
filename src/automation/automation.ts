import type { Backend } from '../core/backend.js';
import type { CheckpointStore } from '../core/checkpoint.js';
import type { CompletionStore, DeadLetterStore } from '../core/dead-letter.js';
import { InvalidArgumentError } from '../core/errors.js';
import type { EventShape, Recorded } from '../core/event.js';
import type { LockRegistry } from '../core/lock.js';
import type { Logger } from '../core/logger.js';
import type { MemberRegistry } from '../core/members.js';
import type { RetryPolicy } from '../core/retry.js';
import type { EventStore } from '../core/store.js';
import type { PartitionSet } from '../subscription/partition/partition-set.js';
import { combinedStatus, layoutCheck, partitionSet } from '../subscription/subscription.js';
import type { StartFrom, SubscriptionOptions, SubscriptionStatus } from '../subscription/subscription.js';
import type { ExecuteContext } from './attempt.js';
import { shareInspection } from './inspect.js';
import { AutomationRunner } from './runner.js';
import type { TodoItem, Trigger } from './todo-items.js';
import type { TransactionalExecute } from './transactional.js';

export type { ExecuteContext } from './attempt.js';
export { inTransaction } from './transactional.js';
export type { TransactionalExecute } from './transactional.js';
export type { TodoItem, Trigger, TriggerContext } from './todo-items.js';

export interface AutomationOptions<E extends EventShape, P> {
  /** Names the checkpoint, the lock and the dead letters. */
  name: string;
  /**
   * Where it runs: `memory()`, `sqlite({ path })` or `postgres({ connectionString })`, which give the
   * store, checkpoints, dead letters, completion records and (when on) leader election. Or give the
   * parts yourself: `store`, `checkpoints` and `deadLetters` at least.
   */
  backend?: Backend<E>;
  store?: EventStore<E>;
  checkpoints?: CheckpointStore;
  deadLetters?: DeadLetterStore;
  /**
   * Default: the backend's. Without one, a crash re-runs every item after the checkpoint, completed
   * or not. With an `execute` made by `inTransaction`, it is that one's store (and may be left out).
   */
  completions?: CompletionStore;
  /** Turns an event into to-do items (none is fine). A trigger that keeps throwing dead-letters the event. */
  trigger: Trigger<E, P>;
  /**
   * Runs the side effect. Throw `PermanentFailure` to skip the remaining retries. A `FencedError` (the
   * downstream system saw a newer `ctx.fencingToken`) makes this node step down: the item is neither
   * retried nor dead-lettered here, and runs again under the next leadership. For effects in the
   * same database, `inTransaction(completions, ...)` makes them exactly once.
   */
  execute: ((item: TodoItem<P>, context: ExecuteContext) => unknown) | TransactionalExecute<P>;
  /** Only events of these types reach `trigger`. */
  types?: readonly E['type'][];
  /**
   * Only events of streams in this category (the stream id up to its first `-`, e.g. 'order' for
   * `order-42`); with `types`, both must match. Read through an index: a small category of a large log
   * costs about its own events.
   */
  category?: string;
  /** Leader election. Default: the backend's (on for `postgres()`); false turns it off. */
  leaderLock?: LockRegistry | false;
  /** Items of different keys running at once. A key waiting out a retry's backoff holds no slot. Default 8. */
  concurrency?: number;
  /**
   * Per attempt. Default 30 s. At the timeout the attempt's signal fires and it counts as failed, but
   * its key stays busy until it settles: the retry and the key's next item wait for it, while other
   * keys go on (it gives its slot back, and shows in the status as `hung`).
   */
  timeoutMs?: number;
  /** Retries of `execute`. Default 5 attempts, 200 ms doubling up to 30 s, full jitter. */
  retry?: Partial<RetryPolicy>;
  /** Retries of `trigger` before its event is dead-lettered. Default 3 attempts. */
  triggerRetry?: Partial<RetryPolicy>;
  /** Reading pauses while this many items wait. Default 1000. */
  maxPending?: number;
  /**
   * With `completions`: finished items that are not yet durable (neither recorded nor passed by the
   * saved checkpoint) past which no new item starts. Finished items are made durable continuously,
   * so after a crash only the items in flight and at most this many finished ones run again (in
   * practice those of the last round trip: a handful at hundreds of items per second). Catching up,
   * it caps throughput at about this many items per durable commit. Default 1024.
   */
  recordWindow?: number;
  batchSize?: number;
  pollIntervalMs?: number;
  startFrom?: StartFrom;
  /** How long stop() lets running side effects finish before abandoning them (see SubscriptionOptions). Default 10 000. */
  drainTimeoutMs?: number;
  /** The bound on each database call made while stopping (see SubscriptionOptions). Default 2 000. */
  stopCallTimeoutMs?: number;
  /** How often this node rewrites its status row (see SubscriptionOptions). Default 5000. */
  statusHeartbeatMs?: number;
  logger?: Logger;
  /**
   * Splits the work into this many partitions shared out over the live nodes, each with its own
   * checkpoint, lease, dead letters and completion records (see SubscriptionOptions.partitions). The
   * items of one partition key run in order as before; `concurrency` is per partition.
   */
  partitions?: number;
  /** The key that picks an event's partition. Default: its stream id. */
  partitionKey?: (event: Recorded<E>) => string;
  /** See SubscriptionOptions.rebalanceIntervalMs. Default 500. */
  rebalanceIntervalMs?: number;
  /** See SubscriptionOptions.members. Default: the backend's. */
  members?: MemberRegistry;
}

export interface AutomationStatus extends SubscriptionStatus {
  /** Items triggered and not finished on this node. */
  pending: number;
  /** Items executing right now (not counting `hung` ones). */
  running: number;
  /** Attempts past their timeout that have not settled yet: each holds its key. */
  hung: number;
  /** Finished items not yet durable (the most a crash now would run again, besides those running). */
  unrecorded: number;
}


/**
 * Event → to-do items → side effects, with retries, per-key order, a dead-letter queue, and a
 * checkpoint that never passes an item that has not finished (run, or dead-lettered).
 *
 * Delivery: `execute` runs at least once per item. With `completions`, finished items are made durable
 * continuously (see `recordWindow`): after a crash, only the items that were running and the few that
 * finished in the last round trip run again. With `partitions`, the events are split by key into
 * partitions shared out over the live nodes (docs/scaling.md).
 */
export class Automation<E extends EventShape = EventShape, P = unknown> {
  readonly name: string;
  readonly #runner: AutomationRunner<E, P> | undefined;
  readonly #partitions: PartitionSet<E, AutomationStatus> | undefined;

  constructor(options: AutomationOptions<E, P>) {
    this.name = options.name;
    const { partitions, partitionKey, members: _members, rebalanceIntervalMs: _interval, ...lane } = options;
    if (partitions === undefined) {
      if (partitionKey !== undefined) {
        throw new InvalidArgumentError(`Automation "${String(options.name)}": partitionKey needs partitions (the number of partitions to split the events into).`);
      }
      const prepare = layoutCheck(`Automation "${String(options.name)}"`, { ...facadeOptions(options), partitions: undefined });
      this.#runner = new AutomationRunner(options, { prepare });
      shareInspection(this, this.#runner);
      return;
    }
    // Refuses what a lane would refuse, once, before the partitions are made.
    new AutomationRunner({ ...lane });
    this.#partitions = partitionSet<E, AutomationStatus>(
      `Automation "${options.name}"`,
      facadeOptions(options),
      (slot) => new AutomationRunner<E, P>({ ...lane, name: slot.name }, { source: slot.source, onStateChange: slot.onStateChange, routineStandby: true }),
    );
  }

  /** Starts in the background (standing by while another node holds the lock). */
  start(): Promise<void> {
    return this.#face.start();
  }

  /**
   * Lets running side effects finish (for up to `drainTimeoutMs`), records them, saves the checkpoint,
   * releases leadership.
   */
  stop(): Promise<void> {
    return this.#face.stop();
  }

  /** Resolves when stopped, rejects when it failed for good: see `Subscription.done`. */
  get done(): Promise<void> {
    return this.#face.done;
  }

  async whenStopped(): Promise<AutomationStatus> {
    if (this.#runner) return this.#runner.whenStopped();
    await this.done.catch(() => undefined);
    return this.status();
  }

  async status(): Promise<AutomationStatus> {
    if (this.#runner) return this.#runner.status();
    const set = this.#partitions as PartitionSet<E, AutomationStatus>;
    const lanes = await Promise.all(set.lanes.map((lane) => lane.status()));
    const sum = (key: 'pending' | 'running' | 'hung' | 'unrecorded'): number => lanes.reduce((total, lane) => total + lane[key], 0);
    return { ...combinedStatus(this.name, lanes, set), pending: sum('pending'), running: sum('running'), hung: sum('hung'), unrecorded: sum('unrecorded') };
  }

  get #face(): AutomationRunner<E, P> | PartitionSet<E, AutomationStatus> {
    return this.#runner ?? (this.#partitions as PartitionSet<E, AutomationStatus>);
  }
}

/** What the partition machinery needs of an automation's options, in a subscription's terms. */
function facadeOptions<E extends EventShape, P>(options: AutomationOptions<E, P>): SubscriptionOptions<E> {
  return {
    name: options.name,
    backend: options.backend,
    store: options.store ?? options.backend?.store,
    checkpoints: options.checkpoints ?? options.backend?.checkpoints,
    handler: () => undefined,
    leaderLock: options.leaderLock,
    types: options.types,
    category: options.category,
    batchSize: options.batchSize,
    pollIntervalMs: options.pollIntervalMs,
    startFrom: options.startFrom,
    stopCallTimeoutMs: options.stopCallTimeoutMs,
    logger: options.logger,
    partitions: options.partitions,
    partitionKey: options.partitionKey,
    members: options.members,
    rebalanceIntervalMs: options.rebalanceIntervalMs,
  };
}
