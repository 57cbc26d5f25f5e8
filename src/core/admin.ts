import { ErrorCode, EskitError, InvalidArgumentError } from './errors.js';
import type { RunnerStatusStore } from './runner-status.js';

/**
 * What an operator (the `eskit` CLI, a dashboard) reads and changes in a backend, beside the events:
 * checkpoints with their leaders, locks, views, dead-letter counts, the runners' status rows, the
 * schema version, and a fenced checkpoint reset. Each adapter implements it over its own tables, so
 * that no tool writes SQL against them. Reached as `backend.admin`.
 */
export interface Admin {
  /** The runners' status rows: runners publish, tools list. */
  readonly runners: RunnerStatusStore;
  /** The applied schema version and the one this eskit ships. Never migrates. */
  schema(): Promise<SchemaState>;
  /** Applies pending migrations; returns the versions applied and the version now. */
  migrate(): Promise<MigrateOutcome>;
  /** Every name with a checkpoint or a lock: its checkpoint, leader, fencing token and lag behind the head. */
  subscriptions(): Promise<SubscriptionRow[]>;
  checkpoints(): Promise<CheckpointRow[]>;
  /** Locks that are held now, or were used (leader election) and are free now. */
  locks(): Promise<LockRow[]>;
  /** The versions table of the SQL views (empty where views keep none). */
  views(): Promise<ViewRow[]>;
  /**
   * The live tables of SQL view `name` and their row counts, each counted up to VIEW_ROW_COUNT_CAP
   * (`capped`: there are more), so that a dashboard polling it never scans a huge table. Empty for a
   * name with no view (and where views keep no tables).
   */
  viewTables(name: string): Promise<ViewTableCount[]>;
  /** Dead letters counted by source, stage and status (the letters themselves: `backend.deadLetters`). */
  deadLetterCounts(): Promise<DeadLetterCount[]>;
  /** Sources with completion records right now: automations. */
  completionSources(): Promise<string[]>;
  /**
   * Moves checkpoint `name` to `position` and fences out every node that holds (or held) its lock, in
   * one transaction: a node still leading with an older token cannot save its old position over the
   * reset; its next checkpoint write is refused, and it leads again from `position`. Refuses
   * (`ResetRefusedError`) a name without a checkpoint, a view's checkpoint (rebuild the view instead),
   * and a lock that is held, unless `force`.
   */
  resetCheckpoint(name: string, position: number, options?: ResetOptions): Promise<ResetOutcome>;
}

export interface SchemaState {
  /** The newest migration applied; 0 when none was (no eskit tables). */
  version: number;
  /** The newest migration this eskit ships. */
  latest: number;
  /** Whether the namespace of eskit's tables exists (a PostgreSQL schema); where there is none, true. */
  exists: boolean;
}

export interface MigrateOutcome {
  applied: number[];
  version: number;
}

/** A checkpoint row. position undefined: claimed by a leader, never saved. */
export interface CheckpointRow {
  name: string;
  position: number | undefined;
  /** The newest token that claimed or saved it; 0: never fenced (no leader election). */
  fencingToken: number;
  updatedAt: Date;
}

/** A lock, and whether it is held right now (judged by the database: its lease clock or its sessions). */
export interface LockRow {
  name: string;
  /** The last fencing token handed out for this lock, where the lock keeps one per name (undefined where tokens come from one sequence). */
  fencingToken: number | undefined;
  /** The holder's id (a lock registry's `holderId`), when held and known. */
  holder: string | undefined;
  held: boolean;
  /** A lease lock: when it expires unless renewed, by the database's clock. */
  expiresAt?: Date;
  /** When its last holder took it, where recorded. */
  acquiredAt?: Date;
  /** A session lock: the database session holding it. */
  pid?: number;
  applicationName?: string;
  clientAddr?: string;
}

/** A row of the views' versions table. */
export interface ViewRow {
  name: string;
  /** The setup version the live tables were built with. */
  version: number;
  /** Incremented by every rebuild's swap. */
  generation: number;
  /** A rebuild owns shadow tables right now. */
  rebuilding: boolean;
  /**
   * The shadow tables of that rebuild: their checkpoint (the last event a shadow batch committed) and
   * when it last moved, by the database's clock. A rebuild whose updatedAt stops moving has died;
   * `rebuild()` resumes it from `position`. undefined when no rebuild runs, and where the rebuild keeps
   * no such checkpoint (memory; a database whose views predate it; a rebuilder of an older version).
   */
  shadow?: { position: number; updatedAt: Date } | undefined;
  updatedAt: Date;
}

/** A view table and how many rows it holds (at most VIEW_ROW_COUNT_CAP counted). */
export interface ViewTableCount {
  table: string;
  rows: number;
  /** More rows than counted: the table holds more than `rows`. */
  capped: boolean;
}

