import type { DeadLetterStore } from '../core/dead-letter.js';
import type { EventRegistry } from '../core/registry.js';
import type { EventShape } from '../core/event.js';
import type { Logger } from '../core/logger.js';
import type { EventStore } from '../core/store.js';
import type { PostgresEventStore } from '../postgres/postgres-event-store.js';
import type { SqliteEventStore } from '../sqlite/sqlite-event-store.js';
import { CliError } from './errors.js';
import type { DatabaseTarget } from './target.js';

/** A row of the checkpoints table (position undefined: claimed by a leader, never saved). */
export interface CheckpointRow {
  name: string;
  position: number | undefined;
  fencingToken: number;
  updatedAt: Date;
}

/** A row of the leases table, and whether the lock is held right now. */
export interface LeaseRow {
  name: string;
  /**
   * SQLite: the last fencing token handed out for this lock (the leader's while one leads).
   * PostgreSQL: tokens come from one sequence for every lock, so there is none per lock (only a row of
   * the older `leases` table has one).
   */
  fencingToken: number | undefined;
  /** SQLite: the holder id in the lease row. PostgreSQL: from the holding session's application_name (`eskit-lock <holderId>`). */
  holder: string | undefined;
  /** SQLite: an unexpired lease row, by the database's clock. PostgreSQL: a granted advisory lock in pg_locks. */
  held: boolean;
  /** SQLite: when the lease expires unless renewed. */
  expiresAt?: Date;
  /** PostgreSQL, older `leases` table only: when its last holder took it. */
  acquiredAt?: Date;
  /** PostgreSQL: the session holding the advisory lock. */
  pid?: number;
  applicationName?: string;
  clientAddr?: string;
}

/** A row of the view versions table. */
export interface ViewRow {
  name: string;
  /** The setup version the live tables were built with. */
  version: number;
  /** Incremented by every rebuild's swap. */
  generation: number;
  /** A rebuild owns shadow tables right now. */
  rebuilding: boolean;
  updatedAt: Date;
}

export interface DeadLetterCount {
  source: string;
  stage: string;
  status: string;
  count: number;
}

export interface ResetOutcome {
  previous: number | undefined;
  position: number;
  /** The checkpoint's new fencing token, when the reset fenced out the holders before it; undefined without leader election. */
  fencingToken: number | undefined;
  /** The leader that held the lock (only with force). */
  heldBy: LeaseRow | undefined;
  /**
   * How the reset protects itself from a running node: 'lease' (SQLite: the lease row's token was
   * raised and its holder cleared, and the checkpoint took that token), 'checkpoint' (the checkpoint's
   * token was raised by one), 'none' (no leader election: nothing to fence).
   */
  fencing: 'lease' | 'checkpoint' | 'none';
}

/** The adapter-specific half of the CLI: the stores, and reads and writes of eskit's own tables. */
export interface CliDatabase {
  readonly target: DatabaseTarget;
  /** The applied schema version and the one this eskit ships. */
  readonly schemaVersion: number;
  readonly latestSchemaVersion: number;
  readonly store: EventStore;
  /** The same store, typed by its adapter (what a config's views are built on). */
  readonly adapter: AdapterStore<EventShape>;
  readonly deadLetters: DeadLetterStore;
  checkpoints(): Promise<CheckpointRow[]>;
  leases(): Promise<LeaseRow[]>;
  views(): Promise<ViewRow[]>;
  deadLetterCounts(): Promise<DeadLetterCount[]>;
  /** Sources with recorded to-do completions (they are automations). */
  completionSources(): Promise<string[]>;
  /**
   * Moves checkpoint `name` to `position`, fencing out any node that holds (or held) its lock. Refuses
   * (CliError) an unknown name, a view's checkpoint, and a held lock unless `force`.
   */
  resetCheckpoint(name: string, position: number, force: boolean): Promise<ResetOutcome>;
  /** Applies pending schema migrations; returns the versions applied and the version now. */
  migrate(): Promise<{ applied: number[]; version: number }>;
  close(): Promise<void>;
}

/** Who holds a lock, in a few words: the holder id and, on PostgreSQL, the session. */
export function describeHolder(lease: LeaseRow, now: Date = new Date()): string {
  const parts: string[] = [];
  if (lease.pid !== undefined) parts.push(`pid ${lease.pid}`);
  if (lease.applicationName) parts.push(`application "${lease.applicationName}"`);
  if (lease.pid !== undefined) parts.push(lease.clientAddr ? `from ${lease.clientAddr}` : 'local socket');
  if (lease.expiresAt !== undefined) {
    const left = lease.expiresAt.getTime() - now.getTime();
    parts.push(left >= 0 ? `lease expires in ${Math.max(0, Math.round(left))} ms unless renewed` : 'lease expired');
  }
  const who = lease.holder ?? 'an unknown holder';
  return parts.length === 0 ? who : `${who} (${parts.join(', ')})`;
}

/** What views in a config are built on: the CLI's event store, typed by the config's events. */
export type AdapterStore<E extends EventShape> =
  | { backend: 'sqlite'; store: SqliteEventStore<E> }
  | { backend: 'postgres'; store: PostgresEventStore<E>; schema: string };

export interface OpenOptions {
  /** Create a missing SQLite file (migrate only). */
  create?: boolean;
  /** Refuse a database that is not at the latest schema version (everything but migrate). */
  requireMigrated?: boolean;
  registry?: EventRegistry<EventShape>;
  logger: Logger;
}

/** Opens the database the target names, loading only the adapter it needs. */
export async function openDatabase(target: DatabaseTarget, options: OpenOptions): Promise<CliDatabase> {
  if (target.kind === 'sqlite') {
    const { openSqliteDatabase } = await import('./sqlite-database.js');
    return openSqliteDatabase(target, options);
  }
  const { openPostgresDatabase } = await import('./postgres-database.js');
  return openPostgresDatabase(target, options);
}

export function viewRefusal(name: string): CliError {
  return new CliError(`"${name}" is a view: its checkpoint belongs to its tables, and moving it would apply events twice or skip them`, {
    hint: `Rebuild it instead: eskit view rebuild ${name}`,
  });
}

export function heldRefusal(name: string, lease: LeaseRow): CliError {
  return new CliError(`"${name}" is being processed: its lock is held by ${describeHolder(lease)}`, {
    hint: 'Stop that node first, or pass --force (the reset fences it out: its next checkpoint write is refused and it starts over from the new position).',
  });
}
