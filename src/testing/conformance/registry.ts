import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { ErrorCode } from '../../core/errors.js';
import { EventRegistry } from '../../core/registry.js';
import type { EventDefinitions } from '../../core/registry.js';
import { assertUnchanged, collect, expectCode, snapshot } from './context.js';
import type { SuiteContext } from './context.js';

type CartEvent =
  | { type: 'ItemAdded'; data: { sku: string; quantity: number } }
  | { type: 'CartCleared'; data: null }
  | { type: 'Renamed'; data: { fullName: string } };

function validateItem(data: unknown): { sku: string; quantity: number } {
  const d = data as { sku?: unknown; quantity?: unknown } | null;
  if (typeof d !== 'object' || d === null || typeof d.sku !== 'string' || d.sku === '') throw new Error('sku must be a non-empty string');
  const quantity = d.quantity ?? 1;
  if (typeof quantity !== 'number' || !Number.isInteger(quantity) || quantity < 1) throw new Error('quantity must be a positive integer');
  // Normalises, as a schema library would: what is stored is the validated value.
  return { sku: d.sku.toUpperCase(), quantity };
}

const cartDefinitions: EventDefinitions<CartEvent> = {
  ItemAdded: { validate: validateItem },
  CartCleared: {},
  Renamed: {
    // Version 1 stored { name }; metadata says which version wrote the event.
    upcast: (data, metadata) => (metadata.schema === 1 ? { fullName: (data as { name: string }).name } : data),
    validate: (data) => {
      const d = data as { fullName?: unknown };
      if (typeof d.fullName !== 'string') throw new Error('fullName must be a string');
      return { fullName: d.fullName };
    },
  },
};

const cartRegistry = (): EventRegistry<CartEvent> => new EventRegistry<CartEvent>(cartDefinitions);

/**
 * Today's registry, as seen by events an older version of the code wrote: that code accepted shapes and
 * types the current definitions no longer do (here: any shape, and the since removed type 'Retired').
 * Writing through it stands in for "the data was stored long ago"; reading applies today's rules.
 */
class OlderWriterRegistry extends EventRegistry<CartEvent> {
  override encode(type: string, data: unknown): unknown {
    return type === 'Retired' || type === 'Renamed' ? data : super.encode(type, data);
  }
}

const olderWriterRegistry = (): OlderWriterRegistry => new OlderWriterRegistry(cartDefinitions);

