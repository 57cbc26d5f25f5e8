import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { ErrorCode } from '../../core/errors.js';
import type { Metadata, Recorded } from '../../core/event.js';
import { EventRegistry, SCHEMA_VERSION_KEY, partId } from '../../core/registry.js';
import type { EventDefinitions, EventRegistryOptions } from '../../core/registry.js';
import type { EventStore } from '../../core/store.js';
import { assertUnchanged, collect, expectCode, snapshot } from './context.js';
import type { SuiteContext } from './context.js';

// A shop whose events changed over the years: OrderCreated was renamed OrderPlaced; CheckedOut (an
// order and its payment in one event) was split; ItemAdded went v1 { sku } → v2 { sku, quantity } →
// v3 { product: { sku }, quantity }.
type ItemAdded = { product: { sku: string }; quantity: number };
type ShopEvent =
  | { type: 'ItemAdded'; data: ItemAdded }
  | { type: 'OrderPlaced'; data: { orderId: string } }
  | { type: 'PaymentTaken'; data: { orderId: string; amount: number } };

const definitions: EventDefinitions<ShopEvent> = {
  ItemAdded: {
    version: 3,
    upcasters: [
      { from: 1, up: (data) => ({ ...(data as object), quantity: 1 }) },
      { from: 2, up: (data) => ({ product: { sku: (data as { sku: string }).sku }, quantity: (data as { quantity: number }).quantity }) },
    ],
    validate: (data) => {
      const d = data as Partial<ItemAdded>;
      if (typeof d.product?.sku !== 'string' || typeof d.quantity !== 'number') throw new Error('product.sku and quantity are required');
      return d as ItemAdded;
    },
  },
  OrderPlaced: { renamedFrom: ['OrderCreated'] },
  PaymentTaken: {},
};

const splits: EventRegistryOptions<ShopEvent>['splits'] = {
  CheckedOut: {
    into: ['OrderPlaced', 'PaymentTaken'],
    split: (data) => {
      const { orderId, amount } = data as { orderId: string; amount?: number };
      const placed = { type: 'OrderPlaced' as const, data: { orderId } };
      return amount === undefined ? [placed] : [placed, { type: 'PaymentTaken' as const, data: { orderId, amount } }];
    },
  },
};

const shopRegistry = (): EventRegistry<ShopEvent> => new EventRegistry<ShopEvent>(definitions, { splits });

/**
 * Today's registry, writing as older code did: retired types and old shapes pass, and a
 * `$schemaVersion` is only what the caller gives (so a test can store "v2 events"). Reads use today's rules.
 */
class OldCodeRegistry extends EventRegistry<ShopEvent> {
  override encode(type: string, data: unknown): unknown {
    return data;
  }
  override stampVersion(): void {
    // Older code wrote no version (version 1), or the one the caller's metadata gives.
  }
}

const oldCode = (): OldCodeRegistry => new OldCodeRegistry(definitions, { splits });

/** Appends as old code did (any type, any data). */
function appendOld(store: EventStore<ShopEvent>, stream: string, events: { type: string; data: unknown; metadata?: Metadata }[]) {
  return store.append(stream, events as never);
}

const typesOf = (events: readonly Recorded[]): string[] => events.map((e) => e.type);

