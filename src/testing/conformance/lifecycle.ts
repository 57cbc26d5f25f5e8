import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { ErrorCode } from '../../core/errors.js';
import type { Recorded } from '../../core/event.js';
import { STREAM_DELETED, STREAM_TRUNCATED } from '../../core/lifecycle.js';
import type { EventStore } from '../../core/store.js';
import { assertUnchanged, collect, expectCode, snapshot } from './context.js';
import type { SuiteContext } from './context.js';

const LIFECYCLE_TYPES = [STREAM_DELETED, STREAM_TRUNCATED];

/** `count` events of type 'A' (data = their index from 1) appended to `streamId` one call each. */
export async function seed(store: EventStore, streamId: string, count: number, type = 'A'): Promise<number[]> {
  const positions: number[] = [];
  for (let i = 1; i <= count; i++) positions.push((await store.append(streamId, [{ type, data: i }])).position);
  return positions;
}

export const versions = async (store: EventStore, streamId: string): Promise<number[]> =>
  (await collect(store.readStream(streamId))).map((e) => e.streamVersion);

export const lifecycleEvents = async (store: EventStore, streamId?: string): Promise<Recorded[]> =>
  (await collect(store.readAll({ types: LIFECYCLE_TYPES }))).filter((e) => streamId === undefined || e.streamId === streamId);

