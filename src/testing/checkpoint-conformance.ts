import assert from 'node:assert/strict';
import { describe } from 'node:test';
import type { CheckpointInfo, CheckpointStore } from '../core/checkpoint.js';
import { ErrorCode, isEskitError } from '../core/errors.js';
import type { FencedError } from '../core/errors.js';
import { assertFenced } from './fences.js';
import { storeTest } from './harness.js';

/** A checkpoint store under test, on fresh, empty storage. */
export interface CheckpointStores {
  checkpoints: CheckpointStore;
  /** Releases what `create` opened (connections, files, schemas). */
  close(): Promise<void>;
}

/** What an adapter hands `checkpointStoreConformance`. */
export interface CheckpointConformanceHarness {
  /** Shown in test names, e.g. 'memory', 'sqlite', 'postgres'. */
  name: string;
  /** A fresh, empty store for one test; called once per test and closed when it ends. */
  create(): Promise<CheckpointStores>;
  /** Fails a test that runs longer than this (a hung query must fail, not stall CI). Default 60 000. */
  testTimeoutMs?: number;
}

/** Adapters may take times from the database's clock: allow for a little skew and rounding. */
const CLOCK_SLACK_MS = 1000;

async function rejectsInvalid(fn: () => Promise<unknown>, what: string): Promise<void> {
  await assert.rejects(fn, (error: unknown) => {
    assert.ok(isEskitError(error, ErrorCode.InvalidArgument), `${what}: expected ESKIT_INVALID_ARGUMENT, got ${String(error)}`);
    return true;
  });
}

