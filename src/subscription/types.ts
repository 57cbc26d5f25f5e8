import type { Backend } from '../core/backend.js';
import type { RunnerKind, RunnerStatusStore, RunnerWork } from '../core/runner-status.js';
import type { CheckpointStore } from '../core/checkpoint.js';
import type { DeadLetterStore } from '../core/dead-letter.js';
import type { FencedError } from '../core/errors.js';
import type { EventShape, Recorded } from '../core/event.js';
import type { LockRegistry } from '../core/lock.js';
import type { Logger } from '../core/logger.js';
import type { RetryPolicy } from '../core/retry.js';
import type { EventStore } from '../core/store.js';
import type { MemberRegistry } from '../core/members.js';
import type { EventSource } from './reading.js';

export interface HandlerContext {
  subscription: string;
  /**
   * The lease's fencing token while leader election is on; pass it to systems that can check it. A
   * `FencedError` they raise makes this node step down (the event is not retried nor dead-lettered).
   */
  fencingToken: number | undefined;
  /** 1 on the first attempt at this event. */
  attempt: number;
  /**
   * Fires when this node must stop (stop() was called, or leadership was lost). A handler that gives
   * up on it is not counted as failed: the event is delivered again later, here or on the new leader.
   */
  signal: AbortSignal;
}

export type SubscriptionHandler<E extends EventShape> = (event: Recorded<E>, context: HandlerContext) => void | Promise<void>;

export type BatchHandler<E extends EventShape> = (events: readonly Recorded<E>[], context: HandlerContext) => void | Promise<void>;

/** What happens to an event whose handler failed its last attempt. */
export type FailureAction<E extends EventShape> = (failure: {
  event: Recorded<E>;
  error: unknown;
  attempts: number;
  fencingToken: number | undefined;
  /** Fires when the node must stop (stop() or lost leadership): give up waiting, e.g. for a store that is down. */
  signal: AbortSignal;
}) => Promise<'skip' | 'stop'>;

export type StartFrom = 'beginning' | 'end' | { after: number };

/**
 * Work that outlives the handler call: the runner asks it where the checkpoint may go and tells it
 * when leadership begins and ends.
 */
export interface OutstandingWork {
  /** Leadership (or the run, without a lock) begins at the checkpoint `position`. */
  begin(context: {
    position: number;
    fencingToken: number | undefined;
    signal: AbortSignal;
    /**
     * The work met a newer fencing token downstream (a `FencedError`): this leadership ends as if the
     * lease was lost, and the node leads again once it holds a newer token.
     */
    fenced(error: FencedError): void;
    /**
     * Saves the checkpoint now, at the furthest position the work lets it go (one save at a time,
     * shared with the runner's own saves). For work that finished items the checkpoint can cover:
     * once saved, they need no record of their own. Resolves when the save was tried.
     */
    saveCheckpoint(): Promise<void>;
  }): Promise<void>;
  /** The lowest event position whose work is not finished, or undefined when none is outstanding. */
  earliestPending(): number | undefined;
  /** `listener` is called when work finished (so the checkpoint may move while no events arrive). */
  onProgress(listener: () => void): () => void;
  /** The checkpoint was saved at `position`. */
  checkpointed?(position: number): void;
  /**
   * Leadership ends. 'stopped': let work in flight finish (and stop starting more) before resolving.
   * 'lost': abandon it at once (fire its signals); the next leader redoes what was not checkpointed. A
   * 'lost' end may come while a 'stopped' one is still waiting: the lease was lost while the work
   * finished, or the drain timeout passed.
   */
  end(reason: 'stopped' | 'lost'): Promise<void>;
  /**
   * After a 'stopped' end, once the final checkpoint save was tried (saved, fenced, failed, or skipped
   * because leadership was lost meanwhile), before leadership is released.
   */
  finished?(): Promise<void>;
}