export function registryTests(ctx: SuiteContext): void {
  const it = ctx.it;
  describe('registry', () => {
    it('an unknown type on append is refused and nothing of the batch is written', async () => {
      const store = await ctx.store({ registry: cartRegistry() });
      await store.append('cart', [{ type: 'ItemAdded', data: { sku: 'a', quantity: 1 } }]);
      const before = await snapshot(store, ['cart', 'fresh']);
      for (const stream of ['cart', 'fresh']) {
        const error = await expectCode(
          () =>
            store.append(stream, [
              { type: 'ItemAdded', data: { sku: 'b', quantity: 2 } },
              { type: 'Mystery', data: {} } as never,
            ]),
          ErrorCode.UnknownEventType,
        );
        assert.equal((error as unknown as { eventType?: unknown }).eventType, 'Mystery');
        await assertUnchanged(store, before, `an unknown type on ${stream}`);
      }
    });

    it('validate failing on append is ESKIT_EVENT_VALIDATION and nothing is written', async () => {
      const store = await ctx.store({ registry: cartRegistry() });
      await store.append('cart', [{ type: 'CartCleared', data: null }]);
      const before = await snapshot(store, ['cart']);
      const error = await expectCode(
        () =>
          store.append('cart', [
            { type: 'ItemAdded', data: { sku: 'ok', quantity: 1 } },
            { type: 'ItemAdded', data: { sku: 'bad', quantity: 0 } },
          ]),
        ErrorCode.EventValidation,
      );
      assert.match(error.message, /quantity must be a positive integer/);
      await assertUnchanged(store, before, 'a batch with an invalid event');
    });

    it('what validate returns is what is stored, returned and read', async () => {
      const store = await ctx.store({ registry: cartRegistry() });
      const result = await store.append('cart', [{ type: 'ItemAdded', data: { sku: 'abc' } as { sku: string; quantity: number } }]);
      assert.deepEqual(result.events[0]!.data, { sku: 'ABC', quantity: 1 });
      assert.deepEqual(await collect(store.readStream('cart')), result.events);
      assert.deepEqual((await collect(store.readAll({ raw: true }))).map((e) => e.data), [{ sku: 'ABC', quantity: 1 }]);
    });

    it('upcast runs on read (with the metadata), then validate; raw reads get the stored data', async () => {
      const store = await ctx.store({ registry: olderWriterRegistry() });
      await store.append('person', [
        { type: 'Renamed', data: { name: 'Ada Lovelace' } as unknown as { fullName: string }, metadata: { schema: 1 } },
        { type: 'Renamed', data: { fullName: 'Grace Hopper' }, metadata: { schema: 2 } },
      ]);
      const decoded = await collect(store.readStream('person'));
      assert.deepEqual(decoded.map((e) => e.data), [{ fullName: 'Ada Lovelace' }, { fullName: 'Grace Hopper' }]);
      assert.deepEqual((await collect(store.readAll())).map((e) => e.data), [{ fullName: 'Ada Lovelace' }, { fullName: 'Grace Hopper' }]);
      const raw = await collect(store.readStream('person', { raw: true }));
      assert.deepEqual(raw.map((e) => e.data), [{ name: 'Ada Lovelace' }, { fullName: 'Grace Hopper' }]);
    });

    it('validate failing on read is ESKIT_EVENT_VALIDATION naming the position, after the events before it', async () => {
      const store = await ctx.store({ registry: cartRegistry() });
      await store.append('person', [{ type: 'Renamed', data: { fullName: 'ok' } }]);
      // Marked as schema 1 but without `name`: the upcast yields no fullName, which validate refuses.
      const bad = await store.append('person', [{ type: 'Renamed', data: { fullName: 'x' }, metadata: { schema: 1 } }]);
      const seen: unknown[] = [];
      const error = await expectCode(async () => {
        for await (const e of store.readAll()) seen.push(e.data);
      }, ErrorCode.EventValidation);
      assert.deepEqual(seen, [{ fullName: 'ok' }]);
      assert.match(error.message, new RegExp(`position ${bad.position}\\b`));
    });

    it('an unknown type on read is ESKIT_UNKNOWN_EVENT_TYPE unless { raw: true }', async () => {
      const store = await ctx.store({ registry: olderWriterRegistry() });
      const first = await store.append('cart', [{ type: 'CartCleared', data: null }]);
      const retired = await store.append('cart', [{ type: 'Retired', data: { old: true } } as never]);
      await store.append('cart', [{ type: 'CartCleared', data: null }]);
      for (const read of [() => store.readAll(), () => store.readStream('cart')]) {
        const seen: number[] = [];
        const error = await expectCode(async () => {
          for await (const e of read()) seen.push(e.position);
        }, ErrorCode.UnknownEventType);
        assert.deepEqual(seen, [first.position], 'events before the unknown one are delivered');
        assert.equal((error as unknown as { position?: unknown }).position, retired.position);
        assert.equal((error as unknown as { eventType?: unknown }).eventType, 'Retired');
      }
      const raw = await collect(store.readAll({ raw: true }));
      assert.deepEqual(raw.map((e) => e.type), ['CartCleared', 'Retired', 'CartCleared']);
      assert.deepEqual(raw[1]!.data, { old: true });
      assert.equal((await collect(store.readStream('cart', { raw: true }))).length, 3);
      // A type filter that leaves the unknown type out reads fine.
      assert.equal((await collect(store.readAll({ types: ['CartCleared'] }))).length, 2);
    });
  });
}
