import assert from 'node:assert/strict';
import { describe } from 'node:test';
import type { EventStore } from '../../core/store.js';
import { assertStrictlyIncreasing, collect } from './context.js';
import type { SuiteContext } from './context.js';

const PAGE = 3;
const range = (from: number, to: number): number[] =>
  from <= to ? Array.from({ length: to - from + 1 }, (_, i) => from + i) : Array.from({ length: from - to + 1 }, (_, i) => from - i);

/**
 * Stream 'a' gets versions 1..10 (data = version), interleaved with events of streams 'b' and 'a2', so
 * per-stream reads must skip other streams' positions. Returns the positions of 'a' by version.
 */
async function seedInterleaved(store: EventStore): Promise<number[]> {
  const positions: number[] = [];
  let next = 1;
  for (const size of [1, 3, 2, 4]) {
    const result = await store.append('a', range(next, next + size - 1).map((v) => ({ type: 'A', data: v })));
    positions.push(...result.events.map((e) => e.position));
    next += size;
    await store.append('b', [{ type: 'B', data: next }]);
    await store.append('a2', [{ type: 'A', data: -next }]);
  }
  return positions;
}

const versionsOf = async (iterable: AsyncIterable<{ streamVersion: number; data: unknown }>): Promise<number[]> => {
  const events = await collect(iterable);
  for (const e of events) assert.equal(e.data, e.streamVersion, 'data matches the version it was written at');
  return events.map((e) => e.streamVersion);
};

