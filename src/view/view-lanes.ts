// What runs a SQL view: one lane (a subscription runner) for the whole view, or one per partition
// shared out over the live nodes. Every lane applies its events to the same tables and commits its own
// checkpoint with them; this module keeps each lane's generation and position, and works out the
// view's position from them (the lowest: the view reflects every event up to it).
import type { CheckpointStore } from '../core/checkpoint.js';
import { InvalidArgumentError, MigrationError } from '../core/errors.js';
import type { EventShape, Recorded } from '../core/event.js';
import type { Lease, LockRegistry } from '../core/lock.js';
import type { Logger } from '../core/logger.js';
import type { MemberRegistry } from '../core/members.js';
import type { RunnerStatusStore } from '../core/runner-status.js';
import type { EventStore } from '../core/store.js';
import type { SqlViewBackend, ViewMeta } from '../core/view-backend.js';
import { UNPARTITIONED } from '../subscription/partition/layout.js';
import { partitionName } from '../subscription/partition/naming.js';
import type { PartitionSet } from '../subscription/partition/partition-set.js';
import { SubscriptionRunner } from '../subscription/runner.js';
import { combinedStatus, partitionSet } from '../subscription/subscription.js';
import type { EngineHooks, SubscriptionOptions, SubscriptionStatus } from '../subscription/subscription.js';
import { subscriptionOptionsOf } from './types.js';
import type { ViewOptions } from './types.js';

/** What a view's lanes tell its signals (the change feed and waitFor). */
export interface LaneSignals<E extends EventShape> {
  /** `events` were committed at `position` (the lane's checkpoint); the view as a whole is at `reached`. */
  committed(events: readonly Recorded<E>[], position: number, reached: number | undefined): void;
  /** The view's position moved without events applied here. */
  advanced(position: number): void;
  /** A rebuild was swapped in (the lane reloaded `position`): everything may have changed; the view is at `reached`. */
  replaced(position: number, reached: number | undefined): void;
}

/** The partitioning options of a SQL view (see SqlViewOptions). */
export interface ViewPartitioning<E extends EventShape> {
  partitions?: number;
  partitionKey?: (event: Recorded<E>) => string;
  rebalanceIntervalMs?: number;
  members?: MemberRegistry;
}

export interface ViewLanesOptions<E extends EventShape> {
  options: ViewOptions<E> & ViewPartitioning<E>;
  store: EventStore<E>;
  backend: SqlViewBackend<E>;
  /** Undefined: leader election is off. */
  leaderLock: LockRegistry | undefined;
  /** The host's member registry, when the options give none. */
  members: MemberRegistry | undefined;
  statusStore: RunnerStatusStore | undefined;
  logger: Logger;
  checkVersion(meta: ViewMeta): void;
  signals: () => LaneSignals<E>;
}

/** One lane as the view sees it: the checkpoint it writes, and what it knows of it. */
interface LaneState {
  readonly name: string;
  /** The generation read with its checkpoint: its writes are refused once a swap changed it. */
  generation: number | undefined;
  /** Between loading its checkpoint and losing its lease (or ending its run). */
  leading: boolean;
  /** Its checkpoint as last loaded or committed here. */
  position: number | undefined;
}

type Face<E extends EventShape> = SubscriptionRunner<E> | PartitionSet<E, SubscriptionStatus>;

export class ViewLanes<E extends EventShape> {
  /** The checkpoint names of this view's lanes: its name, or its partitions' `<name>#<p>/<N>`. */
  readonly names: readonly string[];
  readonly #o: ViewLanesOptions<E>;
  readonly #lanes = new Map<string, LaneState>();
  readonly #face: Face<E>;
  readonly #name: string;

