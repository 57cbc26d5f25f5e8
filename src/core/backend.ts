import type { Admin } from './admin.js';
import type { CheckpointStore } from './checkpoint.js';
import type { CompletionStore, DeadLetterStore } from './dead-letter.js';
import type { EventShape } from './event.js';
import type { LockRegistry } from './lock.js';
import type { MemberRegistry } from './members.js';
import type { SnapshotStore } from './snapshot.js';
import type { EventStore } from './store.js';

/**
 * Everything the runners (subscriptions, automations, views) need of one database, made by one call
 * (`memory()`, `sqlite({ path })`, `postgres({ connectionString })`) and closed by one: the event store
 * and, next to it, the checkpoints, the dead-letter queue, the completion records and, when leader
 * election is on, the lock registry. The parts stay reachable for code that needs one of them.
 */
export interface Backend<E extends EventShape = EventShape> {
  /** Which adapter made it: 'memory', 'sqlite', 'postgres', or a third party's name. */
  readonly kind: string;
  readonly store: EventStore<E>;
  readonly checkpoints: CheckpointStore;
  readonly deadLetters: DeadLetterStore;
  readonly completions: CompletionStore;
  /**
   * Where command handlers keep deciders' snapshots (`new CommandHandler({ backend, snapshots: { version } })`).
   * Every bundled backend has one; optional so that a backend written before snapshots still fits.
   */
  readonly snapshots?: SnapshotStore;
  /**
   * Leader election for the runners built on this backend: one node runs each of them. Undefined when
   * it is off (the default on memory and SQLite; on by default on PostgreSQL).
   */
  readonly locks: LockRegistry | undefined;
  /**
   * Who is alive among the nodes running a partitioned runner, so that they share its partitions out.
   * There whenever `locks` is.
   */
  readonly members: MemberRegistry | undefined;
  /**
   * What operators read and change: checkpoints with their leaders, dead-letter counts, a fenced reset,
   * and the status rows the runners on this backend publish (`eskit status` shows them).
   */
  readonly admin: Admin;
  /** Creates or updates what the backend needs (tables, schema). The parts also do it on first use. */
  migrate(): Promise<void>;
  /** Closes every part this backend opened (the lock registry first, then the stores). Safe to call twice. */
  close(): Promise<void>;
}
