import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Attributes } from '@opentelemetry/api';
import type { CheckpointStore } from '../../core/checkpoint.js';
import { unlessAborted, within } from '../../core/deadline.js';
import { AlreadyStartedError, describeError, InvalidArgumentError, PartitionCountError } from '../../core/errors.js';
import type { EventShape, Recorded } from '../../core/event.js';
import type { LockRegistry } from '../../core/lock.js';
import type { Logger } from '../../core/logger.js';
import type { LiveMember, MemberRegistry } from '../../core/members.js';
import type { EventStore } from '../../core/store.js';
import { MAX_TIMER_MS } from '../../core/validate.js';
import { isTransient } from '../checkpointing.js';
import type { EventSource } from '../reading.js';
import type { StartFrom, SubscriptionState } from '../types.js';
import { instruments, TelemetryAttribute } from '../../telemetry/telemetry.js';
import { adoptLayoutPatiently } from './layout.js';
import { partitionName } from './naming.js';
import { SharedLog } from './shared-log.js';

/** One partition's runner, as the set drives it: a subscription, an automation or a view of one partition. */
export interface Lane<S> {
  readonly name: string;
  /** What its run is doing now ('leading': this node holds the partition). */
  readonly state: SubscriptionState;
  start(): Promise<void>;
  stop(): Promise<void>;
  readonly done: Promise<void>;
  status(): Promise<S>;
}

/** What a lane is made with. */
export interface PartitionSlot<E extends EventShape> {
  partition: number;
  /** `<name>#<partition>/<partitions>`: the lane's runner name. */
  name: string;
  source: EventSource<E>;
  /** For the lane's engine hooks: its state changed. */
  onStateChange: () => void;
}

export interface PartitionSetOptions<E extends EventShape, S> {
  /** `Subscription "orders"`, for messages. */
  owner: string;
  name: string;
  partitions: number;
  partitionKey: ((event: Recorded<E>) => string) | undefined;
  store: EventStore<E>;
  checkpoints: CheckpointStore;
  batchSize: number;
  types: readonly E['type'][] | undefined;
  category: string | undefined;
  pollIntervalMs: number;
  /** Undefined: leader election is off, and this node runs every partition. */
  locks: LockRegistry | undefined;
  /** For a re-partition from a layout where a partition never saved (see adoptLayout). */
  startFrom?: StartFrom;
  members: MemberRegistry | undefined;
  rebalanceIntervalMs: number;
  stopCallTimeoutMs: number;
  logger: Logger;
  lane(slot: PartitionSlot<E>): Lane<S>;
  /**
   * The count change is settled by the runner itself before the set starts (a SQL view: each old
   * partition catches up, committing its checkpoints with its writes); the set's own re-seeding at the
   * lowest checkpoint would apply events twice.
   */
  skipLayout?: boolean;
}

/** Rebalance checks short of the share before it is reported (joins and moves take a few). */
const SHORT_CHECKS_BEFORE_WARNING = 10;
/** A member is judged dead after this many missed heartbeats (one late heartbeat must not evict it). */
const HEARTBEATS_PER_TTL = 4;

/**
 * A partitioned runner on one node: its partitions' lanes, the node's one reader of the log, and its
 * share of the partitions.
 *
 * Sharing out (with leader election): every rebalance interval, and at once when a node joins or
 * leaves, this node renews its membership and counts the live members; its share is
 * about partitions / members (see `share`). Below it, every partition it does not hold stands by for its lock (so a
 * released or orphaned partition is taken at once); at it, the standbys stop; above it (it took more
 * while others were gone), it stops the partitions over its share, which drains their work, saves
 * their checkpoints and releases their locks to the nodes below their share. No leader decides: the
 * locks do, and ownership only ever moves through a release or a lost lease (with its fencing token).
 */
