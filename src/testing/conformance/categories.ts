import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { ErrorCode } from '../../core/errors.js';
import { categoryOf } from '../../core/store.js';
import type { EventStore } from '../../core/store.js';
import { collect, expectCode } from './context.js';
import type { SuiteContext } from './context.js';

const PAGE = 3;

/**
 * Streams whose ids trip naive prefix matching: a longer category sharing the prefix ('orders'), an id
 * without '-' (its own category), LIKE wildcards ('_', '%'), several dashes, and non-ASCII text.
 */
const STREAMS = ['order-1', 'orders-1', 'order-2', 'order', 'orderx-1', 'shopping-cart-1', 'a_b-1', 'axb-1', 'a%b-1', 'aXb-2', 'café-1', 'cafe-1', 'order-3'];

async function seed(store: EventStore, rounds = 2): Promise<void> {
  for (let round = 0; round < rounds; round++) {
    for (const streamId of STREAMS) await store.append(streamId, [{ type: round % 2 === 0 ? 'A' : 'B', data: { streamId, round } }]);
  }
}

async function expectedOf(store: EventStore, keep: (streamId: string, type: string) => boolean): Promise<number[]> {
  return (await collect(store.readAll())).filter((e) => keep(e.streamId, e.type)).map((e) => e.position);
}

export function categoryTests(ctx: SuiteContext): void {
  const it = ctx.it;
  describe('categories', () => {
    it('readAll({ category }) returns exactly the streams whose id up to the first "-" is the category, in position order, across pages', async () => {
      const store = await ctx.store({ pageSize: PAGE });
      await seed(store);
      for (const category of ['order', 'orders', 'orderx', 'shopping', 'a_b', 'axb', 'a%b', 'aXb', 'café', 'cafe', 'missing']) {
        const expected = await expectedOf(store, (streamId) => categoryOf(streamId) === category);
        const read = await collect(store.readAll({ category }));
        assert.deepEqual(read.map((e) => e.position), expected, `category ${category}`);
        assert.ok(read.every((e) => categoryOf(e.streamId) === category), `only ${category}`);
      }
      // 'order' is its own category: the id without a dash is the whole category.
      const order = await collect(store.readAll({ category: 'order' }));
      assert.deepEqual([...new Set(order.map((e) => e.streamId))].sort(), ['order', 'order-1', 'order-2', 'order-3']);
    });

    it('resumes after any position and honours limit, as a subscriber paging by position does', async () => {
      const store = await ctx.store({ pageSize: PAGE });
      await seed(store, 3);
      const all = await collect(store.readAll({ category: 'order' }));
      for (const [index, event] of all.entries()) {
        const rest = await collect(store.readAll({ category: 'order', after: event.position }));
        assert.deepEqual(rest.map((e) => e.position), all.slice(index + 1).map((e) => e.position), `after ${event.position}`);
        // An `after` between two events of the category (an event of another category) skips nothing either.
        const between = await collect(store.readAll({ category: 'order', after: event.position + 1 }));
        assert.deepEqual(between.map((e) => e.position), all.filter((e) => e.position > event.position + 1).map((e) => e.position));
      }
      for (const limit of [1, 2, PAGE, PAGE + 1, 100]) {
        assert.deepEqual((await collect(store.readAll({ category: 'order', limit }))).map((e) => e.position), all.slice(0, limit).map((e) => e.position), `limit ${limit}`);
      }
    });

    it('with types, both filters must match', async () => {
      const store = await ctx.store({ pageSize: PAGE });
      await seed(store, 4);
      for (const types of [['A'], ['B'], ['A', 'B'], ['C']]) {
        const expected = await expectedOf(store, (streamId, type) => categoryOf(streamId) === 'order' && types.includes(type));
        assert.deepEqual((await collect(store.readAll({ category: 'order', types }))).map((e) => e.position), expected, `types ${types.join(',')}`);
      }
      assert.deepEqual(await collect(store.readAll({ category: 'order', types: [] })), []);
      const raw = await collect(store.readAll({ category: 'shopping', raw: true }));
      assert.deepEqual([...new Set(raw.map((e) => e.streamId))], ['shopping-cart-1']);
    });

    it('sees appends made between pages, none skipped, none twice', async () => {
      const store = await ctx.store({ pageSize: PAGE });
      const seen: number[] = [];
      let after = 0;
      for (let round = 0; round < 6; round++) {
        await store.append(`order-${round}`, [{ type: 'A', data: round }, { type: 'A', data: round }]);
        await store.append(`other-${round}`, [{ type: 'A', data: round }]);
        for await (const event of store.readAll({ category: 'order', after, limit: 1 + (round % 3) })) {
          seen.push(event.position);
          after = event.position;
        }
      }
      for await (const event of store.readAll({ category: 'order', after })) seen.push(event.position);
      assert.deepEqual(seen, await expectedOf(store, (streamId) => streamId.startsWith('order-')));
    });

    it('refuses a category that is not a stream-id prefix, with a message that says what one is', async () => {
      const store = await ctx.store();
      await store.append('order-1', [{ type: 'A', data: 1 }]);
      for (const category of ['', 'order-1', '-', 42 as unknown as string]) {
        const error = await expectCode(() => collect(store.readAll({ category })), ErrorCode.InvalidArgument);
        assert.match(error.message, /category/);
      }
    });
  });
}
