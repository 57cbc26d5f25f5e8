import { describe, it } from 'node:test';
import type { DeadLetterConformanceHarness, DeadLetterStores } from './dead-letters/context.js';
import { fenceTests } from './dead-letters/fences.js';
import { inputTests } from './dead-letters/input.js';
import { queryTests } from './dead-letters/queries.js';
import { redriveTests } from './dead-letters/redrive.js';
import { storageTests } from './dead-letters/storage.js';

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
  const test = (name: string, fn: (stores: DeadLetterStores) => Promise<void>): void => {
    it(name, { timeout: harness.testTimeoutMs ?? 60_000 }, async () => {
      const stores = await harness.create();
      try {
        await fn(stores);
      } finally {
        await stores.close();
      }
    });
  };

  describe(`DeadLetterStore conformance: ${harness.name}`, () => {
    storageTests(test);
    queryTests(test);
    redriveTests(test);
    inputTests(test);
    fenceTests(test);
  });
}