/** Rows a view table is counted up to (a count costs a scan of that many rows). */
export const VIEW_ROW_COUNT_CAP = 100_000;

export interface DeadLetterCount {
  source: string;
  stage: string;
  status: string;
  count: number;
}

/** A checkpoint with its lock and its lag. */
export interface SubscriptionRow {
  name: string;
  /** The saved position; undefined when none was saved (claimed only, or only a lock is known). */
  position: number | undefined;
  /** The checkpoint's token (newest that claimed or saved it); undefined without a checkpoint row. */
  checkpointToken: number | undefined;
  updatedAt: Date | undefined;
  /** The head of the log when listed. */
  head: number;
  /** head - position, counting events of every type; undefined without a saved position. */
  lag: number | undefined;
  lock: LockRow | undefined;
}

export interface ResetOptions {
  /** Reset even while a node holds the lock (it is fenced out). Default false. */
  force?: boolean;
}

export interface ResetOutcome {
  name: string;
  previous: number | undefined;
  position: number;
  /** The checkpoint's new fencing token; undefined when there was nothing to fence (no leader election). */
  fencingToken: number | undefined;
  /** The lock as it was held when reset (only with force). */
  heldBy: LockRow | undefined;
  /**
   * How the reset keeps a running node from writing over it: 'lease' (the lease's token was raised
   * and its holder cleared, and the checkpoint took that token), 'checkpoint' (the checkpoint's token
   * was raised above every holder's), 'none' (no leader election: nothing to fence; stop the nodes).
   */
  fencing: 'lease' | 'checkpoint' | 'none';
}

export type ResetRefusal = 'unknown' | 'view' | 'held';

/** A checkpoint reset that was refused; `reason` says why, and nothing changed. */
export class ResetRefusedError extends EskitError {
  constructor(
    readonly reason: ResetRefusal,
    readonly checkpoint: string,
    message: string,
    /** 'unknown': the checkpoints there are (views left out). */
    readonly known: readonly string[] = [],
    /** 'held': the lock and its holder. */
    readonly heldBy: LockRow | undefined = undefined,
  ) {
    super(ErrorCode.ResetRefused, message);
  }
}

export function unknownCheckpoint(name: string, known: readonly string[]): ResetRefusedError {
  const list = known.length === 0 ? 'there are none' : `known: ${known.map((n) => `"${n}"`).join(', ')}`;
  return new ResetRefusedError('unknown', name, `No subscription or automation "${name}" has a checkpoint here (${list}). Check the name.`, known);
}

export function viewCheckpoint(name: string): ResetRefusedError {
  return new ResetRefusedError(
    'view',
    name,
    `"${name}" is a view: its checkpoint belongs to its tables, and moving it would apply events twice or skip them. Rebuild the view instead.`,
  );
}

export function heldCheckpoint(name: string, lock: LockRow): ResetRefusedError {
  return new ResetRefusedError(
    'held',
    name,
    `"${name}" is being processed: its lock is held by ${lock.holder ?? 'an unknown holder'}. Stop that node first, or reset with force (the reset fences it out).`,
    [],
    lock,
  );
}

/** Checks resetCheckpoint's arguments (every adapter does, so that all refuse the same). */
export function checkReset(name: unknown, position: unknown, options: ResetOptions | undefined): { name: string; position: number; force: boolean } {
  if (typeof name !== 'string' || name.length === 0) throw new InvalidArgumentError('resetCheckpoint needs a non-empty checkpoint name');
  if (typeof position !== 'number' || !Number.isSafeInteger(position) || position < 0) {
    throw new InvalidArgumentError(`resetCheckpoint: position must be a non-negative integer, got ${String(position)}`);
  }
  const force = options?.force ?? false;
  if (typeof force !== 'boolean') throw new InvalidArgumentError('resetCheckpoint: force must be true or false');
  return { name, position, force };
}

/** Joins checkpoints and locks by name, with the lag behind `head` (what every adapter's subscriptions() returns). */
export function joinSubscriptions(head: number, checkpoints: readonly CheckpointRow[], locks: readonly LockRow[]): SubscriptionRow[] {
  const checkpointOf = new Map(checkpoints.map((row) => [row.name, row]));
  const lockOf = new Map(locks.map((row) => [row.name, row]));
  const names = [...new Set([...checkpointOf.keys(), ...lockOf.keys()])].sort(byName);
  return names.map((name) => {
    const checkpoint = checkpointOf.get(name);
    const position = checkpoint?.position;
    return {
      name,
      position,
      checkpointToken: checkpoint?.fencingToken,
      updatedAt: checkpoint?.updatedAt,
      head,
      lag: position === undefined ? undefined : Math.max(0, head - position),
      lock: lockOf.get(name),
    };
  });
}

/** Code-point order, the same on every adapter (SQL collations differ). */
export function byName(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