  constructor(o: ViewLanesOptions<E>) {
    this.#o = o;
    const { options } = o;
    const name = (this.#name = options.name);
    const { partitions, partitionKey, members, rebalanceIntervalMs } = options;
    if (partitions === undefined) {
      if (partitionKey !== undefined || members !== undefined || rebalanceIntervalMs !== undefined) {
        throw new InvalidArgumentError(`SqlView "${name}": partitionKey, members and rebalanceIntervalMs need partitions (the number of partitions to split the events into).`);
      }
      this.names = [name];
      // Eager: what a read passes over without handing it to the view (a lifecycle event, a split row
      // with none of its types) is saved once caught up, so waitFor on it returns; a typed read skips
      // other types in SQL, so this is a write only when such rows were there.
      this.#face = this.#runner(this.#lane(name), { eagerPassOver: true });
      return;
    }
    this.#face = partitionSet<E, SubscriptionStatus>(
      `SqlView "${name}"`,
      {
        name,
        store: o.store,
        checkpoints: this.#layoutCheckpoints(),
        handler: () => undefined,
        leaderLock: o.leaderLock ?? false,
        types: options.types,
        category: options.category,
        batchSize: options.batchSize,
        pollIntervalMs: options.pollIntervalMs,
        stopCallTimeoutMs: options.stopCallTimeoutMs,
        logger: o.logger,
        partitions,
        partitionKey,
        members: members ?? o.members,
        rebalanceIntervalMs,
      },
      (slot) => this.#runner(this.#lane(slot.name), { source: slot.source, onStateChange: slot.onStateChange, routineStandby: true, eagerPassOver: true }),
      // start() settled the count already (each old partition caught up, its checkpoints committed with
      // its writes); the subscription way, re-seeding at the lowest checkpoint, would apply events twice.
      { skipLayout: true },
    );
    this.names = Array.from({ length: partitions }, (_, partition) => partitionName(name, partition, partitions));
  }

  /** The partitions this view is split into: UNPARTITIONED (0) for none, apart from `partitions: 1`. */
  get partitions(): number {
    return this.#o.options.partitions ?? UNPARTITIONED;
  }

  start(): Promise<void> {
    return this.#face.start();
  }

  stop(): Promise<void> {
    return this.#face.stop();
  }

  get done(): Promise<void> {
    return this.#face.done;
  }