/** deleteStream and truncateStream: what a stream reads like afterwards, and what they refuse. */
export function lifecycleTests(ctx: SuiteContext): void {
  const it = ctx.it;
  const hooks = ctx.harness.lifecycle;

  describe('deleteStream', () => {
    it('a soft-deleted stream reads as absent, leaves readAll at once, and an append starts it again at 1', async () => {
      const store = await ctx.store();
      await seed(store, 'x', 3);
      const [other] = await seed(store, 'y', 1);
      const head = await store.headPosition();
      const { position } = await store.deleteStream('x');
      assert.ok(position > head, `the lifecycle event takes a fresh position (${position} > ${head})`);
      assert.equal(await store.headPosition(), position);
      assert.deepEqual(await versions(store, 'x'), []);
      assert.deepEqual(await collect(store.readStream('x', { direction: 'backward' })), []);
      assert.equal(await store.streamVersion('x'), 0);
      assert.deepEqual((await collect(store.readAll())).map((e) => e.position), [other]);
      const again = await store.append('x', [{ type: 'A', data: 'again' }], { expectedVersion: 'no_stream' });
      assert.equal(again.nextExpectedVersion, 1);
      assert.ok(again.position > position);
      assert.deepEqual((await collect(store.readStream('x'))).map((e) => [e.streamVersion, e.data]), [[1, 'again']]);
    });

    it('a hard delete reads the same; soft deletes keep the rows in deleted_events, a hard one removes them with the earlier ones', async () => {
      const store = await ctx.store();
      await seed(store, 'x', 2);
      await store.deleteStream('x');
      if (hooks) assert.deepEqual(await hooks.deletedVersions(store, 'x'), [1, 2], 'the soft delete kept the rows');
      await seed(store, 'x', 3);
      await store.deleteStream('x', { hard: true });
      assert.equal(await store.streamVersion('x'), 0);
      assert.deepEqual(await versions(store, 'x'), []);
      assert.deepEqual(await collect(store.readAll()), []);
      if (hooks) assert.deepEqual(await hooks.deletedVersions(store, 'x'), [], 'the hard delete removed every row of the stream');
      const [deleted, hard] = await lifecycleEvents(store, 'x');
      assert.deepEqual(deleted?.data, { version: 2, hard: false, appends: 'restart' });
      assert.deepEqual(hard?.data, { version: 3, hard: true, appends: 'restart' });
      assert.deepEqual([deleted?.streamVersion, hard?.streamVersion], [-1, -2], 'lifecycle events count down from -1');
    });

    it("appends: 'refuse' fails every later append with ESKIT_STREAM_DELETED and writes nothing", async () => {
      const store = await ctx.store();
      await seed(store, 'x', 2);
      await store.deleteStream('x', { appends: 'refuse' });
      const before = await snapshot(store, ['x', 'y']);
      for (const expectedVersion of ['any', 'no_stream', 0, 2] as const) {
        await expectCode(() => store.append('x', [{ type: 'A', data: 1 }], { expectedVersion }), ErrorCode.StreamDeleted);
      }
      await expectCode(() => store.append('x', [{ type: 'A', data: 1 }, { type: 'A', data: 2 }]), ErrorCode.StreamDeleted);
      await assertUnchanged(store, before, 'an append to a stream that refuses appends');
      // In one group of concurrent appends, only the deleted stream's append fails.
      const results = await Promise.allSettled([
        store.append('y', [{ type: 'A', data: 1 }]),
        store.append('x', [{ type: 'A', data: 1 }]),
        store.append('y', [{ type: 'A', data: 2 }, { type: 'A', data: 3 }]),
      ]);
      assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled']);
      assert.equal((results[1] as PromiseRejectedResult).reason.code, ErrorCode.StreamDeleted);
      assert.equal(await store.streamVersion('y'), 3);
      assert.equal(await store.streamVersion('x'), 0);
      await expectCode(() => store.deleteStream('x'), ErrorCode.StreamNotFound);
    });

    it("a stream restarted after a delete can later be deleted with 'refuse', and one deleted with 'restart' again takes appends", async () => {
      const store = await ctx.store();
      await seed(store, 'x', 1);
      await store.deleteStream('x', { appends: 'restart' });
      await seed(store, 'x', 1);
      await store.deleteStream('x', { appends: 'refuse', hard: true });
      await expectCode(() => store.append('x', [{ type: 'A', data: 1 }]), ErrorCode.StreamDeleted);
      await seed(store, 'z', 1);
      await store.deleteStream('z', { appends: 'refuse' });
      await expectCode(() => store.append('z', [{ type: 'A', data: 1 }]), ErrorCode.StreamDeleted);
    });

    it('honours expectedVersion, checked with the stream version as an append checks it', async () => {
      const store = await ctx.store();
      await seed(store, 'x', 3);
      const before = await snapshot(store, ['x']);
      for (const expectedVersion of [2, 4, 'no_stream'] as const) {
        const error = await expectCode(() => store.deleteStream('x', { expectedVersion }), ErrorCode.Concurrency);
        assert.equal((error as unknown as { actualVersion: number }).actualVersion, 3);
      }
      await expectCode(() => store.truncateStream('x', 2, { expectedVersion: 2 }), ErrorCode.Concurrency);
      await assertUnchanged(store, before, 'a delete or truncate refused for its expected version');
      await store.truncateStream('x', 2, { expectedVersion: 3 });
      await store.deleteStream('x', { expectedVersion: 'stream_exists' });
      await seed(store, 'y', 2);
      await store.deleteStream('y', { expectedVersion: 2 });
      assert.equal(await store.streamVersion('x'), 0);
      assert.equal(await store.streamVersion('y'), 0);
    });

    it('refuses an absent stream (ESKIT_STREAM_NOT_FOUND) and bad options (ESKIT_INVALID_ARGUMENT), writing nothing', async () => {
      const store = await ctx.store();
      await seed(store, 'x', 2);
      const before = await snapshot(store, ['x']);
      await expectCode(() => store.deleteStream('nope'), ErrorCode.StreamNotFound);
      await expectCode(() => store.truncateStream('nope', 2), ErrorCode.StreamNotFound);
      const bad: unknown[] = [{ hard: 'yes' }, { appends: 'never' }, { expectedVersion: -1 }, { expectedVersion: 1.5 }, null];
      for (const options of bad) {
        await expectCode(() => store.deleteStream('x', options as never), ErrorCode.InvalidArgument);
      }
      await expectCode(() => store.deleteStream('' as string), ErrorCode.InvalidArgument);
      for (const before of [0, 1, -2, 1.5, Number.NaN, '2']) {
        await expectCode(() => store.truncateStream('x', before as number), ErrorCode.InvalidArgument);
      }
      const beyond = await expectCode(() => store.truncateStream('x', 3), ErrorCode.InvalidArgument);
      assert.match(beyond.message, /version 2/);
      await expectCode(() => store.truncateStream('x', 2, { expectedVersion: 'later' as never }), ErrorCode.InvalidArgument);
      await assertUnchanged(store, before, 'a refused delete or truncate');
    });

    it('refuses appends of the reserved $stream. types', async () => {
      const store = await ctx.store();
      const before = await snapshot(store, ['x']);
      for (const type of [STREAM_DELETED, STREAM_TRUNCATED, '$stream.mine']) {
        const error = await expectCode(() => store.append('x', [{ type: 'A', data: 1 }, { type, data: {} }]), ErrorCode.InvalidArgument);
        assert.match(error.message, /\$stream\./);
      }
      await assertUnchanged(store, before, 'an append of a reserved type');
      await store.append('x', [{ type: '$streamish', data: 1 }, { type: 'stream.deleted', data: 1 }]);
    });

    it('removes the stream’s snapshots (and only its own); a truncate keeps them', async () => {
      if (!hooks) return;
      const store = await ctx.store();
      await seed(store, 'x', 3);
      await seed(store, 'y', 1);
      await hooks.writeSnapshot(store, 'x', 'one');
      await hooks.writeSnapshot(store, 'x', 'two');
      await hooks.writeSnapshot(store, 'y', 'one');
      await store.truncateStream('x', 2);
      assert.equal(await hooks.snapshotCount(store, 'x'), 2, 'a truncate keeps the snapshots');
      await store.deleteStream('x');
      assert.equal(await hooks.snapshotCount(store, 'x'), 0);
      assert.equal(await hooks.snapshotCount(store, 'y'), 1);
      await hooks.writeSnapshot(store, 'y', 'two');
      await store.deleteStream('y', { hard: true });
      assert.equal(await hooks.snapshotCount(store, 'y'), 0);
    });

    it('the id of a deleted event can be appended again (ids are unique among the events in the log)', async () => {
      const store = await ctx.store();
      const { events } = await store.append('x', [{ type: 'A', data: 1 }]);
      const id = (events[0] as Recorded).id;
      await store.deleteStream('x');
      const again = await store.append('x', [{ type: 'A', data: 2, id }]);
      assert.equal(again.events[0]?.id, id);
      await store.deleteStream('x', { hard: true });
      await store.append('w', [{ type: 'A', data: 3, id }]);
      await expectCode(() => store.append('v', [{ type: 'A', data: 4, id }]), ErrorCode.DuplicateEventId);
    });
  });

  describe('truncateStream', () => {
    it('removes the events before the version; versions stay, reads start there, appends go on', async () => {
      const store = await ctx.store({ pageSize: 2 });
      const positions = await seed(store, 'x', 5);
      await seed(store, 'y', 1);
      const { position } = await store.truncateStream('x', 3);
      assert.equal(await store.headPosition(), position);
      assert.equal(await store.streamVersion('x'), 5);
      assert.deepEqual(await versions(store, 'x'), [3, 4, 5]);
      assert.deepEqual((await collect(store.readStream('x', { fromVersion: 2 }))).map((e) => e.data), [3, 4, 5]);
      assert.deepEqual((await collect(store.readStream('x', { direction: 'backward' }))).map((e) => e.streamVersion), [5, 4, 3]);
      assert.deepEqual((await collect(store.readStream('x', { direction: 'backward', fromVersion: 2 }))).map((e) => e.streamVersion), []);
      const all = await collect(store.readAll());
      assert.deepEqual(all.filter((e) => e.streamId === 'x').map((e) => e.position), positions.slice(2));
      const next = await store.append('x', [{ type: 'A', data: 6 }], { expectedVersion: 5 });
      assert.equal(next.nextExpectedVersion, 6);
      assert.deepEqual(await versions(store, 'x'), [3, 4, 5, 6]);
      const [truncated] = await lifecycleEvents(store, 'x');
      assert.deepEqual([truncated?.type, truncated?.data, truncated?.streamVersion, truncated?.position], [STREAM_TRUNCATED, { before: 3, version: 5 }, -1, position]);
    });

    it('truncating at the stream version keeps the last event; a lower bound later removes nothing more', async () => {
      const store = await ctx.store();
      await seed(store, 'x', 4);
      await store.truncateStream('x', 4);
      assert.deepEqual(await versions(store, 'x'), [4]);
      await store.truncateStream('x', 2);
      assert.deepEqual(await versions(store, 'x'), [4]);
      await expectCode(() => store.truncateStream('x', 5), ErrorCode.InvalidArgument);
      assert.deepEqual((await lifecycleEvents(store, 'x')).map((e) => [e.streamVersion, e.data]), [
        [-1, { before: 4, version: 4 }],
        [-2, { before: 2, version: 4 }],
      ]);
      await store.deleteStream('x');
      assert.deepEqual(
        (await lifecycleEvents(store, 'x')).map((e) => e.streamVersion),
        [-1, -2, -3],
      );
      if (hooks) assert.deepEqual(await hooks.deletedVersions(store, 'x'), [4], 'truncated events are gone for good, not kept');
    });
  });
}