export class PartitionSet<E extends EventShape, S> {
  readonly lanes: readonly Lane<S>[];
  readonly nodeId: string;
  readonly #o: PartitionSetOptions<E, S>;
  readonly #attributes: Attributes;
  /** Lanes this node is stopping to give them up: not restarted until the stop is over. */
  readonly #releasing = new Set<Lane<S>>();
  /** This run checked the partition count in use (layout.ts) and may start lanes. */
  #laidOut = false;
  /** Lanes started whose run is not over yet. */
  readonly #active = new Set<Lane<S>>();
  #balanceScheduled = false;
  #run: Promise<void> | undefined;
  #started = false;
  #done: Promise<void> = Promise.resolve();
  #stop = new AbortController();
  #failure: { error: unknown } | undefined;
  #wake: (() => void) | undefined;
  #wakeRequested = false;
  #shortChecks = 0;
  #members: LiveMember[] = [];
  /** The last heartbeat sent: the leave at stop() waits for it. */
  #beating: Promise<unknown> | undefined;

  constructor(o: PartitionSetOptions<E, S>) {
    // The membership ttl is 4 intervals, and the heartbeat refuses one no timer can hold: say so now,
    // in terms of the option given, rather than failing at start over a `ttlMs`.
    if (o.members && o.rebalanceIntervalMs * HEARTBEATS_PER_TTL > MAX_TIMER_MS) {
      throw new InvalidArgumentError(
        `${o.owner}: rebalanceIntervalMs must be at most ${Math.floor(MAX_TIMER_MS / HEARTBEATS_PER_TTL)} (a node counts as alive for ${HEARTBEATS_PER_TTL} of them, which a Node.js timer must hold), got ${o.rebalanceIntervalMs}`,
      );
    }
    this.#o = o;
    const holder = o.locks?.holderId;
    this.nodeId = typeof holder === 'string' ? holder : `${hostname()}/${process.pid}/${randomBytes(4).toString('hex')}`;
    this.#attributes = Object.freeze({ [TelemetryAttribute.Subscription]: o.name });
    const log = new SharedLog<E>({
      name: o.name,
      store: o.store,
      partitions: o.partitions,
      partitionKey: o.partitionKey ?? ((event) => event.streamId),
      batchSize: o.batchSize,
      types: o.types,
      category: o.category,
      pollIntervalMs: o.pollIntervalMs,
      logger: o.logger,
    });
    this.lanes = Array.from({ length: o.partitions }, (_, partition) =>
      o.lane({
        partition,
        name: partitionName(o.name, partition, o.partitions),
        source: log.source(partition),
        onStateChange: () => this.#scheduleBalance(),
      }),
    );
  }

  /** Why the set failed (a lane's failure, or another partition count), while it has. */
  get error(): Error | undefined {
    const error = this.#failure?.error;
    if (error === undefined) return undefined;
    return error instanceof Error ? error : new Error(describeError(error), { cause: error });
  }

  /** Started, and its run not over: a node holding no partition (more nodes than partitions) stands by. */
  get running(): boolean {
    return this.#run !== undefined;
  }

  /** Started at least once (then, once its run is over, it is stopped, whatever its lanes did). */
  get started(): boolean {
    return this.#started;
  }

