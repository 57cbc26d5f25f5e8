import { describe } from 'node:test';
import type { DeadLetterConformanceHarness } from './dead-letters/context.js';
import { fenceTests } from './dead-letters/fences.js';
import { inputTests } from './dead-letters/input.js';
import { queryTests } from './dead-letters/queries.js';
import { redriveTests } from './dead-letters/redrive.js';
import { storageTests } from './dead-letters/storage.js';
import { storeTest } from './harness.js';

export type { DeadLetterConformanceHarness, DeadLetterStores } from './dead-letters/context.js';

/**
 * Registers the DeadLetterStore conformance tests (node:test `describe`/`it`) for one adapter: the
 * queue's operations, and the fenced `add` and `settleRedrive` of a leader (a stale leader changes
 * nothing once a newer token has claimed its checkpoint). The CompletionStore has its own suite,
 * `completionStoreConformance`. Every adapter in eskit runs it, and so can third-party ones:
 *
 * ```ts
 * deadLetterStoreConformance({
 *   name: 'my-adapter',
 *   create: async () => {
 *     const db = await freshDatabase();
 *     return { deadLetters: new MyDeadLetters(db), checkpoints: new MyCheckpoints(db), close: () => db.drop() };
 *   },
 * });
 * ```
 */
export function deadLetterStoreConformance(harness: DeadLetterConformanceHarness): void {
  const test = storeTest(harness);

  describe(`DeadLetterStore conformance: ${harness.name}`, () => {
    storageTests(test);
    queryTests(test);
    redriveTests(test);
    inputTests(test);
    fenceTests(test);
  });
}
