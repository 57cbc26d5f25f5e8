import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { ErrorCode } from '../../core/errors.js';
import type { Recorded } from '../../core/event.js';
import { STREAM_DELETED, STREAM_TRUNCATED } from '../../core/lifecycle.js';
import type { StreamLifecycleEvent } from '../../core/lifecycle.js';
import { EventRegistry } from '../../core/registry.js';
import type { EventStore } from '../../core/store.js';
import { assertStrictlyIncreasing, collect, expectCode } from './context.js';
import type { SuiteContext } from './context.js';
import { lifecycleEvents, seed, versions } from './lifecycle.js';

type Counted = { type: 'A'; data: number } | { type: 'B'; data: number };

/**
 * What readers of the log see of deleted and truncated streams: readAll, positions, races. (Subscriptions
 * read through readAll; test/subscription/lifecycle.test.ts runs one behind a delete on every adapter.)
 */
export function lifecycleReaderTests(ctx: SuiteContext): void {
  const it = ctx.it;
  const hooks = ctx.harness.lifecycle;

  describe('stream lifecycle: readers', () => {
    it('lifecycle events reach readAll only when its types name them, or a raw read without types', async () => {
      const store = await ctx.store();
      await seed(store, 'cart-1', 2);
      await seed(store, 'cart-2', 1);
      const { position: deleted } = await store.deleteStream('cart-1');
      const { position: truncated } = await seed(store, 'cart-2', 1).then(() => store.truncateStream('cart-2', 2));
      const typed = await collect(store.readAll());
      assert.ok(typed.every((e) => !e.type.startsWith('$stream.')), 'a typed read without types never meets a lifecycle event');
      assert.deepEqual(typed.map((e) => [e.streamId, e.streamVersion]), [['cart-2', 2]]);
      const raw = await collect(store.readAll({ raw: true }));
      assert.deepEqual(raw.filter((e) => e.type.startsWith('$stream.')).map((e) => e.position), [deleted, truncated]);
      const named = await collect(store.readAll({ types: [STREAM_DELETED] }));
      assert.deepEqual(named.map((e) => [e.type, e.streamId, e.streamVersion, e.position]), [[STREAM_DELETED, 'cart-1', -1, deleted]]);
      assert.deepEqual(named[0]?.data, { version: 2, hard: false, appends: 'restart' });
      const mixed = await collect(store.readAll({ types: ['A', STREAM_TRUNCATED] }));
      assert.deepEqual(mixed.map((e) => e.type), ['A', STREAM_TRUNCATED]);
      const rawNamed = await collect(store.readAll({ types: [STREAM_TRUNCATED], raw: true }));
      assert.deepEqual(rawNamed.map((e) => e.position), [truncated]);
      // The category of the stream they concern: a category reader that names them gets them.
      const category = await collect(store.readAll({ category: 'cart', types: [STREAM_DELETED, STREAM_TRUNCATED, 'A'] }));
      assert.deepEqual(category.map((e) => e.position), [deleted, (typed[0] as Recorded).position, truncated]);
      assert.deepEqual(await collect(store.readAll({ category: 'cart' })), typed);
      // Never in a stream read.
      assert.deepEqual(await versions(store, 'cart-1'), []);
      assert.deepEqual((await collect(store.readStream('cart-2', { raw: true }))).map((e) => e.streamVersion), [2]);
    });

    it('limit counts the events kept, across pages of skipped lifecycle events', async () => {
      const store = await ctx.store({ pageSize: 2 });
      const kept: number[] = [];
      for (let i = 0; i < 4; i++) {
        kept.push(...(await seed(store, `keep-${i}`, 1)));
        for (let j = 0; j < 3; j++) {
          await seed(store, `gone-${i}-${j}`, 1);
          await store.deleteStream(`gone-${i}-${j}`);
        }
      }
      assert.deepEqual((await collect(store.readAll())).map((e) => e.position), kept);
      assert.deepEqual((await collect(store.readAll({ limit: 3 }))).map((e) => e.position), kept.slice(0, 3));
      assert.deepEqual((await collect(store.readAll({ limit: 1, after: kept[0] as number }))).map((e) => e.position), kept.slice(1, 2));
      assert.equal((await collect(store.readAll({ types: [STREAM_DELETED], limit: 5 }))).length, 5);
      assert.equal((await collect(store.readAll({ raw: true }))).length, 4 + 12);
    });

    it('positions are never reused, also after deleting the newest events; reads after removed positions go on', async () => {
      const store = await ctx.store();
      const [a1] = await seed(store, 'a', 1);
      const bPositions = await seed(store, 'b', 3);
      const head = await store.headPosition();
      assert.equal(head, bPositions[2]);
      const { position: deleted } = await store.deleteStream('b', { hard: true });
      assert.ok(deleted > head);
      assert.equal(await store.headPosition(), deleted);
      const next = await store.append('b', [{ type: 'A', data: 'new' }]);
      assert.ok(next.position > deleted, 'an append after the delete takes a position above every one handed out');
      // A checkpoint at a removed position: the read goes on after it.
      for (const checkpoint of bPositions) {
        assert.deepEqual((await collect(store.readAll({ after: checkpoint }))).map((e) => e.position), [next.position]);
      }
      assert.deepEqual((await collect(store.readAll({ after: 0 }))).map((e) => e.position), [a1, next.position]);
      assertStrictlyIncreasing((await collect(store.readAll({ raw: true }))).map((e) => e.position), 'positions');
      await seed(store, 'b', 1);
      const { position: truncated } = await store.truncateStream('b', 2);
      assert.equal(await store.headPosition(), truncated);
    });

    it('a store with a registry reads past lifecycle events without decoding them, and passes them through when named', async () => {
      const registry = new EventRegistry<Counted>({ A: {}, B: {} });
      const store = await ctx.store<Counted>({ registry });
      await store.append('x', [{ type: 'A', data: 1 }]);
      await store.append('y', [{ type: 'B', data: 2 }]);
      await store.deleteStream('x');
      assert.deepEqual((await collect(store.readAll())).map((e) => e.type), ['B']);
      await expectCode(() => store.append('x', [{ type: STREAM_DELETED, data: 1 } as never]), ErrorCode.InvalidArgument);
      const lifecycle = store as unknown as EventStore<Counted | StreamLifecycleEvent>;
      const named = await collect(lifecycle.readAll({ types: [STREAM_DELETED] }));
      assert.deepEqual(named.map((e) => e.data), [{ version: 1, hard: false, appends: 'restart' }]);
    });

    it('appends racing a delete: every event is either deleted or in the restarted stream, none lost or half-written', async () => {
      const store = await ctx.store();
      const writer = ctx.harness.openAnother ? await ctx.another(store) : store;
      await seed(store, 'race', 2);
      const appends = Array.from({ length: 20 }, (_, i) => writer.append('race', [{ type: 'A', data: i }, { type: 'A', data: i }]));
      const deletion = store.deleteStream('race');
      const results = await Promise.all(appends);
      const { position: deleted } = await deletion;
      const [event] = await lifecycleEvents(store, 'race');
      const removed = (event?.data as { version: number }).version;
      const live = await collect(store.readStream('race'));
      const survivors = results.filter((r) => r.position > deleted);
      // Events appended before the delete are gone from reads (and kept aside); those after restart the stream at 1.
      assert.equal(live.length, survivors.length * 2);
      assert.deepEqual(live.map((e) => e.streamVersion), Array.from({ length: live.length }, (_, i) => i + 1));
      assert.ok(live.every((e) => e.position > deleted));
      assert.equal(removed, 2 + (results.length - survivors.length) * 2);
      if (hooks) assert.equal((await hooks.deletedVersions(store, 'race')).length, removed);
      assert.equal(await store.streamVersion('race'), live.length);
      for (const result of results) {
        // Each append's two events are on the same side of the delete.
        assert.equal(result.events[0]!.position < deleted, result.events[1]!.position < deleted);
      }
    });
  });
}
