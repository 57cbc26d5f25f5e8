import type { Admin, LockRow, SchemaState } from '../core/admin.js';
import type { DeadLetterStore } from '../core/dead-letter.js';
import type { EventShape } from '../core/event.js';
import type { Logger } from '../core/logger.js';
import type { EventRegistry } from '../core/registry.js';
import type { EventStore } from '../core/store.js';
import type { PostgresEventStore } from '../postgres/index.js';
import type { SqliteEventStore } from '../sqlite/index.js';
import type { DatabaseTarget } from './target.js';

/**
 * The database a command works on: the backend the adapter opened for the target (its event store and
 * dead-letter queue), and its admin surface for everything else. The CLI writes no SQL of its own.
 */
export interface CliDatabase {
  readonly target: DatabaseTarget;
  readonly store: EventStore;
  readonly deadLetters: DeadLetterStore;
  readonly admin: Admin;
  /** The schema version when it was opened. */
  readonly schema: SchemaState;
  /** The same store, typed by its adapter (what a config's views are built on). */
  readonly adapter: AdapterStore<EventShape>;
  close(): Promise<void>;
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

/** Who holds a lock, in a few words: the holder id and, where the database has sessions, the session. */
export function describeHolder(lock: LockRow, now: Date = new Date()): string {
  const parts: string[] = [];
  if (lock.pid !== undefined) parts.push(`pid ${lock.pid}`);
  if (lock.applicationName) parts.push(`application "${lock.applicationName}"`);
  if (lock.pid !== undefined) parts.push(lock.clientAddr ? `from ${lock.clientAddr}` : 'local socket');
  if (lock.expiresAt !== undefined) {
    const left = lock.expiresAt.getTime() - now.getTime();
    parts.push(left >= 0 ? `lease expires in ${Math.max(0, Math.round(left))} ms unless renewed` : 'lease expired');
  }
  const who = lock.holder ?? 'an unknown holder';
  return parts.length === 0 ? who : `${who} (${parts.join(', ')})`;
}
