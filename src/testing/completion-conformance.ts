import assert from 'node:assert/strict';
import { describe } from 'node:test';
import type { CheckpointStore, FencedWriteOptions } from '../core/checkpoint.js';
import type { CompletionStore } from '../core/dead-letter.js';
import { ErrorCode, isEskitError } from '../core/errors.js';
import { assertFenced, MALFORMED_FENCES } from './fences.js';
import { storeTest } from './harness.js';

/** The stores under test, on fresh, empty storage. */
export interface CompletionStores {
  completions: CompletionStore;
  /**
   * A checkpoint store on the same storage, whose checkpoints the completion store's fences name: the
   * tests claim a checkpoint with a newer token through it and expect a stale write to be refused.
   */
  checkpoints: CheckpointStore;
  /** Releases what `create` opened (connections, files, schemas). */
  close(): Promise<void>;
}

/** What an adapter hands `completionStoreConformance`. */
export interface CompletionConformanceHarness {
  /** Shown in test names, e.g. 'memory', 'sqlite', 'postgres'. */
  name: string;
  /** Fresh, empty stores for one test; called once per test and closed when it ends. */
  create(): Promise<CompletionStores>;
  /** Fails a test that runs longer than this (a hung query must fail, not stall CI). Default 60 000. */
  testTimeoutMs?: number;
}

async function rejectsWith(promise: () => Promise<unknown>, code: string, message?: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isEskitError(error, code), `${message ?? ''}: expected ${code}, got ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`);
    return true;
  }, message);
}


const fence = (checkpoint: string, fencingToken: number): FencedWriteOptions => ({ fence: { checkpoint, fencingToken } });

/**
 * Registers the CompletionStore conformance tests (node:test `describe`/`it`) for one adapter: recording,
 * reading and pruning completions, and the fenced `markCompleted` of a leader (a stale leader records
 * nothing once a newer token has claimed its checkpoint). Every adapter in eskit runs it, and so can
 * third-party ones:
 *
 * ```ts
 * completionStoreConformance({
 *   name: 'my-adapter',
 *   create: async () => {
 *     const db = await freshDatabase();
 *     return { completions: new MyCompletions(db), checkpoints: new MyCheckpoints(db), close: () => db.drop() };
 *   },
 * });
 * ```
 */
