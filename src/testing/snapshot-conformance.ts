import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe } from 'node:test';
import { ErrorCode, isEskitError } from '../core/errors.js';
import type { NewSnapshot, Snapshot } from '../core/snapshot.js';
import { snapshotTest } from './snapshots/context.js';
import type { SnapshotConformanceHarness } from './snapshots/context.js';
import { handlerSnapshotTests } from './snapshots/handler-tests.js';

export type { SnapshotConformanceHarness, SnapshotStores } from './snapshots/context.js';
export { assertSnapshotsMatchReplay } from './snapshot-replay.js';
export type { SnapshotReplayOptions } from './snapshot-replay.js';

/** Adapters may take times from the database's clock: allow for a little skew and rounding. */
const CLOCK_SLACK_MS = 1000;

function snapshotOf(streamId: string, streamVersion: number, state: unknown = { at: streamVersion }, extra: Partial<NewSnapshot> = {}): NewSnapshot {
  return { streamId, name: 'decider', stateVersion: '1', streamVersion, eventId: randomUUID(), state, ...extra };
}

function withoutTime(snapshot: Snapshot | undefined): Omit<Snapshot, 'createdAt'> | undefined {
  if (snapshot === undefined) return undefined;
  const { createdAt, ...rest } = snapshot;
  assert.ok(createdAt instanceof Date && !Number.isNaN(createdAt.getTime()), 'createdAt is a valid Date');
  return rest;
}

async function rejectsWith(fn: () => Promise<unknown>, codes: readonly string[], what: string): Promise<void> {
  await assert.rejects(fn, (error: unknown) => {
    assert.ok(codes.some((code) => isEskitError(error, code)), `${what}: expected ${codes.join(' or ')}, got ${String(error)}`);
    return true;
  });
}

/**
 * Registers the snapshot conformance tests (node:test `describe`/`it`) for one adapter: the
 * SnapshotStore contract (latest per stream and name, replaced only by a higher stream version,
 * deleted per stream, states that round-trip), and a CommandHandler loading from and writing
 * snapshots on that adapter (snapshot plus tail equals a full replay; another state version, an
 * undecodable state, a snapshot of another history are ignored; a decide that changes its state
 * cannot reach a snapshot; racing and failing writers). Every adapter in eskit runs it:
 *
 * ```ts
 * snapshotConformance({
 *   name: 'my-adapter',
 *   create: async () => {
 *     const db = await freshDatabase();
 *     return { store: new MyEventStore(db), snapshots: new MySnapshots(db), close: () => db.drop() };
 *   },
 * });
 * ```
 */