export function evolutionTests(ctx: SuiteContext): void {
  const it = ctx.it;
  describe('schema evolution', () => {
    it('renames: stored events of an old name are read as the new type, by every read; raw reads show the stored name', async () => {
      const store = await ctx.store({ registry: oldCode() });
      await appendOld(store, 'order-1', [{ type: 'OrderCreated', data: { orderId: 'o1' } }]);
      await store.append('order-1', [{ type: 'OrderPlaced', data: { orderId: 'o1b' } }]);
      assert.deepEqual(typesOf(await collect(store.readStream('order-1'))), ['OrderPlaced', 'OrderPlaced']);
      assert.deepEqual(typesOf(await collect(store.readStream('order-1', { direction: 'backward' }))), ['OrderPlaced', 'OrderPlaced']);
      const byType = await collect(store.readAll({ types: ['OrderPlaced'] }));
      assert.deepEqual(byType.map((e) => e.data), [{ orderId: 'o1' }, { orderId: 'o1b' }], 'a types filter finds the old name too');
      assert.deepEqual(typesOf(await collect(store.readAll({ raw: true }))), ['OrderCreated', 'OrderPlaced']);
      assert.deepEqual(typesOf(await collect(store.readAll({ raw: true, types: ['OrderCreated'] }))), ['OrderCreated'], 'raw filters are stored names');
    });

    it('a renamed or split type is never written (ESKIT_RETIRED_EVENT_TYPE, nothing of the batch stored) nor asked for by a typed read', async () => {
      const store = await ctx.store({ registry: shopRegistry() });
      await store.append('order-1', [{ type: 'OrderPlaced', data: { orderId: 'o1' } }]);
      const before = await snapshot(store, ['order-1']);
      for (const retired of ['OrderCreated', 'CheckedOut']) {
        const error = await expectCode(
          () => appendOld(store, 'order-1', [{ type: 'OrderPlaced', data: { orderId: 'o2' } }, { type: retired, data: { orderId: 'o2' } }]),
          ErrorCode.RetiredEventType,
        );
        assert.match(error.message, retired === 'OrderCreated' ? /append "OrderPlaced" instead/ : /split into "OrderPlaced", "PaymentTaken"/);
        await assertUnchanged(store, before, `appending ${retired}`);
      }
      await expectCode(() => collect(store.readAll({ types: ['OrderCreated'] })), ErrorCode.RetiredEventType);
    });

    it('splits: the parts share the stored position, stream version, timestamp and metadata; part 0 keeps the id; appends go on from the stored version', async () => {
      const store = await ctx.store({ registry: oldCode() });
      const stored = await appendOld(store, 'order-7', [
        { type: 'ItemAdded', data: { sku: 'a' } },
        { type: 'CheckedOut', data: { orderId: 'o7', amount: 30 }, metadata: { correlationId: 'c7' } },
      ]);
      const row = stored.events[1]!;
      const events = await collect(store.readStream('order-7'));
      assert.deepEqual(typesOf(events), ['ItemAdded', 'OrderPlaced', 'PaymentTaken']);
      const [placed, paid] = [events[1]!, events[2]!];
      for (const part of [placed, paid]) {
        assert.equal(part.position, row.position);
        assert.equal(part.streamVersion, 2);
        assert.deepEqual(part.timestamp, row.timestamp);
        assert.deepEqual(part.metadata, { correlationId: 'c7' });
        assert.equal(part.part?.storedId, row.id);
        assert.equal(part.part?.storedType, 'CheckedOut');
      }
      assert.equal(placed.id, row.id);
      assert.equal(paid.id, partId(row.id, 1));
      assert.deepEqual([placed.part?.index, paid.part?.index, paid.part?.count], [0, 1, 2]);
      assert.deepEqual(await collect(store.readAll({ after: row.position - 1 })), [placed, paid]);
      assert.deepEqual(typesOf(await collect(store.readStream('order-7', { direction: 'backward' }))), ['PaymentTaken', 'OrderPlaced', 'ItemAdded'], 'a backward read is newest first, parts too');
      // A command handler's expected version is the last stream version it read: the stored one.
      assert.equal(await store.streamVersion('order-7'), 2);
      const next = await store.append('order-7', [{ type: 'PaymentTaken', data: { orderId: 'o7', amount: 5 } }], { expectedVersion: events[events.length - 1]!.streamVersion });
      assert.equal(next.nextExpectedVersion, 3);
    });

    it('splits: a limit counts stored events and a page never ends inside a split', async () => {
      const store = await ctx.store({ registry: oldCode(), pageSize: 2 });
      const written = await appendOld(store, 'order-8', [
        { type: 'CheckedOut', data: { orderId: 'a', amount: 1 } },
        { type: 'OrderPlaced', data: { orderId: 'b' } },
        { type: 'CheckedOut', data: { orderId: 'c', amount: 3 } },
        { type: 'CheckedOut', data: { orderId: 'd', amount: 4 } },
        { type: 'PaymentTaken', data: { orderId: 'b', amount: 2 } },
      ]);
      const positions = written.events.map((e) => e.position);
      const all = await collect(store.readAll());
      assert.equal(all.length, 8);
      assert.deepEqual(all.map((e) => e.position), [positions[0], positions[0], positions[1], positions[2], positions[2], positions[3], positions[3], positions[4]]);
      for (let limit = 1; limit <= 5; limit++) {
        const read = await collect(store.readAll({ limit }));
        assert.deepEqual([...new Set(read.map((e) => e.position))], positions.slice(0, limit), `readAll limit ${limit}`);
        const streamRead = await collect(store.readStream('order-8', { limit }));
        assert.deepEqual([...new Set(streamRead.map((e) => e.streamVersion))], [1, 2, 3, 4, 5].slice(0, limit), `readStream limit ${limit}`);
      }
      // Paging a subscriber's way (after the last position seen, a limit per page) misses no part.
      const paged: Recorded[] = [];
      for (let after = 0; ; ) {
        const page = await collect(store.readAll({ after, limit: 1 }));
        if (page.length === 0) break;
        paged.push(...page);
        after = page[page.length - 1]!.position;
      }
      assert.deepEqual(paged, all);
    });

    it('splits: a types filter reads the split type and keeps only the asked parts; stored events with none do not use up a limit', async () => {
      const store = await ctx.store({ registry: oldCode(), pageSize: 2 });
      const written = await appendOld(store, 'order-9', [
        { type: 'CheckedOut', data: { orderId: 'a' } },
        { type: 'CheckedOut', data: { orderId: 'b' } },
        { type: 'CheckedOut', data: { orderId: 'c' } },
        { type: 'ItemAdded', data: { sku: 'x' } },
        { type: 'CheckedOut', data: { orderId: 'd', amount: 4 } },
        { type: 'OrderCreated', data: { orderId: 'e' } },
      ]);
      const payments = await collect(store.readAll({ types: ['PaymentTaken'] }));
      assert.deepEqual(payments.map((e) => [e.type, e.data, e.position]), [['PaymentTaken', { orderId: 'd', amount: 4 }, written.events[4]!.position]]);
      assert.equal(payments[0]!.part?.index, 1);
      // Three stored events without a payment come first: a limit of 1 still reaches the payment.
      assert.deepEqual(await collect(store.readAll({ types: ['PaymentTaken'], limit: 1 })), payments);
      const orders = await collect(store.readAll({ types: ['OrderPlaced'] }));
      assert.deepEqual(orders.map((e) => (e.data as { orderId: string }).orderId), ['a', 'b', 'c', 'd', 'e']);
      const both = await collect(store.readAll({ types: ['OrderPlaced', 'PaymentTaken'], limit: 5 }));
      assert.deepEqual(typesOf(both), ['OrderPlaced', 'OrderPlaced', 'OrderPlaced', 'OrderPlaced', 'PaymentTaken', 'OrderPlaced']);
    });

    it('version chain: events stored at v1, v2 and v3 all read as v3; appends write $schemaVersion 3', async () => {
      const store = await ctx.store({ registry: oldCode() });
      await appendOld(store, 'cart-1', [
        { type: 'ItemAdded', data: { sku: 'v1' } },
        { type: 'ItemAdded', data: { sku: 'v2', quantity: 2 }, metadata: { [SCHEMA_VERSION_KEY]: 2 } },
        { type: 'ItemAdded', data: { product: { sku: 'v3' }, quantity: 3 }, metadata: { [SCHEMA_VERSION_KEY]: 3 } },
      ]);
      const expected = [
        { product: { sku: 'v1' }, quantity: 1 },
        { product: { sku: 'v2' }, quantity: 2 },
        { product: { sku: 'v3' }, quantity: 3 },
      ];
      assert.deepEqual((await collect(store.readStream('cart-1'))).map((e) => e.data), expected);
      assert.deepEqual((await collect(store.readAll({ types: ['ItemAdded'] }))).map((e) => e.data), expected);

      const current = await ctx.store({ registry: shopRegistry() });
      const appended = await current.append('cart-2', [{ type: 'ItemAdded', data: { product: { sku: 'now' }, quantity: 1 }, metadata: { [SCHEMA_VERSION_KEY]: 1, correlationId: 'k' } }]);
      assert.deepEqual(appended.events[0]!.metadata, { [SCHEMA_VERSION_KEY]: 3, correlationId: 'k' }, 'the registry sets the key, whatever was copied in');
      const [raw] = await collect(current.readStream('cart-2', { raw: true }));
      assert.deepEqual(raw!.metadata, { [SCHEMA_VERSION_KEY]: 3, correlationId: 'k' });
      await current.append('order-2', [{ type: 'PaymentTaken', data: { orderId: 'o', amount: 1 }, metadata: { [SCHEMA_VERSION_KEY]: 3 } }]);
      const [payment] = await collect(current.readStream('order-2', { raw: true }));
      assert.deepEqual(payment!.metadata, {}, 'a version-1 type carries no key');
    });

    it('an event written by newer code, or one that no longer upcasts, fails its read with ESKIT_EVENT_VALIDATION at its position, after the events before it', async () => {
      const store = await ctx.store({ registry: oldCode() });
      await appendOld(store, 'cart-3', [{ type: 'ItemAdded', data: { sku: 'ok' } }]);
      const newer = await appendOld(store, 'cart-3', [{ type: 'ItemAdded', data: { product: { sku: 'x' }, quantity: 1 }, metadata: { [SCHEMA_VERSION_KEY]: 4 } }]);
      const seen: unknown[] = [];
      const error = await expectCode(async () => {
        for await (const event of store.readStream('cart-3')) seen.push(event.data);
      }, ErrorCode.EventValidation);
      assert.deepEqual(seen, [{ product: { sku: 'ok' }, quantity: 1 }]);
      assert.match(error.message, new RegExp(`position ${newer.position}\\b.*schema version 4`));
      const broken = await ctx.store({ registry: oldCode() });
      const bad = await appendOld(broken, 'cart-4', [{ type: 'ItemAdded', data: { nothing: true } }]);
      const failure = await expectCode(() => collect(broken.readAll()), ErrorCode.EventValidation);
      assert.match(failure.message, new RegExp(`position ${bad.position}\\b.*product.sku and quantity are required`));
    });
  });
}
