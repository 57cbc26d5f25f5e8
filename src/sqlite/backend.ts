import type { Backend } from '../core/backend.js';
import { SealedDeadLetterStore } from '../core/personal/sealed-dead-letters.js';
import type { EventShape } from '../core/event.js';
import { personalDataOf } from '../core/personal/personal-data.js';
import type { PersonalData } from '../core/personal/personal-data.js';
import type { SubjectKeyStore } from '../core/personal/types.js';
import type Database from 'better-sqlite3';
import { SqliteCheckpointStore } from './sqlite-checkpoint-store.js';
import { SqliteCompletionStore } from './sqlite-completion-store.js';
import { SqliteDeadLetterStore } from './sqlite-dead-letter-store.js';
import { SqliteEventStore } from './sqlite-event-store.js';
import type { SqliteEventStoreOptions } from './sqlite-event-store.js';
import { SqliteLockRegistry } from './sqlite-lock-registry.js';
import type { SqliteLockRegistryOptions } from './sqlite-lock-registry.js';
import { SqliteMemberRegistry } from './sqlite-member-registry.js';
import { SqliteSnapshotStore } from './sqlite-snapshot-store.js';
import { SqliteViews } from './sqlite-view.js';
import { SqliteAdmin } from './admin.js';

export interface SqliteBackendOptions<E extends EventShape> extends SqliteEventStoreOptions<E> {
  /**
   * Leader election between the processes sharing the file (a lease row judged by SQLite's clock):
   * true, or the lease's settings. Default false: one process, nothing to elect.
   */
  leaderElection?: boolean | Omit<SqliteLockRegistryOptions, 'store' | 'database' | 'path'>;
}

export interface SqliteBackend<E extends EventShape = EventShape> extends Backend<E> {
  readonly kind: 'sqlite';
  readonly store: SqliteEventStore<E>;
  readonly checkpoints: SqliteCheckpointStore;
  /**
   * The dead-letter queue. Letters about events with personal data are kept sealed with the event's
   * subject keys (payload and errors) and opened on the way out: a forget erases them.
   */
  readonly deadLetters: SealedDeadLetterStore;
  readonly completions: SqliteCompletionStore;
  readonly snapshots: SqliteSnapshotStore;
  /**
   * Where the subjects' keys of personal data live: a `SqliteSubjectKeyStore` on the same connection
   * (the `eskit_subject_keys` table), or the key store you gave as `subjectKeys`.
   */
  readonly subjectKeys: SubjectKeyStore;
  readonly locks: SqliteLockRegistry | undefined;
  /**
   * Who is alive among the processes sharing the file that run a partitioned runner (there whenever
   * `locks` is): rows judged by SQLite's clock, announced at once to this process's registries only.
   */
  readonly members: SqliteMemberRegistry | undefined;
  /** The one connection every part shares (for your own tables in the same file). */
  readonly database: Database.Database;
  /** The SQL views in this file: `new SqlView({ backend, name, setup, evolve })` builds on them. */
  readonly views: SqliteViews<E>;
  /** Checkpoints, leases, views, dead-letter counts, status rows and the fenced reset, for tools. */
  readonly admin: SqliteAdmin;
}

/**
 * Every part on one SQLite file and one connection: the events, checkpoints, dead letters and
 * completion records live side by side, so a side effect or a view written there commits with them.
 *
 * ```ts
 * const backend = sqlite({ path: 'shop.db' });
 * new Automation({ backend, name: 'mailer', trigger, execute });
 * await backend.close();
 * ```
 */
export function sqlite<E extends EventShape = EventShape>(options: SqliteBackendOptions<E>): SqliteBackend<E> {
  const { leaderElection, ...storeOptions } = options;
  const store = new SqliteEventStore<E>(storeOptions);
  const locks = leaderElection ? new SqliteLockRegistry({ ...(leaderElection === true ? {} : leaderElection), store }) : undefined;
  // The parts follow the store's migrate option: with false, nothing touches the schema before migrate().
  const { migrate } = storeOptions;
  const checkpoints = new SqliteCheckpointStore({ store, migrate });
  const members = locks ? new SqliteMemberRegistry({ store, migrate }) : undefined;
  const deadLetters = new SqliteDeadLetterStore({ store, migrate });
  const completions = new SqliteCompletionStore({ store, migrate });
  const snapshots = new SqliteSnapshotStore({ store, migrate });
  const admin = new SqliteAdmin({ store, migrate });
  let closing: Promise<void> | undefined;
  return {
    kind: 'sqlite',
    store,
    checkpoints,
    deadLetters: new SealedDeadLetterStore(deadLetters, store),
    completions,
    snapshots,
    // The store always has one (its own, unless you gave yours).
    subjectKeys: (personalDataOf(store) as PersonalData).keys,
    locks,
    members,
    database: store.database,
    views: new SqliteViews<E>({ store }),
    admin,
    async migrate() {
      await store.migrate();
    },
    close() {
      closing ??= (async () => {
        await members?.close();
        await locks?.close();
        await Promise.all([deadLetters.close(), completions.close()]);
        admin.runners.close();
        await store.close();
      })();
      return closing;
    },
  };
}