export function completionStoreConformance(harness: CompletionConformanceHarness): void {
  const test = storeTest(harness);

  describe(`CompletionStore conformance: ${harness.name}`, () => {
    test('markCompleted is idempotent; completedAfter and prune work per source and position', async ({ completions }) => {
      const items = [
        { position: 1, itemId: 'x' },
        { position: 2, itemId: 'y' },
        { position: 2, itemId: 'z' },
        { position: 3, itemId: 'x' },
        { position: 5, itemId: 'with/slash ü 🎉' },
      ];
      assert.deepEqual(await completions.completedAfter('mailer', 0), new Set());
      await completions.markCompleted('mailer', items);
      await completions.markCompleted('mailer', items);
      await completions.markCompleted('mailer', [{ position: 2, itemId: 'y' }, { position: 2, itemId: 'y' }]);
      await completions.markCompleted('mailer', []);
      await completions.markCompleted('billing', [{ position: 2, itemId: 'x' }, { position: 4, itemId: 'y' }]);
      await completions.markCompleted('mailer', [{ position: 2 ** 40, itemId: '' }]);

      assert.deepEqual(await completions.completedAfter('mailer', 0), new Set(['1/x', '2/y', '2/z', '3/x', '5/with/slash ü 🎉', `${2 ** 40}/`]));
      assert.deepEqual(await completions.completedAfter('mailer', 1), new Set(['2/y', '2/z', '3/x', '5/with/slash ü 🎉', `${2 ** 40}/`]));
      assert.deepEqual(await completions.completedAfter('mailer', 2), new Set(['3/x', '5/with/slash ü 🎉', `${2 ** 40}/`]));
      assert.deepEqual(await completions.completedAfter('mailer', 2 ** 40), new Set());
      assert.deepEqual(await completions.completedAfter('billing', 0), new Set(['2/x', '4/y']));
      assert.deepEqual(await completions.completedAfter('billing', 3), new Set(['4/y']));
      assert.deepEqual(await completions.completedAfter('nobody', 0), new Set());

      await completions.prune('mailer', 2);
      assert.deepEqual(await completions.completedAfter('mailer', 0), new Set(['3/x', '5/with/slash ü 🎉', `${2 ** 40}/`]));
      assert.deepEqual(await completions.completedAfter('billing', 0), new Set(['2/x', '4/y']), 'prune leaves other sources alone');
      await completions.prune('mailer', 2);
      await completions.prune('nobody', 100);
      await completions.prune('billing', 0);
      assert.deepEqual(await completions.completedAfter('billing', 0), new Set(['2/x', '4/y']));
      await completions.prune('billing', 4);
      assert.deepEqual(await completions.completedAfter('billing', 0), new Set());
      // A pruned item recorded again is remembered again.
      await completions.markCompleted('billing', [{ position: 2, itemId: 'x' }]);
      assert.deepEqual(await completions.completedAfter('billing', 1), new Set(['2/x']));
      const fresh = await completions.completedAfter('billing', 0);
      fresh.add('999/mine');
      assert.deepEqual(await completions.completedAfter('billing', 0), new Set(['2/x']), 'the returned set is the caller\'s own');
    });

    test('rejects bad input with typed errors and records nothing from a bad batch', async ({ completions }) => {
      const bad = ErrorCode.InvalidArgument;
      await rejectsWith(() => completions.markCompleted('', [{ position: 1, itemId: 'x' }]), bad, 'empty source');
      await rejectsWith(() => completions.markCompleted(7 as unknown as string, [{ position: 1, itemId: 'x' }]), bad, 'non-string source');
      const batches: unknown[] = [
        [{ position: 1, itemId: 'ok' }, { position: 1.5, itemId: 'x' }],
        [{ position: 1, itemId: 'ok' }, { position: -1, itemId: 'x' }],
        [{ position: 1, itemId: 'ok' }, { position: '2', itemId: 'x' }],
        [{ position: 1, itemId: 'ok' }, { position: 2, itemId: 3 }],
        [{ position: 1, itemId: 'ok' }, null],
        'items',
        undefined,
      ];
      for (const batch of batches) {
        await rejectsWith(() => completions.markCompleted('mailer', batch as []), bad, `batch ${JSON.stringify(batch)}`);
      }
      assert.deepEqual(await completions.completedAfter('mailer', 0), new Set(), 'no item of a rejected batch was recorded');
      for (const position of [1.5, -1, Number.NaN, '1', undefined]) {
        await rejectsWith(() => completions.completedAfter('mailer', position as number), bad, `completedAfter ${String(position)}`);
        await rejectsWith(() => completions.prune('mailer', position as number), bad, `prune ${String(position)}`);
      }
      await rejectsWith(() => completions.completedAfter('', 0), bad);
      await rejectsWith(() => completions.prune('', 0), bad);
    });

    test("'\\u0000' in a source or item id either round trips or is refused with a typed error, recording nothing", async ({ completions }) => {
      // PostgreSQL cannot store NUL in text, so an adapter may refuse it; it must not record part of the
      // batch or leak a driver error.
      const nul = 'a\u0000b';
      for (const [name, source, itemId] of [['source', nul, 'x'], ['itemId', 'mailer', nul]] as const) {
        let refused: unknown;
        try {
          await completions.markCompleted(source, [{ position: 1, itemId: 'ok' }, { position: 2, itemId }]);
          assert.deepEqual(await completions.completedAfter(source, 0), new Set(['1/ok', `2/${itemId}`]));
          await completions.prune(source, 2);
        } catch (error) {
          if (error instanceof assert.AssertionError) throw error;
          refused = error;
        }
        if (refused !== undefined) {
          assert.ok(
            isEskitError(refused, ErrorCode.Serialization) || isEskitError(refused, ErrorCode.InvalidArgument),
            `NUL in ${name}: refused with ${String(refused)}, expected ESKIT_SERIALIZATION or ESKIT_INVALID_ARGUMENT`,
          );
        }
        assert.deepEqual(await completions.completedAfter('mailer', 0), new Set(), `NUL in ${name}: nothing left recorded`);
      }
    });

    test('fenced markCompleted: once a newer token claimed the checkpoint, a stale batch is refused whole and records nothing', async ({ completions, checkpoints }) => {
      await checkpoints.claim('mailer-cp', 3);
      await completions.markCompleted('mailer', [{ position: 1, itemId: 'a' }], fence('mailer-cp', 3));
      await checkpoints.claim('mailer-cp', 4);
      await assertFenced(
        () => completions.markCompleted('mailer', [{ position: 1, itemId: 'a' }, { position: 2, itemId: 'b' }, { position: 3, itemId: 'c' }], fence('mailer-cp', 3)),
        'mailer-cp',
        3,
        4,
        'the stale leader (token 3) after a claim with 4',
      );
      assert.deepEqual(await completions.completedAfter('mailer', 0), new Set(['1/a']), 'nothing of the fenced batch was recorded');
      await assertFenced(() => completions.markCompleted('mailer', [], fence('mailer-cp', 0)), 'mailer-cp', 0, 4, 'an empty batch is fenced too');
      assert.equal(await checkpoints.load('mailer-cp'), undefined, 'a fenced write does not touch the checkpoint');
      assert.equal(await checkpoints.claim('mailer-cp', 4), undefined, 'nor its token');

      // A save with a newer token moves the fence as a claim does.
      await checkpoints.save('mailer-cp', 10, { fencingToken: 6 });
      await assertFenced(() => completions.markCompleted('mailer', [{ position: 11, itemId: 'x' }], fence('mailer-cp', 5)), 'mailer-cp', 5, 6);
      assert.deepEqual(await completions.completedAfter('mailer', 0), new Set(['1/a']));
    });

    test('fenced markCompleted: an equal or newer token passes, and so does a checkpoint nobody claimed', async ({ completions, checkpoints }) => {
      await checkpoints.claim('cp', 5);
      await completions.markCompleted('mailer', [{ position: 1, itemId: 'a' }], fence('cp', 5));
      await completions.markCompleted('mailer', [{ position: 2, itemId: 'b' }, { position: 2, itemId: 'c' }], fence('cp', 6));
      await completions.markCompleted('mailer', [{ position: 2, itemId: 'b' }], fence('cp', 5));
      await completions.markCompleted('mailer', [], fence('cp', 5));
      assert.deepEqual(await completions.completedAfter('mailer', 0), new Set(['1/a', '2/b', '2/c']));
      assert.equal(await checkpoints.claim('cp', 5), undefined, 'a write with a newer token does not claim the checkpoint');
      await completions.markCompleted('billing', [{ position: 3, itemId: 'x' }], fence('never-claimed', 0));
      assert.deepEqual(await completions.completedAfter('billing', 0), new Set(['3/x']), 'a missing checkpoint row fences nothing');
      assert.deepEqual(await checkpoints.list(), [], 'no checkpoint was created by a fenced write');
      assert.equal(await checkpoints.load('never-claimed'), undefined);
    });

    test('a malformed fence is refused with ESKIT_INVALID_ARGUMENT before anything is recorded', async ({ completions, checkpoints }) => {
      await checkpoints.claim('cp', 1);
      for (const [what, options] of MALFORMED_FENCES) {
        await rejectsWith(() => completions.markCompleted('mailer', [{ position: 1, itemId: 'x' }], options as FencedWriteOptions), ErrorCode.InvalidArgument, what);
      }
      assert.deepEqual(await completions.completedAfter('mailer', 0), new Set());
      await completions.markCompleted('mailer', [{ position: 1, itemId: 'x' }], { fence: undefined });
      await completions.markCompleted('mailer', [{ position: 2, itemId: 'x' }], {});
      assert.deepEqual(await completions.completedAfter('mailer', 0), new Set(['1/x', '2/x']), 'no fence: unconditional');
    });
  });
}