/** The list without the times, by name (the contract does not fix an order). */
async function listed(checkpoints: CheckpointStore): Promise<Array<Omit<CheckpointInfo, 'updatedAt'>>> {
  return (await checkpoints.list())
    .map(({ name, position, fencingToken }) => ({ name, position, fencingToken }))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

async function info(checkpoints: CheckpointStore, name: string): Promise<CheckpointInfo | undefined> {
  return (await checkpoints.list()).find((c) => c.name === name);
}

/** Waits (for the clock, not a guessed time) until a change made now is stamped later than `time`. */
async function clockPast(time: Date): Promise<void> {
  while (Date.now() <= time.getTime() + 2) await new Promise((resolve) => setTimeout(resolve, 1));
}

/**
 * Registers the CheckpointStore conformance tests (node:test `describe`/`it`) for one adapter: loading,
 * listing, and the fencing of claims and saves that keeps a stale leader from moving a checkpoint.
 * Every adapter in eskit runs it, and so can third-party ones:
 *
 * ```ts
 * checkpointStoreConformance({
 *   name: 'my-adapter',
 *   create: async () => {
 *     const db = await freshDatabase();
 *     return { checkpoints: new MyCheckpoints(db), close: () => db.drop() };
 *   },
 * });
 * ```
 */
export function checkpointStoreConformance(harness: CheckpointConformanceHarness): void {
  const test = storeTest(harness);

  describe(`CheckpointStore conformance: ${harness.name}`, () => {
    test('load is undefined until the first save, even after a claim; list shows only saved checkpoints', async ({ checkpoints }) => {
      assert.equal(await checkpoints.load('sub'), undefined);
      assert.deepEqual(await checkpoints.list(), []);
      assert.equal(await checkpoints.claim('sub', 5), undefined, 'a claim of a checkpoint never saved returns undefined');
      assert.equal(await checkpoints.load('sub'), undefined);
      assert.deepEqual(await checkpoints.list(), [], 'a claimed but unsaved checkpoint is not listed');
      await checkpoints.save('sub', 10, { fencingToken: 5 });
      assert.equal(await checkpoints.load('sub'), 10);
      assert.equal(await checkpoints.claim('sub', 6), 10, 'a claim returns the saved position');
      assert.deepEqual(await listed(checkpoints), [{ name: 'sub', position: 10, fencingToken: 6 }]);
      assert.equal(await checkpoints.load('other'), undefined, 'checkpoints are separate');
    });

    test('positions and tokens up to 2^53 - 1 and any non-empty name round-trip', async ({ checkpoints }) => {
      const names = ['a', 'with space', 'ünïcödé 🎉', 'slash/and:colon', 'x'.repeat(500)];
      for (const [index, name] of names.entries()) await checkpoints.save(name, index, { fencingToken: index });
      await checkpoints.save('big', Number.MAX_SAFE_INTEGER, { fencingToken: Number.MAX_SAFE_INTEGER });
      for (const [index, name] of names.entries()) assert.equal(await checkpoints.load(name), index, name);
      assert.equal(await checkpoints.load('big'), Number.MAX_SAFE_INTEGER);
      assert.deepEqual(
        await listed(checkpoints),
        [...names.map((name, index) => ({ name, position: index, fencingToken: index })), { name: 'big', position: Number.MAX_SAFE_INTEGER, fencingToken: Number.MAX_SAFE_INTEGER }].sort(
          (a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0),
        ),
      );
      await assertFenced(() => checkpoints.claim('big', Number.MAX_SAFE_INTEGER - 1), 'big', Number.MAX_SAFE_INTEGER - 1, Number.MAX_SAFE_INTEGER);
    });

    test('claim: an equal or newer token is accepted, an older one is fenced with the current token and changes nothing', async ({ checkpoints }) => {
      assert.equal(await checkpoints.claim('sub', 5), undefined);
      assert.equal(await checkpoints.claim('sub', 5), undefined, 'the same token claims again (a retry)');
      await assertFenced(() => checkpoints.claim('sub', 4), 'sub', 4, 5);
      await checkpoints.save('sub', 10, { fencingToken: 5 });
      assert.equal(await checkpoints.claim('sub', 7), 10, 'a new leader gets the saved position');
      const before = await info(checkpoints, 'sub');
      await clockPast(before?.updatedAt ?? new Date());
      await assertFenced(() => checkpoints.claim('sub', 6), 'sub', 6, 7);
      await assertFenced(() => checkpoints.claim('sub', 0), 'sub', 0, 7);
      assert.deepEqual(await info(checkpoints, 'sub'), before, 'a fenced claim changes neither position, token nor updatedAt');
      assert.equal(await checkpoints.claim('sub', 7), 10);
    });

    test('save with a token: an older one is rejected and changes nothing; equal or newer is accepted and the token kept at the highest', async ({ checkpoints }) => {
      await checkpoints.claim('sub', 5);
      await checkpoints.save('sub', 10, { fencingToken: 5 });
      const before = await info(checkpoints, 'sub');
      await clockPast(before?.updatedAt ?? new Date());
      await assertFenced(() => checkpoints.save('sub', 11, { fencingToken: 4 }), 'sub', 4, 5);
      await assertFenced(() => checkpoints.save('sub', 11, { fencingToken: 0 }), 'sub', 0, 5);
      assert.deepEqual(await info(checkpoints, 'sub'), before, 'a fenced save changes neither position, token nor updatedAt');
      assert.equal(await checkpoints.load('sub'), 10);

      await checkpoints.save('sub', 12, { fencingToken: 5 });
      assert.deepEqual(await listed(checkpoints), [{ name: 'sub', position: 12, fencingToken: 5 }], 'the same token saves');
      await checkpoints.save('sub', 13, { fencingToken: 8 });
      assert.deepEqual(await listed(checkpoints), [{ name: 'sub', position: 13, fencingToken: 8 }], 'a newer token saves without claiming and becomes the current one');
      await assertFenced(() => checkpoints.save('sub', 14, { fencingToken: 5 }), 'sub', 5, 8);
      await assertFenced(() => checkpoints.claim('sub', 7), 'sub', 7, 8);
      assert.equal(await checkpoints.load('sub'), 13);
    });

    test('fencing is per checkpoint', async ({ checkpoints }) => {
      await checkpoints.claim('a', 9);
      await checkpoints.save('b', 1, { fencingToken: 1 });
      assert.equal(await checkpoints.claim('b', 2), 1);
      await assertFenced(() => checkpoints.save('a', 1, { fencingToken: 8 }), 'a', 8, 9);
      assert.deepEqual(await listed(checkpoints), [{ name: 'b', position: 1, fencingToken: 2 }]);
    });

    test('save without a token is unconditional, even backwards, and leaves the token; a first one records token 0', async ({ checkpoints }) => {
      await checkpoints.save('plain', 3);
      await checkpoints.save('plain', 4);
      await checkpoints.claim('fenced', 9);
      await checkpoints.save('fenced', 20);
      await checkpoints.save('fenced', 15); // the caller's explicit reset
      assert.deepEqual(await listed(checkpoints), [
        { name: 'fenced', position: 15, fencingToken: 9 },
        { name: 'plain', position: 4, fencingToken: 0 },
      ]);
      await assertFenced(() => checkpoints.save('fenced', 21, { fencingToken: 8 }), 'fenced', 8, 9);
      // A checkpoint saved without a token can be taken over by any token.
      await checkpoints.save('plain', 5, { fencingToken: 0 });
      assert.equal(await checkpoints.claim('plain', 1), 5);
      assert.deepEqual(await listed(checkpoints), [
        { name: 'fenced', position: 15, fencingToken: 9 },
        { name: 'plain', position: 5, fencingToken: 1 },
      ]);
    });

    test('a first save with a token creates the checkpoint with that token, stamped with the time of the save', async ({ checkpoints }) => {
      const before = Date.now();
      await checkpoints.save('sub', 7, { fencingToken: 3 });
      const after = Date.now();
      await assertFenced(() => checkpoints.claim('sub', 2), 'sub', 2, 3);
      const [saved, ...rest] = await checkpoints.list();
      assert.deepEqual(rest, []);
      assert.deepEqual({ ...saved, updatedAt: undefined }, { name: 'sub', position: 7, fencingToken: 3, updatedAt: undefined });
      assert.ok(saved?.updatedAt instanceof Date, 'updatedAt is a Date');
      const time = saved.updatedAt.getTime();
      assert.ok(time >= before - CLOCK_SLACK_MS && time <= after + CLOCK_SLACK_MS, `updatedAt ${saved.updatedAt.toISOString()} is the time of the save`);
    });

    test('concurrent claims: the highest token wins, every other claim is fenced by a newer one or overtaken', async ({ checkpoints }) => {
      // A fixed shuffle, so that a failure can be replayed.
      const tokens = [7, 20, 3, 14, 1, 18, 9, 12, 5, 16, 2, 19, 11, 6, 15, 4, 17, 8, 13, 10];
      const outcomes = await Promise.allSettled(tokens.map((token) => checkpoints.claim('race', token)));
      outcomes.forEach((outcome, index) => {
        if (outcome.status === 'fulfilled') return;
        const error = outcome.reason as FencedError;
        assert.ok(isEskitError(error, ErrorCode.Fenced), `claim ${tokens[index]}: expected ESKIT_FENCED, got ${String(error)}`);
        assert.ok(error.currentToken > (tokens[index] as number), `claim ${tokens[index]} fenced only by a newer token, not ${error.currentToken}`);
      });
      assert.equal(outcomes[tokens.indexOf(20)]?.status, 'fulfilled', 'the newest token is never fenced');
      await assertFenced(() => checkpoints.save('race', 1, { fencingToken: 19 }), 'race', 19, 20);
      await checkpoints.save('race', 1, { fencingToken: 20 });
      assert.deepEqual(await listed(checkpoints), [{ name: 'race', position: 1, fencingToken: 20 }]);
    });

    test('concurrent saves: the newest token\'s position stands', async ({ checkpoints }) => {
      const tokens = [4, 9, 1, 7, 10, 2, 6, 3, 8, 5];
      const outcomes = await Promise.allSettled(tokens.map((token) => checkpoints.save('race', token * 100, { fencingToken: token })));
      outcomes.forEach((outcome, index) => {
        if (outcome.status === 'fulfilled') return;
        const error = outcome.reason as FencedError;
        assert.ok(isEskitError(error, ErrorCode.Fenced), `save ${tokens[index]}: expected ESKIT_FENCED, got ${String(error)}`);
        assert.ok(error.currentToken > (tokens[index] as number), `save ${tokens[index]} fenced only by a newer token`);
      });
      assert.equal(outcomes[tokens.indexOf(10)]?.status, 'fulfilled');
      assert.deepEqual(await listed(checkpoints), [{ name: 'race', position: 1000, fencingToken: 10 }]);
    });

    test('checks its arguments, writing nothing', async ({ checkpoints }) => {
      for (const name of ['', 7, undefined, null]) {
        await rejectsInvalid(() => checkpoints.load(name as string), `load ${String(name)}`);
        await rejectsInvalid(() => checkpoints.claim(name as string, 1), `claim ${String(name)}`);
        await rejectsInvalid(() => checkpoints.save(name as string, 1), `save ${String(name)}`);
      }
      for (const bad of [-1, 0.5, Number.NaN, Number.POSITIVE_INFINITY, Number.MAX_SAFE_INTEGER + 1, '1', undefined]) {
        await rejectsInvalid(() => checkpoints.claim('x', bad as number), `claim token ${String(bad)}`);
        await rejectsInvalid(() => checkpoints.save('x', bad as number), `save position ${String(bad)}`);
        if (bad !== undefined) await rejectsInvalid(() => checkpoints.save('x', 1, { fencingToken: bad as number }), `save token ${String(bad)}`);
      }
      assert.deepEqual(await checkpoints.list(), []);
      assert.equal(await checkpoints.claim('x', 0), undefined, 'no rejected claim left a token behind');
    });
  });
}