export function readTests(ctx: SuiteContext): void {
  const it = ctx.it;
  describe('readStream', () => {
    it('reads one stream forward and backward across pages', async () => {
      const store = await ctx.store({ pageSize: PAGE });
      const positions = await seedInterleaved(store);
      const forward = await collect(store.readStream('a'));
      assert.deepEqual(forward.map((e) => e.streamVersion), range(1, 10));
      assert.deepEqual(forward.map((e) => e.data), range(1, 10));
      assert.deepEqual(forward.map((e) => e.position), positions);
      assert.ok(forward.every((e) => e.streamId === 'a' && e.type === 'A'));
      assert.deepEqual(await versionsOf(store.readStream('a', { direction: 'forward' })), range(1, 10));
      const backward = await collect(store.readStream('a', { direction: 'backward' }));
      assert.deepEqual(backward, [...forward].reverse());
    });

    it('fromVersion is inclusive in both directions', async () => {
      const store = await ctx.store({ pageSize: PAGE });
      await seedInterleaved(store);
      assert.deepEqual(await versionsOf(store.readStream('a', { fromVersion: 4 })), range(4, 10));
      assert.deepEqual(await versionsOf(store.readStream('a', { fromVersion: 10 })), [10]);
      assert.deepEqual(await versionsOf(store.readStream('a', { fromVersion: 11 })), []);
      assert.deepEqual(await versionsOf(store.readStream('a', { fromVersion: 7, direction: 'backward' })), range(7, 1));
      assert.deepEqual(await versionsOf(store.readStream('a', { fromVersion: 1, direction: 'backward' })), [1]);
      // Backward from beyond the end starts at the last event.
      assert.deepEqual(await versionsOf(store.readStream('a', { fromVersion: 50, direction: 'backward' })), range(10, 1));
    });

    it('limit stops after that many events, at and across page boundaries', async () => {
      const store = await ctx.store({ pageSize: PAGE });
      await seedInterleaved(store);
      for (const limit of [1, 2, 3, 4, 6, 7, 10, 11, 100]) {
        assert.deepEqual(await versionsOf(store.readStream('a', { limit })), range(1, Math.min(limit, 10)), `forward limit ${limit}`);
        assert.deepEqual(
          await versionsOf(store.readStream('a', { limit, direction: 'backward' })),
          range(10, Math.max(1, 11 - limit)),
          `backward limit ${limit}`,
        );
      }
      assert.deepEqual(await versionsOf(store.readStream('a', { fromVersion: 3, limit: 5 })), range(3, 7));
      assert.deepEqual(await versionsOf(store.readStream('a', { fromVersion: 8, limit: 5, direction: 'backward' })), range(8, 4));
      assert.deepEqual(await versionsOf(store.readStream('a', { fromVersion: 9, limit: 5 })), [9, 10]);
    });

    it('reads streams whose length is an exact multiple of the page size', async () => {
      const store = await ctx.store({ pageSize: PAGE });
      for (const length of [PAGE, 2 * PAGE]) {
        await store.append(`s${length}`, range(1, length).map((v) => ({ type: 'A', data: v })));
        assert.deepEqual(await versionsOf(store.readStream(`s${length}`)), range(1, length));
        assert.deepEqual(await versionsOf(store.readStream(`s${length}`, { direction: 'backward' })), range(length, 1));
        assert.deepEqual(await versionsOf(store.readStream(`s${length}`, { limit: PAGE })), range(1, PAGE));
      }
    });

    it('an unknown stream reads as empty with version 0', async () => {
      const store = await ctx.store();
      await store.append('a', [{ type: 'A', data: 1 }]);
      assert.deepEqual(await collect(store.readStream('nope')), []);
      assert.deepEqual(await collect(store.readStream('nope', { direction: 'backward' })), []);
      assert.equal(await store.streamVersion('nope'), 0);
    });

    it('stream ids are exact: case, prefixes, whitespace and LIKE wildcards do not collide', async () => {
      const store = await ctx.store();
      const ids = ['order-1', 'Order-1', 'order-10', 'order-1 ', ' order-1', 'order-%', 'order-_', 'order\\1', "o'rder", 'заказ-1', '注文-1', '🛒-1'];
      for (const [i, id] of ids.entries()) await store.append(id, range(1, i + 1).map(() => ({ type: 'A', data: id })));
      for (const [i, id] of ids.entries()) {
        const events = await collect(store.readStream(id));
        assert.equal(events.length, i + 1, `stream ${JSON.stringify(id)}`);
        assert.ok(events.every((e) => e.streamId === id && e.data === id), `stream ${JSON.stringify(id)} holds only its own events`);
        assert.equal(await store.streamVersion(id), i + 1);
      }
      assert.equal(await store.streamVersion('order-'), 0);
    });

    it('versions of a stream are strictly increasing in position', async () => {
      const store = await ctx.store({ pageSize: PAGE });
      await seedInterleaved(store);
      assertStrictlyIncreasing((await collect(store.readStream('a'))).map((e) => e.position), 'positions of a stream');
    });
  });

  describe('readAll', () => {
    it('returns every event once in append order with strictly increasing positions, across pages', async () => {
      const store = await ctx.store({ pageSize: PAGE });
      const appended: string[] = [];
      for (let i = 0; i < 8; i++) {
        const result = await store.append(`s${i % 3}`, range(1, (i % 3) + 1).map((n) => ({ type: 'T', data: { i, n } })));
        appended.push(...result.events.map((e) => e.id));
      }
      const all = await collect(store.readAll());
      assert.deepEqual(all.map((e) => e.id), appended);
      assertStrictlyIncreasing(all.map((e) => e.position), 'global positions');
      assert.equal(await store.headPosition(), all[all.length - 1]!.position);
      const streams = new Set(all.map((e) => e.streamId));
      for (const s of streams) {
        assert.deepEqual(
          all.filter((e) => e.streamId === s),
          await collect(store.readStream(s)),
          `readAll and readStream agree on ${s}`,
        );
      }
    });

    it('after is exclusive; limit stops; both combine across pages', async () => {
      const store = await ctx.store({ pageSize: PAGE });
      await seedInterleaved(store);
      const all = await collect(store.readAll());
      assert.equal(all.length, 18);
      const positions = all.map((e) => e.position);
      const head = await store.headPosition();
      assert.equal(head, positions[positions.length - 1]);
      for (const index of [0, 1, 2, 3, 5, 9, 16, 17]) {
        const after = positions[index]!;
        assert.deepEqual((await collect(store.readAll({ after }))).map((e) => e.position), positions.slice(index + 1), `after ${after}`);
      }
      assert.deepEqual(await collect(store.readAll({ after: 0 })), all);
      assert.deepEqual(await collect(store.readAll({ after: head })), []);
      assert.deepEqual(await collect(store.readAll({ after: head + 1000 })), []);
      for (const limit of [1, 3, 4, 6, 7, 18, 19]) {
        assert.deepEqual((await collect(store.readAll({ limit }))).map((e) => e.position), positions.slice(0, limit), `limit ${limit}`);
      }
      assert.deepEqual((await collect(store.readAll({ after: positions[4]!, limit: 5 }))).map((e) => e.position), positions.slice(5, 10));
      assert.deepEqual((await collect(store.readAll({ after: positions[15]!, limit: 5 }))).map((e) => e.position), positions.slice(16));
    });

    it('types filters by exact type name, with after and limit, across pages', async () => {
      const store = await ctx.store({ pageSize: PAGE });
      const types = ['ItemAdded', 'Item', 'itemadded', 'ItemAddedV2', 'Removed'];
      for (let i = 0; i < 25; i++) await store.append(`s${i % 4}`, [{ type: types[i % types.length]!, data: i }]);
      const all = await collect(store.readAll());
      const only = (names: string[]) => all.filter((e) => names.includes(e.type));
      assert.deepEqual(await collect(store.readAll({ types: ['ItemAdded'] })), only(['ItemAdded']));
      assert.equal(only(['ItemAdded']).length, 5);
      assert.deepEqual(await collect(store.readAll({ types: ['Item', 'Removed'] })), only(['Item', 'Removed']));
      const sparse = only(['Removed']);
      assert.deepEqual(await collect(store.readAll({ types: ['Removed'], after: sparse[1]!.position })), sparse.slice(2));
      assert.deepEqual(await collect(store.readAll({ types: ['Removed'], after: sparse[1]!.position - 1, limit: 2 })), sparse.slice(1, 3));
      assert.deepEqual(await collect(store.readAll({ types: ['Removed', 'Item'], limit: 4 })), only(['Item', 'Removed']).slice(0, 4));
      assert.deepEqual(await collect(store.readAll({ types: ['Nope'] })), []);
      assert.deepEqual(await collect(store.readAll({ types: [] })), []);
    });

    it('streamVersion and headPosition are 0 on an empty store and follow appends', async () => {
      const store = await ctx.store();
      assert.equal(await store.headPosition(), 0);
      assert.equal(await store.streamVersion('s'), 0);
      assert.deepEqual(await collect(store.readAll()), []);
      const first = await store.append('s', [{ type: 'A', data: 1 }, { type: 'A', data: 2 }]);
      assert.equal(await store.headPosition(), first.position);
      assert.equal(await store.streamVersion('s'), 2);
      assert.equal(await store.streamVersion('t'), 0);
      const second = await store.append('t', [{ type: 'A', data: 1 }]);
      assert.ok(second.position > first.position);
      assert.equal(await store.headPosition(), second.position);
      assert.equal(await store.streamVersion('s'), 2);
      assert.equal(await store.streamVersion('t'), 1);
    });
  });
}
