import { InvalidArgumentError } from '../core/errors.js';
import type { EventShape } from '../core/event.js';
import { consoleLogger } from '../core/logger.js';
import { milliseconds, positiveInteger } from '../core/validate.js';
import { adoptLayoutPatiently, UNPARTITIONED } from './partition/layout.js';
import { checkPartitions } from './partition/naming.js';
import { PartitionSet } from './partition/partition-set.js';
import type { Lane, PartitionSlot } from './partition/partition-set.js';
import { subscriptionParts } from './parts.js';
import { SubscriptionRunner } from './runner.js';
import type { EngineHooks, PartitionStatus, SubscriptionOptions, SubscriptionState, SubscriptionStatus } from './types.js';

export type * from './types.js';

/**
 * A durable, checkpointed subscription: catches up from its checkpoint, then follows live appends.
 * Delivers events at least once; saves the checkpoint only after the handler succeeded for
 * everything before it. With `leaderLock`, exactly one node processes it, and every checkpoint write
 * is fenced by the lease's token. With `partitions`, the events are split by key into partitions,
 * each run like that on one node at a time, shared out over the live nodes (docs/scaling.md).
 */
export class Subscription<E extends EventShape = EventShape> {
  readonly name: string;
  readonly #runner: SubscriptionRunner<E> | undefined;
  readonly #partitions: PartitionSet<E, SubscriptionStatus> | undefined;

