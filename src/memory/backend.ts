import type { Backend } from '../core/backend.js';
import { SealedDeadLetterStore } from '../core/personal/sealed-dead-letters.js';
import type { EventShape } from '../core/event.js';
import { personalDataOf } from '../core/personal/personal-data.js';
import type { PersonalData } from '../core/personal/personal-data.js';
import type { SubjectKeyStore } from '../core/personal/types.js';
import type { EventStoreBaseOptions } from '../core/store-base.js';
import { MemoryCheckpointStore } from './memory-checkpoint-store.js';
import { MemoryCompletionStore } from './memory-completion-store.js';
import { MemoryDeadLetterStore } from './memory-dead-letter-store.js';
import { MemoryEventStore } from './memory-event-store.js';
import { MemoryLockRegistry } from './memory-lock-registry.js';
import { MemoryMemberRegistry } from './memory-member-registry.js';
import { MemorySnapshotStore } from './memory-snapshot-store.js';
import { MemoryAdmin } from './admin.js';

export interface MemoryBackendOptions<E extends EventShape> extends EventStoreBaseOptions<E> {
  /**
   * Leader election between the runners of this process (one runs each name). Default false: there is
   * only one process, so it decides nothing; turn it on to try failover in tests.
   */
  leaderElection?: boolean;
}

export interface MemoryBackend<E extends EventShape = EventShape> extends Backend<E> {
  readonly kind: 'memory';
  readonly store: MemoryEventStore<E>;
  readonly checkpoints: MemoryCheckpointStore;
  /**
   * The dead-letter queue. Letters about events with personal data are kept sealed with the event's
   * subject keys (payload and errors) and opened on the way out: a forget erases them.
   */
  readonly deadLetters: SealedDeadLetterStore;
  readonly completions: MemoryCompletionStore;
  readonly snapshots: MemorySnapshotStore;
  /** Where the subjects' keys of personal data live: a `MemorySubjectKeyStore`, or the key store you gave as `subjectKeys`. */
  readonly subjectKeys: SubjectKeyStore;
  readonly locks: MemoryLockRegistry | undefined;
  /** Who is alive among the "nodes" of this process (there whenever `locks` is); `expire()` kills one. */
  readonly members: MemoryMemberRegistry | undefined;
  /** Checkpoints, locks, dead-letter counts, status rows and the fenced reset, for tools and tests. */
  readonly admin: MemoryAdmin;
}

/**
 * Every part in this process's memory, for tests, examples and prototypes: gone when the process ends.
 * The dead-letter queue and the completion records check fences against the checkpoints, as the
 * database backends do.
 *
 * ```ts
 * const backend = memory();
 * new Subscription({ backend, name: 'projector', handler });
 * ```
 */
export function memory<E extends EventShape = EventShape>(options: MemoryBackendOptions<E> = {}): MemoryBackend<E> {
  const { leaderElection, ...storeOptions } = options;
  const store = new MemoryEventStore<E>(storeOptions);
  const checkpoints = new MemoryCheckpointStore();
  const locks = leaderElection ? new MemoryLockRegistry() : undefined;
  const members = leaderElection ? new MemoryMemberRegistry() : undefined;
  const deadLetters = new MemoryDeadLetterStore({ checkpoints });
  const completions = new MemoryCompletionStore({ checkpoints });
  let closing: Promise<void> | undefined;
  return {
    kind: 'memory',
    store,
    checkpoints,
    deadLetters: new SealedDeadLetterStore(deadLetters, store),
    completions,
    snapshots: new MemorySnapshotStore({ store }),
    // The store always has one (its own, unless you gave yours).
    subjectKeys: (personalDataOf(store) as PersonalData).keys,
    locks,
    members,
    admin: new MemoryAdmin({ store, checkpoints, deadLetters, completions, locks }),
    migrate: async () => undefined,
    close() {
      closing ??= (async () => {
        await locks?.close();
        await store.close();
      })();
      return closing;
    },
  };
}
