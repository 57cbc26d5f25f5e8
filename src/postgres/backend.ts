import type { Backend } from '../core/backend.js';
import { SealedDeadLetterStore } from '../core/personal/sealed-dead-letters.js';
import type { EventShape } from '../core/event.js';
import { InvalidArgumentError } from '../core/errors.js';
import { personalDataOf } from '../core/personal/personal-data.js';
import type { PersonalData } from '../core/personal/personal-data.js';
import type { SubjectKeyStore } from '../core/personal/types.js';
import { PostgresLockRegistry } from './postgres-lock-registry.js';
import type { PostgresLockRegistryOptions } from './postgres-lock-registry.js';
import { PostgresMemberRegistry } from './postgres-member-registry.js';
import { PostgresCheckpointStore } from './postgres-checkpoint-store.js';
import { PostgresCompletionStore } from './postgres-completion-store.js';
import { PostgresDeadLetterStore } from './postgres-dead-letter-store.js';
import { PostgresEventStore } from './postgres-event-store.js';
import { PostgresSnapshotStore } from './postgres-snapshot-store.js';
import type { PostgresEventStoreOptions } from './postgres-event-store.js';
import { PostgresViews } from './postgres-view.js';
import { PostgresAdmin } from './admin.js';

export interface PostgresBackendOptions<E extends EventShape> extends PostgresEventStoreOptions<E> {
  /**
   * Leader election (session advisory locks on one dedicated connection per process). Default true:
   * every runner of this backend is run by one node at a time, and a standby takes over when it stops,
   * crashes or freezes. false turns it off (one process, or you elect leaders yourself); an object sets
   * the registry's options. The lock needs a DIRECT connection (not through a transaction-pooling
   * proxy): it uses `connectionString`, or the settings of the `pool` you gave, unless you give it a
   * `connectionString` or `connection` of its own here.
   */
  leaderElection?: boolean | Omit<PostgresLockRegistryOptions, 'schema'>;
}

export interface PostgresBackend<E extends EventShape = EventShape> extends Backend<E> {
  readonly kind: 'postgres';
  readonly store: PostgresEventStore<E>;
  readonly checkpoints: PostgresCheckpointStore;
  /**
   * The dead-letter queue. Letters about events with personal data are kept sealed with the event's
   * subject keys (payload and errors) and opened on the way out: a forget erases them.
   */
  readonly deadLetters: SealedDeadLetterStore;
  readonly completions: PostgresCompletionStore;
  readonly snapshots: PostgresSnapshotStore;
  /**
   * Where the subjects' keys of personal data live: a `PostgresSubjectKeyStore` on the same pool and
   * schema (`<schema>.subject_keys`), or the key store you gave as `subjectKeys`.
   */
  readonly subjectKeys: SubjectKeyStore;
  readonly locks: PostgresLockRegistry | undefined;
  /**
   * Who is alive among the nodes running a partitioned runner (there whenever `locks` is): a killed
   * node is dead as soon as its lock session ends, a frozen one when its ttl runs out.
   */
  readonly members: PostgresMemberRegistry | undefined;
  readonly schema: string;
  /** The SQL views in this schema: `new SqlView({ backend, name, setup, evolve })` builds on them. */
  readonly views: PostgresViews<E>;
  /** Checkpoints, locks, views, dead-letter counts, status rows and the fenced reset, for tools. */
  readonly admin: PostgresAdmin;
}

/**
 * Every part in one PostgreSQL schema, on one pool, with leader election on by default: the events,
 * checkpoints, dead letters and completion records live side by side, so a side effect or a view
 * written there commits with them.
 *
 * ```ts
 * const backend = postgres({ connectionString: process.env.DATABASE_URL });
 * new Automation({ backend, name: 'mailer', trigger, execute });
 * await backend.close();
 * ```
 */
export function postgres<E extends EventShape = EventShape>(options: PostgresBackendOptions<E>): PostgresBackend<E> {
  const { leaderElection = true, ...storeOptions } = options;
  const store = new PostgresEventStore<E>(storeOptions);
  let locks: PostgresLockRegistry | undefined;
  if (leaderElection !== false) {
    const own = leaderElection === true ? {} : leaderElection;
    if (typeof own !== 'object' || own === null) {
      throw new InvalidArgumentError('leaderElection must be true, false, or the lock registry options ({ sessionTimeoutMs, ... }).');
    }
    const direct =
      own.connectionString !== undefined || own.connection !== undefined
        ? {}
        : options.connectionString !== undefined
          ? { connectionString: options.connectionString }
          : { connection: store.pool.options };
    locks = new PostgresLockRegistry({ logger: options.logger, ...own, ...direct, schema: store.schema });
  }
  // The parts follow the store's migrate option: with false, nothing touches the schema before migrate().
  const { migrate } = storeOptions;
  const checkpoints = new PostgresCheckpointStore({ store, migrate });
  const members = locks ? new PostgresMemberRegistry({ store, locks, migrate }) : undefined;
  const deadLetters = new PostgresDeadLetterStore({ store, migrate });
  const completions = new PostgresCompletionStore({ store, migrate });
  const snapshots = new PostgresSnapshotStore({ store, migrate });
  const admin = new PostgresAdmin({ store, migrate });
  let closing: Promise<void> | undefined;
  return {
    kind: 'postgres',
    store,
    checkpoints,
    deadLetters: new SealedDeadLetterStore(deadLetters, store),
    completions,
    snapshots,
    // The store always has one (its own, unless you gave yours).
    subjectKeys: (personalDataOf(store) as PersonalData).keys,
    locks,
    members,
    schema: store.schema,
    views: new PostgresViews<E>({ store }),
    admin,
    migrate: () => store.migrate(),
    close() {
      closing ??= (async () => {
        await members?.close();
        await locks?.close();
        await Promise.all([checkpoints.close(), deadLetters.close(), completions.close(), snapshots.close()]);
        await store.close();
      })();
      return closing;
    },
  };
}