  /** `engine`: what an automation or a view passes (see EngineHooks); applications leave it out. */
  constructor(options: SubscriptionOptions<E>, engine: EngineHooks<E> = {}) {
    this.name = options.name;
    if (options.partitions === undefined) {
      if (options.partitionKey !== undefined) {
        throw new InvalidArgumentError(`Subscription "${String(options.name)}": partitionKey needs partitions (the number of partitions to split the events into).`);
      }
      // A plain subscription (not an automation's or a view's) may have run partitioned before.
      const prepare = engine.kind === undefined ? layoutCheck(`Subscription "${String(options.name)}"`, options) : undefined;
      this.#runner = new SubscriptionRunner(options, prepare ? { ...engine, prepare } : engine);
      return;
    }
    this.#partitions = partitionSet(`Subscription "${String(options.name)}"`, options, (slot) => {
      const { partitions: _count, partitionKey: _key, members: _members, rebalanceIntervalMs: _interval, ...lane } = options;
      return new SubscriptionRunner<E>({ ...lane, name: slot.name }, { ...engine, source: slot.source, onStateChange: slot.onStateChange, routineStandby: true });
    });
  }

  /** What the run is doing now; partitioned: 'leading' while this node leads any partition. */
  get state(): SubscriptionState {
    if (this.#runner) return this.#runner.state;
    const set = this.#partitions as PartitionSet<E, SubscriptionStatus>;
    return combinedState(set.lanes.map((lane) => lane.state), set);
  }

  /**
   * Starts in the background: leading at once without a lock, else standing by until the lock is free.
   * Resolves once started; `done` tells how the run ends.
   */
  start(): Promise<void> {
    return (this.#runner ?? (this.#partitions as PartitionSet<E, SubscriptionStatus>)).start();
  }

  /**
   * How the run started last ends: resolves when it stops (`stop()`), rejects with the error when it
   * fails for good (a handler that keeps failing without dead letters, an event that cannot be read, a
   * store that was closed). Await or catch it: a failure nobody handles is an unhandled rejection, which
   * ends the process with a non-zero exit code, so that a runner that stopped working is never silent.
   * (`whenStopped()` handles it too: it resolves with the status, whose `error` says why.)
   */
  get done(): Promise<void> {
    return (this.#runner ?? (this.#partitions as PartitionSet<E, SubscriptionStatus>)).done;
  }

  /**
   * Lets the work in flight finish (for up to `drainTimeoutMs`, then abandons it), saves the
   * checkpoint, releases leadership. Safe to call twice; resolves when all of that is done or given
   * up, within about `drainTimeoutMs` + 3 × `stopCallTimeoutMs` even when the database stopped answering.
   * Partitioned: this node first leaves the group (bounded by one more `stopCallTimeoutMs`), so that the
   * others take its partitions at once; then its partitions stop together.
   */
  stop(): Promise<void> {
    return (this.#runner ?? (this.#partitions as PartitionSet<E, SubscriptionStatus>)).stop();
  }

  /** Resolves when the subscription has stopped or failed (the status says which, and handles `done`). */
  async whenStopped(): Promise<SubscriptionStatus> {
    if (this.#runner) return this.#runner.whenStopped();
    await this.done.catch(() => undefined);
    return this.status();
  }

  async status(): Promise<SubscriptionStatus> {
    if (this.#runner) return this.#runner.status();
    const set = this.#partitions as PartitionSet<E, SubscriptionStatus>;
    return combinedStatus(this.name, await Promise.all(set.lanes.map((lane) => lane.status())), set);
  }
}

/** The partition set of a partitioned runner, from its options (shared by subscriptions, automations and views). */
export function partitionSet<E extends EventShape, S>(
  owner: string,
  options: SubscriptionOptions<E>,
  lane: (slot: PartitionSlot<E>) => Lane<S>,
  settings: { skipLayout?: boolean } = {},
): PartitionSet<E, S> {
  const parts = subscriptionParts(options);
  const partitions = checkPartitions(owner, options.partitions);
  if (options.partitionKey !== undefined && typeof options.partitionKey !== 'function') {
    throw new InvalidArgumentError(`${owner}: partitionKey must be a function of the event that returns its key (a string).`);
  }
  const members = options.members ?? options.backend?.members;
  if (parts.leaderLock && !members) {
    throw new InvalidArgumentError(
      `${owner}: partitions with leader election need a member registry, for the nodes to share the partitions out: ` +
        'use a backend (memory({ leaderElection: true }), sqlite(...) or postgres(...)) or give `members`; or turn leader election off (leaderLock: false) to run every partition here.',
    );
  }
  return new PartitionSet<E, S>({
    owner,
    name: options.name,
    partitions,
    partitionKey: options.partitionKey,
    store: parts.store,
    checkpoints: parts.checkpoints,
    batchSize: positiveInteger('batchSize', options.batchSize ?? 500),
    types: options.types,
    category: options.category,
    pollIntervalMs: milliseconds('pollIntervalMs', options.pollIntervalMs ?? 500),
    locks: parts.leaderLock,
    startFrom: options.startFrom,
    members: parts.leaderLock ? members : undefined,
    rebalanceIntervalMs: milliseconds('rebalanceIntervalMs', options.rebalanceIntervalMs ?? 500),
    stopCallTimeoutMs: milliseconds('stopCallTimeoutMs', options.stopCallTimeoutMs ?? 2_000),
    logger: options.logger ?? consoleLogger(),
    lane,
    skipLayout: settings.skipLayout,
  });
}

/**
 * For an unpartitioned runner: before it runs, the checkpoints of a partitioned past (if any) become
 * its own (from the lowest of them), once no node runs those partitions. See layout.ts.
 */
export function layoutCheck<E extends EventShape>(owner: string, options: SubscriptionOptions<E>): (signal: AbortSignal) => Promise<boolean> {
  const { checkpoints, leaderLock } = subscriptionParts(options);
  const logger = options.logger ?? consoleLogger();
  const pollIntervalMs = options.pollIntervalMs ?? 500;
  return (signal) => adoptLayoutPatiently({ owner, name: options.name, partitions: UNPARTITIONED, checkpoints, locks: leaderLock, logger, signal, pollIntervalMs, startFrom: options.startFrom });
}

/** What the state of a partitioned runner needs of its partition set, besides its lanes. */
export interface SetPhase {
  /** Why the set failed, while it has. */
  error: Error | undefined;
  /** Started, and its run not over. */
  running: boolean;
  /** Started at least once. */
  started: boolean;
}

/**
 * A partitioned runner's state from its lanes' and its set's. A set that failed is 'failed' even when no
 * lane ran (another partition count); one that runs is at least 'standby', and one that ran and ended is
 * 'stopped', even when it held no partition and stood by for none (more nodes than partitions: its lanes
 * then stay idle, or stopped, which said 'stopped' or 'idle' while it ran).
 */
export function combinedState(lanes: readonly SubscriptionState[], set: SetPhase): SubscriptionState {
  if (set.error || lanes.includes('failed')) return 'failed';
  if (lanes.includes('leading')) return 'leading';
  if (set.running || lanes.includes('standby')) return 'standby';
  return set.started || lanes.includes('stopped') ? 'stopped' : 'idle';
}

/** A partitioned runner's status: the partitions this node leads make its position and lag. */
export function combinedStatus(name: string, lanes: readonly SubscriptionStatus[], set: SetPhase): SubscriptionStatus & { partitions: PartitionStatus[] } {
  const { error } = set;
  const partitions = lanes.map((lane, partition): PartitionStatus => ({
    partition,
    name: lane.name,
    state: lane.state,
    position: lane.position,
    lag: lane.lag,
    fencingToken: lane.fencingToken,
    handled: lane.handled,
  }));
  const leading = lanes.filter((lane) => lane.state === 'leading');
  const failed = lanes.find((lane) => lane.state === 'failed');
  const positions = leading.map((lane) => lane.position ?? 0);
  const position = positions.length > 0 ? Math.min(...positions) : undefined;
  const head = Math.max(0, ...lanes.map((lane) => lane.head));
  return {
    name,
    state: combinedState(lanes.map((lane) => lane.state), set),
    position,
    head,
    lag: position === undefined ? 0 : Math.max(0, head - position),
    fencingToken: undefined,
    lockDenied: leading.length === 0 && lanes.some((lane) => lane.lockDenied),
    handled: lanes.reduce((sum, lane) => sum + lane.handled, 0),
    error: error ?? failed?.error,
    partitions,
  };
}
