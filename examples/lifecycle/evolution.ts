// Evolving event types without rewriting the log: a version chain, a rename and a split. Events are
// first written as last year's code wrote them, then read through today's registry. Runs on a SQLite
// file in a temporary folder (removed at the end) and finishes by itself:
// npx tsx examples/lifecycle/evolution.ts
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, EventRegistry, isEskitError } from '../../src/index.js';
import type { UpcastStep } from '../../src/index.js';
import { SCHEMA_VERSION_KEY } from '../../src/adapter/index.js';
import type { EventDefinitions } from '../../src/adapter/index.js';
import { sqlite } from '../../src/sqlite/index.js';

// Today's events. ItemAdded was { sku } (v1), then { sku, quantity } (v2), now { product: { sku }, quantity } (v3).
type ShopEvent =
  | { type: 'ItemAdded'; data: { product: { sku: string }; quantity: number } }
  | { type: 'OrderPlaced'; data: { orderId: string } }
  | { type: 'PaymentTaken'; data: { orderId: string; amount: number } };

// Each step is small and can be tested on its own.
const addQuantity: UpcastStep = { from: 1, up: (data) => ({ ...(data as { sku: string }), quantity: 1 }) };
const nestProduct: UpcastStep = {
  from: 2,
  up: (data) => {
    const { sku, quantity } = data as { sku: string; quantity: number };
    return { product: { sku }, quantity };
  },
};
assert.deepEqual(nestProduct.up(addQuantity.up({ sku: 'pear' }, {}), {}), { product: { sku: 'pear' }, quantity: 1 });

const definitions: EventDefinitions<ShopEvent> = {
  ItemAdded: { version: 3, upcasters: [addQuantity, nestProduct] },
  // OrderPlaced was called OrderCreated.
  OrderPlaced: { renamedFrom: ['OrderCreated'] },
  PaymentTaken: {},
};
const registry = new EventRegistry<ShopEvent>(definitions, {
  splits: {
    // CheckedOut held an order and its payment: it is read as the two events it should have been.
    CheckedOut: {
      into: ['OrderPlaced', 'PaymentTaken'],
      split: (data) => {
        const { orderId, amount } = data as { orderId: string; amount: number };
        return [
          { type: 'OrderPlaced', data: { orderId } },
          { type: 'PaymentTaken', data: { orderId, amount } },
        ];
      },
    },
  },
});

// Last year's code wrote these (it had no version chain, OrderCreated and CheckedOut). A store
// without a registry writes what it is given: it stands in for that code.
const dir = mkdtempSync(join(tmpdir(), 'eskit-evolution-'));
const path = join(dir, 'shop.db');
const lastYear = sqlite({ path });
await lastYear.store.append('order-1', [
  { type: 'ItemAdded', data: { sku: 'apple' } }, // version 1: no $schemaVersion
  { type: 'ItemAdded', data: { sku: 'plum', quantity: 3 }, metadata: { [SCHEMA_VERSION_KEY]: 2 } },
  { type: 'OrderCreated', data: { orderId: 'o-1' } },
  { type: 'CheckedOut', data: { orderId: 'o-1', amount: 12 } },
]);
await lastYear.close();

// Today's code opens the same database with its registry. Stored rows never change.
const shop = sqlite<ShopEvent>({ path, registry });

// Every read decodes through the registry: renamed, upcast, split.
const events = [];
for await (const event of shop.store.readStream('order-1')) events.push(event);
assert.deepEqual(
  events.map((e) => [e.streamVersion, e.type, e.data]),
  [
    [1, 'ItemAdded', { product: { sku: 'apple' }, quantity: 1 }],
    [2, 'ItemAdded', { product: { sku: 'plum' }, quantity: 3 }],
    [3, 'OrderPlaced', { orderId: 'o-1' }],
    [4, 'OrderPlaced', { orderId: 'o-1' }],
    [4, 'PaymentTaken', { orderId: 'o-1', amount: 12 }],
  ],
);
// The split's parts share the stored event's position and stream version; part 0 keeps its id.
const [placed, paid] = events.slice(3);
assert.equal(placed?.position, paid?.position);
assert.deepEqual(paid?.part, { index: 1, count: 2, storedId: placed?.id, storedType: 'CheckedOut' });
// Appends go on from the stored version.
await shop.store.append('order-1', [{ type: 'PaymentTaken', data: { orderId: 'o-1', amount: 1 } }], { expectedVersion: 4 });

// A typed read of a type finds its old names and the splits that make it, and keeps only that type.
const payments = [];
for await (const event of shop.store.readAll({ types: ['PaymentTaken'] })) payments.push(event.data);
assert.deepEqual(payments, [
  { orderId: 'o-1', amount: 12 },
  { orderId: 'o-1', amount: 1 },
]);

// Today's code never writes a retired type, and writes ItemAdded with $schemaVersion 3.
try {
  await shop.store.append('order-2', [{ type: 'OrderCreated', data: { orderId: 'o-2' } } as never]);
  assert.fail('a renamed type was appended');
} catch (error) {
  assert.ok(isEskitError(error, ErrorCode.RetiredEventType));
  assert.match(error.message, /renamed to "OrderPlaced"/);
}
const added = await shop.store.append('order-2', [{ type: 'ItemAdded', data: { product: { sku: 'fig' }, quantity: 2 } }]);
assert.equal(added.events[0]?.metadata[SCHEMA_VERSION_KEY], 3);

// A registry that contradicts itself fails at startup, not on the first read.
try {
  new EventRegistry<ShopEvent>({ ...definitions, ItemAdded: { version: 3, upcasters: [addQuantity] } });
  assert.fail('a chain with a gap was accepted');
} catch (error) {
  assert.ok(isEskitError(error, ErrorCode.RegistryDefinition));
  assert.match(error.message, /no upcaster from version 2/);
}
await shop.close();
rmSync(dir, { recursive: true, force: true });
console.log('evolution: every assertion held');