export function snapshotConformance(harness: SnapshotConformanceHarness): void {
  const test = snapshotTest(harness);

  describe(`Snapshot conformance: ${harness.name}`, () => {
    test('load is undefined until a save; a save reads back whole, with a fresh state each load', async ({ snapshots }) => {
      assert.equal(await snapshots.load('cart-1', 'decider'), undefined);
      const before = Date.now();
      const saved = snapshotOf('cart-1', 7, { items: [{ sku: 'a', qty: 2 }], open: true, note: null });
      assert.equal(await snapshots.save(saved), true);
      const after = Date.now();
      const loaded = await snapshots.load('cart-1', 'decider');
      assert.deepStrictEqual(withoutTime(loaded), { ...saved, eventId: saved.eventId.toLowerCase() });
      const time = loaded?.createdAt.getTime() ?? 0;
      assert.ok(time >= before - CLOCK_SLACK_MS && time <= after + CLOCK_SLACK_MS, 'createdAt is the time of the save');
      (loaded?.state as { items: unknown[] }).items.push('changed by the caller');
      assert.deepStrictEqual((await snapshots.load('cart-1', 'decider'))?.state, saved.state, 'changing a loaded state changes nothing stored');
      assert.equal(await snapshots.load('cart-1', 'other'), undefined, 'names are separate');
      assert.equal(await snapshots.load('cart-2', 'decider'), undefined, 'streams are separate');
    });

    test('a snapshot is replaced only by one of a higher stream version', async ({ snapshots }) => {
      const ten = snapshotOf('s', 10);
      assert.equal(await snapshots.save(ten), true);
      assert.equal(await snapshots.save(snapshotOf('s', 9)), false, 'a lower version is refused');
      assert.equal(await snapshots.save(snapshotOf('s', 10, { other: true }, { stateVersion: '2' })), false, 'the same version is refused, whatever its state version');
      assert.equal((await snapshots.load('s', 'decider'))?.eventId, ten.eventId.toLowerCase());
      const eleven = snapshotOf('s', 11, 'eleven', { stateVersion: 'v2' });
      assert.equal(await snapshots.save(eleven), true);
      assert.deepStrictEqual(withoutTime(await snapshots.load('s', 'decider')), { ...eleven, eventId: eleven.eventId.toLowerCase() });
      assert.equal(await snapshots.save(snapshotOf('s', 1, {}, { name: 'another' })), true, 'another name has its own row');
      assert.equal((await snapshots.load('s', 'decider'))?.streamVersion, 11);
    });

    test('replacing: a snapshot the caller found unusable is replaced by a lower one, only while it is still there', async ({ snapshots }) => {
      const stale = snapshotOf('s', 50);
      await snapshots.save(stale);
      const fresh = snapshotOf('s', 4);
      assert.equal(await snapshots.save(fresh, { replacing: { streamVersion: 50, eventId: randomUUID() } }), false, 'another event id: not the row read');
      assert.equal(await snapshots.save(fresh, { replacing: { streamVersion: 49, eventId: stale.eventId } }), false, 'another version: not the row read');
      assert.equal(await snapshots.save(fresh, { replacing: { streamVersion: 50, eventId: stale.eventId.toUpperCase() } }), true);
      assert.equal((await snapshots.load('s', 'decider'))?.streamVersion, 4);
      assert.equal(await snapshots.save(snapshotOf('s', 3), { replacing: { streamVersion: 50, eventId: stale.eventId } }), false, 'the row read is gone');
      assert.equal(await snapshots.save(snapshotOf('t', 3), { replacing: { streamVersion: 50, eventId: stale.eventId } }), true, 'no row: written');
    });

    test('deleteStream removes every snapshot of the stream and no other', async ({ snapshots }) => {
      await snapshots.save(snapshotOf('a', 1));
      await snapshots.save(snapshotOf('a', 1, {}, { name: 'other' }));
      await snapshots.save(snapshotOf('ab', 1));
      assert.equal(await snapshots.deleteStream('a'), 2);
      assert.equal(await snapshots.load('a', 'decider'), undefined);
      assert.equal(await snapshots.load('a', 'other'), undefined);
      assert.equal((await snapshots.load('ab', 'decider'))?.streamVersion, 1);
      assert.equal(await snapshots.deleteStream('a'), 0);
      assert.equal(await snapshots.save(snapshotOf('a', 1)), true, 'a deleted stream can be snapshotted from its start again');
    });

    test('JSON states and texts round-trip; large versions are kept', async ({ snapshots }) => {
      const states: unknown[] = [
        null,
        true,
        0,
        -5,
        0.1,
        1e21,
        'ünïcödé 🎉 "quoted" \\ back',
        [],
        {},
        { nested: { deep: [1, [2, [3, { four: 4 }]]] }, empty: '', list: Array.from({ length: 1000 }, (_, i) => i) },
      ];
      for (const [index, state] of states.entries()) {
        const streamId = `stream ${index} 🎉/with:chars`;
        await snapshots.save(snapshotOf(streamId, Number.MAX_SAFE_INTEGER - index, state, { name: 'ünï name', stateVersion: `v${index} ✓` }));
        const loaded = await snapshots.load(streamId, 'ünï name');
        assert.deepStrictEqual(loaded?.state, state, `state ${index}`);
        assert.equal(loaded?.streamVersion, Number.MAX_SAFE_INTEGER - index);
        assert.equal(loaded?.stateVersion, `v${index} ✓`);
      }
    });

    test('checks its arguments and writes nothing it refused', async ({ snapshots }) => {
      const invalid = [ErrorCode.InvalidArgument];
      for (const bad of ['', 7, undefined, 'nul\u0000']) {
        await rejectsWith(() => snapshots.load(bad as string, 'decider'), invalid, `load streamId ${String(bad)}`);
        await rejectsWith(() => snapshots.load('s', bad as string), invalid, `load name ${String(bad)}`);
        await rejectsWith(() => snapshots.save(snapshotOf(bad as string, 1)), invalid, `save streamId ${String(bad)}`);
        await rejectsWith(() => snapshots.save(snapshotOf('s', 1, {}, { name: bad as string })), invalid, `save name ${String(bad)}`);
        await rejectsWith(() => snapshots.save(snapshotOf('s', 1, {}, { stateVersion: bad as string })), invalid, `save stateVersion ${String(bad)}`);
        await rejectsWith(() => snapshots.deleteStream(bad as string), invalid, `deleteStream ${String(bad)}`);
      }
      for (const bad of [0, -1, 1.5, Number.NaN, Number.MAX_SAFE_INTEGER + 1, '3']) {
        await rejectsWith(() => snapshots.save(snapshotOf('s', bad as number)), invalid, `streamVersion ${String(bad)}`);
      }
      for (const bad of ['not-a-uuid', '', 12]) {
        await rejectsWith(() => snapshots.save(snapshotOf('s', 1, {}, { eventId: bad as string })), invalid, `eventId ${String(bad)}`);
      }
      const unserialisable = [ErrorCode.Serialization];
      for (const bad of [undefined, 10n, new Date(0), new Map(), { nan: Number.NaN }, 'nul\u0000', () => 1]) {
        await rejectsWith(() => snapshots.save(snapshotOf('s', 1, {}, { state: bad })), unserialisable, `state ${String(bad)}`);
      }
      await rejectsWith(() => snapshots.save(snapshotOf('s', 1), { replacing: { streamVersion: 0, eventId: randomUUID() } }), invalid, 'replacing');
      assert.equal(await snapshots.load('s', 'decider'), undefined, 'nothing was written');
    });

    test('concurrent saves: the highest stream version stands', async ({ snapshots }) => {
      const versions = [4, 9, 1, 7, 10, 2, 6, 3, 8, 5];
      const results = await Promise.all(versions.map((v) => snapshots.save(snapshotOf('race', v * 100, { v }))));
      assert.equal(results[versions.indexOf(10)], true, 'the highest is always written');
      const loaded = await snapshots.load('race', 'decider');
      assert.equal(loaded?.streamVersion, 1000);
      assert.deepStrictEqual(loaded?.state, { v: 10 });
    });

    // Only where a row can hold what is not JSON (PostgreSQL's json column cannot): a harness without
    // the hook has no such test, rather than a skipped one.
    const { corruptSnapshot } = harness;
    if (corruptSnapshot) {
      test('a row whose state is not JSON fails to load with ESKIT_CORRUPT_SNAPSHOT', async (stores) => {
        await stores.snapshots.save(snapshotOf('s', 3));
        await corruptSnapshot(stores, 's', 'decider');
        await rejectsWith(() => stores.snapshots.load('s', 'decider'), [ErrorCode.CorruptSnapshot], 'corrupt row');
      });
    }

    handlerSnapshotTests(harness, test);
  });
}