export interface SubscriptionOptions<E extends EventShape> {
  /** Unique per subscription: names its checkpoint and its leader lock. */
  name: string;
  /**
   * Where it runs: `memory()`, `sqlite({ path })` or `postgres({ connectionString })`, which give the
   * store, the checkpoints, the dead letters and (when on) leader election. Or give `store` and
   * `checkpoints` (and `leaderLock`) yourself.
   */
  backend?: Backend<E>;
  /** The backend's store, or your own (then `checkpoints` too). */
  store?: EventStore<E>;
  checkpoints?: CheckpointStore;
  /** Called once per event. Give either `handler` or `batchHandler`. */
  handler?: SubscriptionHandler<E>;
  /**
   * Called once per batch instead of `handler`, for handlers that commit a batch in one transaction.
   * A batch that keeps failing is split, so that the failure is pinned on one event.
   */
  batchHandler?: BatchHandler<E>;
  /** Only events of these types reach the handler. */
  types?: readonly E['type'][];
  /**
   * Only events of streams in this category (the stream id up to its first `-`, e.g. 'order' for
   * `order-42`); with `types`, both must match. Read through an index: a small category of a large log
   * costs about its own events.
   */
  category?: string;
  /** Events read per round trip. Default 500. */
  batchSize?: number;
  /**
   * While events keep coming, the checkpoint is saved at most this often (each save is a durable
   * commit). It is always saved when the subscription catches up, stops or fails. After a crash, at
   * most this much work is delivered again. Default 250 ms; 0 saves after every batch.
   */
  checkpointIntervalMs?: number;
  /** Where a subscription without a checkpoint begins. Default 'beginning'. */
  startFrom?: StartFrom;
  /** Retries of a failing handler. Default 5 attempts, 100 ms doubling up to 10 s, full jitter. */
  retry?: Partial<RetryPolicy>;
  /**
   * Decides what to do after the last failed attempt. The default stops the subscription with
   * `ESKIT_HANDLER_FAILED`. An automation's dead-letter queue plugs in here ('skip' = it was stored).
   */
  onHandlerFailure?: FailureAction<E>;
  /**
   * After the last attempt, store the event here (stage 'handler') and go on, instead of stopping.
   * Ignored when `onHandlerFailure` is given.
   */
  deadLetters?: DeadLetterStore;
  /** The safety net behind append notifications. Default 500 ms. */
  pollIntervalMs?: number;
  /**
   * Leader election: only the holder of the lock named `name` processes events. Default: the backend's
   * (on for `postgres()`); false turns it off.
   */
  leaderLock?: LockRegistry | false;
  /**
   * How often this node rewrites its status row (state, role, position, counts) in the backend, for
   * `eskit status` and dashboards: also at every change. Only with a `backend`. Default 5000.
   */
  statusHeartbeatMs?: number;
  /**
   * How long `stop()` lets work in flight finish (a handler, an automation's side effects). After it,
   * that work is abandoned: its signal fires, the checkpoint stays before it, a warning names it, and
   * it is delivered again later (here or on the next leader). Default 10 000.
   */
  drainTimeoutMs?: number;
  /**
   * The longest each database call made while stopping may take (the final checkpoint save, the
   * completion records, the lease release) before it is given up, so that a database that stopped
   * answering cannot hold `stop()` until the OS notices (minutes). A read in flight is abandoned at
   * once. `stop()` thus resolves within about `drainTimeoutMs` + 3 × this. Default 2 000.
   */
  stopCallTimeoutMs?: number;
  logger?: Logger;
  /**
   * Splits the work into this many partitions, each with its own checkpoint, lease (and fencing
   * token), dead letters and status row (named `<name>#<partition>/<partitions>`), shared out over the
   * live nodes: each takes floor(partitions / nodes) or one more, so that the shares add up and none
   * is over ceil(partitions / nodes). An event belongs to one partition, chosen by `partitionKey`;
   * events of one key are handled in order, events of different partitions in parallel. Without it,
   * one node handles everything in global order. See docs/scaling.md.
   */
  partitions?: number;
  /** The key that picks an event's partition (`hash(key) mod partitions`). Default: its stream id. */
  partitionKey?: (event: Recorded<E>) => string;
  /**
   * With `partitions` and leader election: how often this node renews its membership and checks its
   * share (also at once when a node joins or leaves). A killed node's partitions move within about
   * this; a frozen node is judged dead after 4 of these. Default 500.
   */
  rebalanceIntervalMs?: number;
  /** Who is alive among the nodes, for `partitions`. Default: the backend's. */
  members?: MemberRegistry;
}

/** One partition of a partitioned runner, as this node sees it. */
export interface PartitionStatus {
  partition: number;
  /** The partition's runner name: its checkpoint, lock and status row. */
  name: string;
  state: SubscriptionState;
  position: number | undefined;
  lag: number;
  fencingToken: number | undefined;
  handled: number;
}

export type SubscriptionState = 'idle' | 'standby' | 'leading' | 'stopped' | 'failed';

export interface SubscriptionStatus {
  name: string;
  state: SubscriptionState;
  /** Last checkpointed position (undefined before the first claim or save). */
  position: number | undefined;
  head: number;
  /** Events behind the head (head - position), including events the type filter skips. */
  lag: number;
  fencingToken: number | undefined;
  /** True while this node waits for a lock another node holds. */
  lockDenied: boolean;
  /** Events handled by this instance since it was created. */
  handled: number;
  error: Error | undefined;
  /**
   * With `partitions`: each partition as this node sees it ('leading' = handled here). `position` and
   * `lag` above are then those of the partitions this node leads (the lowest position), and
   * `fencingToken` is undefined.
   */
  partitions?: PartitionStatus[];
}

/**
 * What the engine's own runners (automations, views) give the subscription they are built on, as the
 * constructor's second argument: not options an application sets.
 */
export interface EngineHooks<E extends EventShape = EventShape> {
  /**
   * Work the handler started but has not finished (an automation's to-do items): the checkpoint never
   * passes it. A plain subscription has none: its handler's return is the end of its work.
   */
  outstandingWork?: OutstandingWork;
  /**
   * The batch handler saves the checkpoint itself, in the same transaction as its writes (for views
   * updated exactly once). The runner then only saves it for events it skipped.
   */
  checkpointsInHandler?: boolean;
  /** Called when a run ends (stopped or failed), before `done` settles. */
  onEnded?: () => void;
  /** What the runner is, in its status row. Default 'subscription'. */
  kind?: RunnerKind;
  /** An automation's to-do list, for its status row. */
  work?: () => RunnerWork | undefined;
  /** Where the status row goes when the runner was given no `backend` (a view's host). */
  statusStore?: RunnerStatusStore;
  /** Where the events come from: a partition's share of its node's reader. Default: its own reads. */
  source?: EventSource<E>;
  /** The run's state changed (a partition became leading, or stopped leading). */
  onStateChange?: (state: SubscriptionState) => void;
  /**
   * Standing by is routine (a partition that another node holds): said at debug level, not as a
   * warning, and not counted as a lock denial.
   */
  routineStandby?: boolean;
  /**
   * Runs once per start, before the first leadership: the check that the partition count in use is
   * this runner's (see layout.ts). Resolves false when stopped first; a throw fails the run.
   */
  prepare?: (signal: AbortSignal) => Promise<boolean>;
  /**
   * A partition saves its progress over the other partitions' events as soon as it catches up, like
   * its own (a view's partition: waitFor needs every partition's checkpoint past the position). Else
   * that progress alone is saved at most every max(1 s, 10 × checkpointIntervalMs), and at stop.
   */
  eagerPassOver?: boolean;
}