  async status(): Promise<SubscriptionStatus> {
    if (this.#face instanceof SubscriptionRunner) return this.#face.status();
    const lanes = await Promise.all(this.#face.lanes.map((lane) => lane.status()));
    return combinedStatus(this.#name, lanes, this.#face);
  }

  /** True while this process leads every lane: each commit of the view then passes through here. */
  get leadingAll(): boolean {
    for (const lane of this.#lanes.values()) if (!lane.leading) return false;
    return true;
  }

  /**
   * The view's position from the database, for a process that does not lead every lane: the lowest
   * checkpoint of its lanes; undefined while one of them has none.
   */
  async readPosition(): Promise<number | undefined> {
    // One lane: the view's own checkpoint, or `<name>#0/1` with `partitions: 1` (a layout of its own).
    if (this.names.length === 1) return this.#o.backend.loadCheckpoint(this.names[0] as string);
    const saved = new Map((await this.#o.backend.listCheckpoints()).map((row) => [row.name, row.position]));
    let lowest: number | undefined;
    for (const name of this.names) {
      const position = saved.get(name);
      if (position === undefined) return undefined;
      lowest = lowest === undefined ? position : Math.min(lowest, position);
    }
    return lowest;
  }

  /** The lowest position the lanes are known (here) to have reached: a lower bound of the view's. */
  #known(): number | undefined {
    let lowest: number | undefined;
    for (const lane of this.#lanes.values()) {
      if (lane.position === undefined) return undefined;
      lowest = lowest === undefined ? lane.position : Math.min(lowest, lane.position);
    }
    return lowest;
  }

  #lane(name: string): LaneState {
    const lane: LaneState = { name, generation: undefined, leading: false, position: undefined };
    this.#lanes.set(name, lane);
    return lane;
  }

  #runner(lane: LaneState, hooks: Pick<EngineHooks<E>, 'source' | 'onStateChange' | 'routineStandby' | 'eagerPassOver'>): SubscriptionRunner<E> {
    const { options, store, backend, leaderLock, logger } = this.#o;
    const runnerOptions: SubscriptionOptions<E> = {
      ...subscriptionOptionsOf(options),
      name: lane.name,
      store,
      checkpoints: this.#laneCheckpoints(lane),
      leaderLock: leaderLock ? watchLeadership(leaderLock, lane) : false,
      logger,
      batchHandler: async (events, context) => {
        await backend.applyLive(events, lane.generation ?? -1, context.fencingToken, lane.name);
        const position = (events[events.length - 1] as Recorded<E>).position;
        lane.position = position;
        this.#o.signals().committed(events, position, this.#known());
      },
    };
    return new SubscriptionRunner<E>(runnerOptions, {
      ...hooks,
      checkpointsInHandler: true,
      onEnded: () => (lane.leading = false),
      kind: 'view',
      statusStore: this.#o.statusStore,
    });
  }

  /** The lane's checkpoint, read with the generation it belongs to. */
  #laneCheckpoints(lane: LaneState): CheckpointStore {
    const { backend } = this.#o;
    return {
      load: () => this.#resume(lane, () => backend.loadCheckpoint(lane.name)),
      claim: (_name, fencingToken) => this.#resume(lane, () => backend.claimCheckpoint(lane.name, fencingToken)),
      save: async (_name, position, saveOptions = {}) => {
        // Only for events the runner skipped (dead-lettered, or other partitions'): the handler saves the rest.
        await backend.saveCheckpoint(lane.name, position, lane.generation ?? -1, saveOptions.fencingToken);
        lane.position = position;
        const known = this.#known();
        if (known !== undefined) this.#o.signals().advanced(known);
      },
      list: () => backend.listCheckpoints(),
    };
  }

  /**
   * What the partition set's count check reads and seeds: the view's own checkpoints. A seed is
   * written under the generation it finds (no lane has read one yet); the view's own layout step
   * (view-layout.ts) has normally brought the count in line before, so that this finds nothing to do.
   */
  #layoutCheckpoints(): CheckpointStore {
    const { backend } = this.#o;
    return {
      load: (name) => backend.loadCheckpoint(name),
      claim: (name, fencingToken) => backend.claimCheckpoint(name, fencingToken),
      save: async (name, position, saveOptions = {}) => {
        const generation = (await backend.readMeta())?.generation ?? -1;
        await backend.saveCheckpoint(name, position, generation, saveOptions.fencingToken);
      },
      list: () => backend.listCheckpoints(),
    };
  }

  /** Reads the generation, then the checkpoint: a swap between the two only costs one more reload. */
  async #resume(lane: LaneState, read: () => Promise<number | undefined>): Promise<number | undefined> {
    const meta = await this.#o.backend.readMeta();
    if (meta === undefined) {
      throw new MigrationError(`View "${this.#name}" has no tables: start() creates them; was the versions table dropped?`);
    }
    this.#o.checkVersion(meta);
    const position = await read();
    const swapped = lane.generation !== undefined && lane.generation !== meta.generation;
    lane.generation = meta.generation;
    lane.leading = true;
    lane.position = position;
    const known = this.#known();
    // A rebuild swapped in elsewhere: what this node's listeners were shown may all have changed.
    if (swapped) this.#o.signals().replaced(position ?? 0, known);
    else if (known !== undefined) this.#o.signals().advanced(known);
    return position;
  }
}

/** The leader lock, watched so that the view knows when a lane stops leading. */
function watchLeadership(registry: LockRegistry, lane: LaneState): LockRegistry {
  return {
    // The node's id in status rows and member rows comes from the registry's holder id.
    holderId: registry.holderId,
    acquire: async (name, acquireOptions): Promise<Lease> => {
      const lease = await registry.acquire(name, acquireOptions);
      lease.signal.addEventListener('abort', () => (lane.leading = false), { once: true });
      return lease;
    },
    close: () => registry.close(),
  };
}