  /**
   * The partitions this node may hold now, or all without election: floor(partitions / live members),
   * one more for the first `partitions mod members` of them by id, so that the shares add up to the
   * count exactly. (Each taking ceil(partitions / members) left a joining node with none whenever the
   * ceil did not change: 4 partitions on 3 nodes held 2 + 2 + 0, and the third warned for good.)
   */
  get share(): number {
    if (!this.#o.members) return this.#o.partitions;
    const members = Math.max(1, this.#members.length);
    const index = this.#members.findIndex((member) => member.id === this.nodeId);
    // Not counted yet (before the first heartbeat): the most it could be given.
    if (index < 0) return Math.ceil(this.#o.partitions / members);
    return Math.floor(this.#o.partitions / members) + (index < this.#o.partitions % members ? 1 : 0);
  }

  async start(): Promise<void> {
    if (this.#run) throw new AlreadyStartedError(this.#o.owner);
    this.#stop = new AbortController();
    this.#failure = undefined;
    this.#laidOut = false;
    this.#started = true;
    const run = this.#loop();
    this.#run = run;
    this.#done = run.then(() => {
      if (this.#failure) throw this.#failure.error;
    });
  }

  get done(): Promise<void> {
    return this.#done;
  }

  /** Leaves the group (so the others take over at once), then stops every lane, each handing its partition over. */
  async stop(): Promise<void> {
    const run = this.#run;
    if (!run) return;
    this.#stop.abort();
    this.#wake?.();
    await run;
  }

  /** Runs until stopped or a lane failed; the failure is kept for `done`. */
  async #loop(): Promise<void> {
    const { members } = this.#o;
    const unsubscribe = members?.onChange((group) => {
      if (group === this.#o.name) this.#requestCheck();
    });
    try {
      let first = true;
      while (!this.#stop.signal.aborted && !this.#failure) {
        this.#wakeRequested = false;
        try {
          await this.#check(first);
          first = false;
        } catch (error) {
          if (error instanceof PartitionCountError || !isTransient(error)) throw error;
          this.#o.logger.warn({ subscription: this.#o.name, err: error }, `${this.#o.owner}: checking its share of the partitions failed; retrying`);
        }
        await this.#idle();
      }
    } catch (error) {
      this.#failure ??= { error };
      this.#o.logger.error({ subscription: this.#o.name, err: error }, `${this.#o.owner} failed: ${describeError(error)}`);
    } finally {
      unsubscribe?.();
      if (members) {
        // First, so that the others raise their shares and stand by for what this node releases next.
        // After the heartbeat stop() gave up on, if one is still running (in the same bound): landing
        // after the leave, it made this node alive again for a ttl, and the others let its partitions lie.
        const leave = (this.#beating ?? Promise.resolve()).catch(() => undefined).then(() => members.leave(this.#o.name, this.nodeId));
        await within(leave, this.#o.stopCallTimeoutMs, `${this.#o.owner}: leaving the group`).catch((error: unknown) => {
          this.#o.logger.warn({ subscription: this.#o.name, err: error }, `${this.#o.owner}: leaving the group failed; the others notice when its membership runs out`);
        });
      }
      await Promise.all(this.lanes.map((lane) => lane.stop()));
      this.#run = undefined;
    }
  }

  /** Renews the membership, then starts or stops lanes to hold this node's share. */
  async #check(first: boolean): Promise<void> {
    const { members, partitions, name, owner } = this.#o;
    if (members) {
      // A database that stopped answering must not hold a stop(): the heartbeat is given up at once.
      const beat = (): Promise<LiveMember[] | undefined> => {
        const beating = members.heartbeat(name, { id: this.nodeId, partitions, ttlMs: this.#o.rebalanceIntervalMs * HEARTBEATS_PER_TTL });
        this.#beating = beating;
        return unlessAborted(beating, this.#stop.signal, undefined);
      };
      let live = await beat();
      // Twice before the first lanes start: two nodes whose first heartbeats ran at once (PostgreSQL)
      // each read the group before the other's row was committed, so neither saw the other's count,
      // and both ran. A second heartbeat begins after this node's first was committed: of two such
      // nodes, the one that committed last sees the other's row now, and refuses to start.
      if (first && live !== undefined) live = await beat();
      if (live === undefined) return;
      const others = live.filter((member) => member.partitions !== partitions);
      if (others.length > 0) {
        const message =
          `${owner}: ${others.length} live node(s) run it with another partition count (${others.map((m) => `${m.id}: ${m.partitions}`).join(', ')}), this one with ${partitions}. ` +
          'Stop every node, then start them all with one count (see docs/scaling.md, "Changing the partition count").';
        if (first) throw new PartitionCountError(message);
        this.#o.logger.error({ subscription: name }, message);
      }
      this.#members = live.filter((member) => member.partitions === partitions);
      if (this.#stop.signal.aborted) return;
    }
    if (!this.#laidOut) {
      // After the membership check, so that a node refused for another count has written nothing;
      // before any lane runs.
      if (!this.#o.skipLayout && !(await adoptLayoutPatiently({ ...this.#o, signal: this.#stop.signal }))) return;
      this.#laidOut = true;
    }
    this.#balance(true);
  }

  /** Starts or stops lanes so that this node holds its share (see the class comment). */
  #balance(heartbeat = false): void {
    if (this.#stop.signal.aborted || this.#failure) return;
    const share = this.share;
    const leading = this.lanes.filter((lane) => lane.state === 'leading' && !this.#releasing.has(lane));
    // The highest partitions go first: any choice works, a fixed one keeps the moves few.
    for (const lane of leading.slice(share).reverse()) this.#release(lane);
    const held = Math.min(leading.length, share);
    for (const lane of this.lanes) {
      if (this.#releasing.has(lane) || lane.state === 'leading') continue;
      const running = this.#active.has(lane);
      if (held >= share && running) this.#release(lane);
      else if (held < share && !running) this.#startLane(lane);
    }
    this.#reportShort(held, share, heartbeat);
  }

  /** Starts a lane; it stays active until its run is over (a stop, or a failure that fails the set). */
  #startLane(lane: Lane<S>): void {
    this.#active.add(lane);
    const over = (): void => {
      this.#active.delete(lane);
      this.#scheduleBalance();
    };
    lane.start().then(
      () => lane.done.then(over, (error: unknown) => {
        over();
        this.#fail(error);
      }),
      (error: unknown) => {
        over();
        this.#fail(error);
      },
    );
  }

  /** Stops a lane: a leading one drains, saves and releases its partition; a standby stops waiting. */
  #release(lane: Lane<S>): void {
    this.#releasing.add(lane);
    void lane.stop().then(
      () => {
        this.#releasing.delete(lane);
        this.#scheduleBalance();
      },
      (error: unknown) => this.#fail(error),
    );
  }

  /** A lane's state changed: balance again with the members counted last (no heartbeat needed). */
  #scheduleBalance(): void {
    if (this.#balanceScheduled) return;
    this.#balanceScheduled = true;
    queueMicrotask(() => {
      this.#balanceScheduled = false;
      this.#balance();
    });
  }

  #fail(error: unknown): void {
    this.#failure ??= { error };
    this.#stop.abort();
    this.#wake?.();
  }

  /** Counts only heartbeat checks short of the share: a move passes through many balances in a few ms. */
  #reportShort(held: number, share: number, heartbeat: boolean): void {
    if (!this.#o.members || held >= share) {
      this.#shortChecks = 0;
      return;
    }
    if (!heartbeat) return;
    this.#shortChecks += 1;
    if (this.#shortChecks < SHORT_CHECKS_BEFORE_WARNING) return;
    instruments().partitionShareShort.add(1, this.#attributes);
    if (this.#shortChecks === SHORT_CHECKS_BEFORE_WARNING) {
      this.#o.logger.warn(
        { subscription: this.#o.name, held, share, members: this.#members.length },
        `${this.#o.owner}: this node holds ${held} of its share of ${share} partitions; the others are held elsewhere and not let go ` +
          '(a node over its share that does not answer, or nodes that count the members differently). It takes them when they are released.',
      );
    }
  }

  #requestCheck(): void {
    this.#wakeRequested = true;
    this.#wake?.();
  }

  /** Until the next rebalance check is due, or asked for (a member or a lane changed), or stop. */
  async #idle(): Promise<void> {
    if (this.#wakeRequested || this.#stop.signal.aborted) return;
    const interval = this.#o.members ? this.#o.rebalanceIntervalMs : 60_000;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, interval);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = () => {
        this.#wake = undefined;
        done();
      };
    });
    this.#wake = undefined;
  }
}
