// EventRegistry schema evolution on its own, without a store: version chains (each step alone, and
// the chain), renames, splits, the typed-read expansion, and the checks at construction.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import type { EskitError } from '../../src/core/errors.js';
import type { Metadata, Recorded } from '../../src/core/event.js';
import { EventRegistry, SCHEMA_VERSION_KEY, partId } from '../../src/core/registry.js';
import type { EventDefinitions, EventRegistryOptions, UpcastStep } from '../../src/core/registry.js';

// ItemAdded's history: v1 { sku }, v2 { sku, quantity }, v3 { product: { sku }, quantity }.
type ItemV1 = { sku: string };
type ItemV2 = { sku: string; quantity: number };
type ItemV3 = { product: { sku: string }; quantity: number };
const v1ToV2: UpcastStep = { from: 1, up: (data) => ({ ...(data as ItemV1), quantity: 1 }) };
const v2ToV3: UpcastStep = { from: 2, up: (data) => ({ product: { sku: (data as ItemV2).sku }, quantity: (data as ItemV2).quantity }) };

type ShopEvent =
  | { type: 'ItemAdded'; data: ItemV3 }
  | { type: 'OrderPlaced'; data: { orderId: string } }
  | { type: 'PaymentTaken'; data: { orderId: string; amount: number } }
  | { type: '$stream.deleted'; data: { version: number } };

function validateItem(data: unknown): ItemV3 {
  const d = data as Partial<ItemV3>;
  if (typeof d?.product?.sku !== 'string' || typeof d.quantity !== 'number') throw new Error('ItemAdded needs product.sku and quantity');
  return d as ItemV3;
}

// No definition for '$stream.deleted': the compiler must not ask for one.
const definitions: EventDefinitions<ShopEvent> = {
  ItemAdded: { version: 3, upcasters: [v2ToV3, v1ToV2], validate: validateItem },
  OrderPlaced: { renamedFrom: ['OrderCreated', 'PurchaseMade'] },
  PaymentTaken: {},
};

const splits: EventRegistryOptions<ShopEvent>['splits'] = {
  // The old checkout event held an order and, when paid at once, its payment.
  CheckedOut: {
    into: ['OrderPlaced', 'PaymentTaken'],
    split: (data: unknown) => {
      const d = data as { orderId: string; amount?: number };
      return d.amount === undefined
        ? [{ type: 'OrderPlaced', data: { orderId: d.orderId } }]
        : [
            { type: 'OrderPlaced', data: { orderId: d.orderId } },
            { type: 'PaymentTaken', data: { orderId: d.orderId, amount: d.amount } },
          ];
    },
  },
  // Old carts added two items at once, stored at ItemAdded's v1 and v2 shapes.
  PairAdded: {
    into: ['ItemAdded'],
    split: (data: unknown) => {
      const d = data as { a: string; b: string };
      return [
        { type: 'ItemAdded', data: { sku: d.a } },
        { type: 'ItemAdded', data: { sku: d.b, quantity: 2 }, version: 2 },
      ];
    },
  },
};

const registry = (): EventRegistry<ShopEvent> => new EventRegistry<ShopEvent>(definitions, { splits });

const ID = '01900000-0000-7000-8000-000000000001';

function stored(type: string, data: unknown, metadata: Metadata = {}): Recorded {
  return { id: ID, type, data, metadata, streamId: 'cart-1', streamVersion: 4, position: 17, timestamp: new Date(1000) };
}

function expectCode(fn: () => unknown, code: string, message?: RegExp): EskitError {
  try {
    fn();
  } catch (error) {
    assert.ok(isEskitError(error, code), `expected ${code}, got ${String(error)}`);
    if (message) assert.match(error.message, message);
    return error;
  }
  assert.fail(`expected ${code}, but it succeeded`);
}

describe('EventRegistry: version chain', () => {
  it('each step alone turns one version into the next', () => {
    assert.deepEqual(v1ToV2.up({ sku: 'a' }, {}), { sku: 'a', quantity: 1 });
    assert.deepEqual(v2ToV3.up({ sku: 'a', quantity: 4 }, {}), { product: { sku: 'a' }, quantity: 4 });
  });

  it('an event without $schemaVersion is version 1 and goes through every step, in version order', () => {
    assert.deepEqual(registry().decode('ItemAdded', { sku: 'a' }, {}), { product: { sku: 'a' }, quantity: 1 });
  });

  it('an event stored at version 2 runs only the steps after it; one at version 3 none', () => {
    const r = registry();
    assert.deepEqual(r.decode('ItemAdded', { sku: 'a', quantity: 5 }, { [SCHEMA_VERSION_KEY]: 2 }), { product: { sku: 'a' }, quantity: 5 });
    assert.deepEqual(r.decode('ItemAdded', { product: { sku: 'a' }, quantity: 6 }, { [SCHEMA_VERSION_KEY]: 3 }), { product: { sku: 'a' }, quantity: 6 });
  });

  it('an event written by newer code (a version above the current) fails with ESKIT_EVENT_VALIDATION', () => {
    expectCode(() => registry().decode('ItemAdded', {}, { [SCHEMA_VERSION_KEY]: 4 }, 9), ErrorCode.EventValidation, /position 9.*schema version 4.*version 3/);
    expectCode(() => registry().decode('ItemAdded', {}, { [SCHEMA_VERSION_KEY]: 'two' }), ErrorCode.EventValidation, /\$schemaVersion/);
  });

  it('a step that throws is ESKIT_EVENT_VALIDATION naming the step', () => {
    const r = new EventRegistry<ShopEvent>({ ...definitions, ItemAdded: { version: 2, upcasters: [{ from: 1, up: () => { throw new Error('no sku'); } }] } });
    expectCode(() => r.decode('ItemAdded', {}, {}, 3), ErrorCode.EventValidation, /upcaster from version 1 to 2 threw: no sku/);
  });

  it('appends stamp the current version when above 1, and remove a copied key at version 1', () => {
    const r = registry();
    const metadata: Metadata = { [SCHEMA_VERSION_KEY]: 7, correlationId: 'c' };
    r.stampVersion('ItemAdded', metadata);
    assert.deepEqual(metadata, { [SCHEMA_VERSION_KEY]: 3, correlationId: 'c' });
    r.stampVersion('PaymentTaken', metadata);
    assert.deepEqual(metadata, { correlationId: 'c' });
    assert.equal(r.versionOf('ItemAdded'), 3);
    assert.equal(r.versionOf('PaymentTaken'), 1);
  });

  it('a plain upcast keeps working as before (every read, whatever version)', () => {
    const r = new EventRegistry<{ type: 'A'; data: { n: number } }>({ A: { upcast: (data) => ({ n: Number((data as { n: unknown }).n) }) } });
    assert.deepEqual(r.decode('A', { n: '4' }, {}), { n: 4 });
  });
});

describe('EventRegistry: renames', () => {
  it('a stored old name decodes as the new type; the new name decodes as itself', () => {
    const r = registry();
    assert.equal(r.decodedType('OrderCreated'), 'OrderPlaced');
    assert.equal(r.decodedType('OrderPlaced'), 'OrderPlaced');
    const [event, ...rest] = r.decodeEvent(stored('PurchaseMade', { orderId: 'o1' }));
    assert.equal(rest.length, 0);
    assert.equal(event?.type, 'OrderPlaced');
    assert.equal(event?.id, ID);
    assert.deepEqual(r.retiredTypes, ['OrderCreated', 'PurchaseMade', 'CheckedOut', 'PairAdded']);
  });

  it('an old name is never written: encode refuses it with ESKIT_RETIRED_EVENT_TYPE naming the new one', () => {
    const error = expectCode(() => registry().encode('OrderCreated', { orderId: 'o' }), ErrorCode.RetiredEventType, /renamed to "OrderPlaced": append "OrderPlaced" instead/);
    assert.deepEqual((error as unknown as { replacedBy: string[] }).replacedBy, ['OrderPlaced']);
    expectCode(() => registry().encode('CheckedOut', {}), ErrorCode.RetiredEventType, /split into "OrderPlaced", "PaymentTaken"/);
    expectCode(() => registry().encode('Nope', {}), ErrorCode.UnknownEventType);
  });
});

describe('EventRegistry: splits', () => {
  it('one stored event becomes its parts: shared position, version, timestamp, metadata; part 0 keeps the id', () => {
    const metadata = { correlationId: 'c1' };
    const parts = registry().decodeEvent(stored('CheckedOut', { orderId: 'o1', amount: 30 }, metadata));
    assert.deepEqual(parts.map((p) => [p.type, p.data]), [
      ['OrderPlaced', { orderId: 'o1' }],
      ['PaymentTaken', { orderId: 'o1', amount: 30 }],
    ]);
    for (const part of parts) {
      assert.equal(part.position, 17);
      assert.equal(part.streamVersion, 4);
      assert.equal(part.streamId, 'cart-1');
      assert.deepEqual(part.timestamp, new Date(1000));
      assert.deepEqual(part.metadata, metadata);
    }
    assert.notEqual(parts[0]!.metadata, parts[1]!.metadata, 'each part has metadata of its own');
    assert.equal(parts[0]!.id, ID);
    assert.equal(parts[1]!.id, partId(ID, 1));
    assert.deepEqual(parts.map((p) => p.part), [
      { index: 0, count: 2, storedId: ID, storedType: 'CheckedOut' },
      { index: 1, count: 2, storedId: ID, storedType: 'CheckedOut' },
    ]);
  });

  it('derived part ids are UUIDs, stable, and distinct per part', () => {
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
    assert.match(partId(ID, 1), uuid);
    assert.equal(partId(ID, 1), partId(ID, 1));
    assert.notEqual(partId(ID, 1), partId(ID, 2));
    assert.equal(partId(ID, 1).slice(0, 13), ID.slice(0, 13), 'the stored id\'s time');
  });

  it('parts go through their type\'s chain from the version they name (default 1), then validate', () => {
    const parts = registry().decodeEvent(stored('PairAdded', { a: 'x', b: 'y' }));
    assert.deepEqual(parts.map((p) => p.data), [
      { product: { sku: 'x' }, quantity: 1 },
      { product: { sku: 'y' }, quantity: 2 },
    ]);
  });

  it('a split that returns nothing, a type outside into, or throws is ESKIT_EVENT_VALIDATION', () => {
    const bad = (split: () => unknown): EventRegistry<ShopEvent> =>
      new EventRegistry<ShopEvent>(definitions, { splits: { Old: { into: ['OrderPlaced'], split: split as () => [] } } });
    expectCode(() => bad(() => []).decodeEvent(stored('Old', {})), ErrorCode.EventValidation, /returned no events/);
    expectCode(() => bad(() => [{ type: 'PaymentTaken', data: {} }]).decodeEvent(stored('Old', {})), ErrorCode.EventValidation, /not in its into/);
    expectCode(() => bad(() => { throw new Error('boom'); }).decodeEvent(stored('Old', {})), ErrorCode.EventValidation, /position 17.*split threw: boom/);
  });
});

describe('EventRegistry: typed reads and lifecycle events', () => {
  it('a types filter becomes the stored names that decode into it, and keeps only asked parts', () => {
    const r = registry();
    assert.deepEqual(r.storedTypesFor(['OrderPlaced']), { types: ['OrderPlaced', 'OrderCreated', 'PurchaseMade', 'CheckedOut'], keep: new Set(['OrderPlaced']) });
    assert.deepEqual(r.storedTypesFor(['OrderPlaced', 'PaymentTaken']).keep, undefined, 'every part of CheckedOut is asked for');
    assert.deepEqual(r.storedTypesFor(['ItemAdded']), { types: ['ItemAdded', 'PairAdded'], keep: undefined });
    assert.deepEqual(r.storedTypesFor(['Unknown', '$stream.deleted']), { types: ['Unknown', '$stream.deleted'], keep: undefined });
    expectCode(() => r.storedTypesFor(['OrderCreated']), ErrorCode.RetiredEventType, /ask for "OrderPlaced"/);
  });

  it('$stream.* events decode untouched without a definition', () => {
    const [event] = registry().decodeEvent(stored('$stream.deleted', { version: 3, hard: false }));
    assert.deepEqual(event?.data, { version: 3, hard: false });
    assert.equal(event?.type, '$stream.deleted');
  });
});

describe('EventRegistry: checked at construction (ESKIT_REGISTRY_DEFINITION)', () => {
  type One = { type: 'A'; data: unknown } | { type: 'B'; data: unknown };
  const refused = (build: () => unknown, message: RegExp): void => {
    expectCode(build, ErrorCode.RegistryDefinition, message);
  };
  const up = (): unknown => ({});

  it('a version chain with a gap, a duplicate, or a step past the current version', () => {
    refused(() => new EventRegistry<One>({ A: { version: 3, upcasters: [{ from: 1, up }] }, B: {} }), /no upcaster from version 2/);
    refused(() => new EventRegistry<One>({ A: { version: 3 }, B: {} }), /no upcaster from version 1, 2/);
    refused(() => new EventRegistry<One>({ A: { version: 2, upcasters: [{ from: 1, up }, { from: 1, up }] }, B: {} }), /two upcasters from version 1/);
    refused(() => new EventRegistry<One>({ A: { version: 2, upcasters: [{ from: 1, up }, { from: 2, up }] }, B: {} }), /upcaster from version 2, but its version is 2.*version: 3/);
    refused(() => new EventRegistry<One>({ A: { upcasters: [{ from: 1, up }] }, B: {} }), /version is 1/);
    refused(() => new EventRegistry<One>({ A: { version: 0 }, B: {} }), /positive integer/);
    refused(() => new EventRegistry<One>({ A: { version: 2, upcasters: [{ from: 0, up }] }, B: {} }), /from 0/);
    refused(() => new EventRegistry<One>({ A: { version: 2, upcast: up, upcasters: [{ from: 1, up }] }, B: {} }), /both upcast and a version chain/);
  });

  it('rename clashes and cycles', () => {
    refused(() => new EventRegistry<One>({ A: { renamedFrom: ['B'] }, B: {} }), /"B" is also a current type/);
    refused(() => new EventRegistry<One>({ A: { renamedFrom: ['B'] }, B: { renamedFrom: ['A'] } }), /is also a current type/);
    refused(() => new EventRegistry<One>({ A: { renamedFrom: ['Old'] }, B: { renamedFrom: ['Old'] } }), /"Old" is in the renamedFrom of both "A" and "B"/);
    refused(() => new EventRegistry<One>({ A: { renamedFrom: ['A'] }, B: {} }), /lists itself/);
    refused(() => new EventRegistry<One>({ A: { renamedFrom: ['$stream.deleted'] }, B: {} }), /renamedFrom/);
  });

  it('split clashes and cycles', () => {
    const split = (): [] => [];
    refused(() => new EventRegistry<One>({ A: {}, B: {} }, { splits: { A: { into: ['B'], split } } }), /"A" is both a current type and split/);
    refused(() => new EventRegistry<One>({ A: { renamedFrom: ['Old'] }, B: {} }, { splits: { Old: { into: ['B'], split } } }), /both renamed \(to "A"\) and split/);
    refused(() => new EventRegistry<One>({ A: {}, B: {} }, { splits: { Old: { into: ['C' as 'A'], split } } }), /"C" in into, but it is not a type/);
    refused(() => new EventRegistry<One>({ A: {}, B: {} }, { splits: { Old: { into: ['Older' as 'A'], split }, Older: { into: ['A'], split } } }), /"Older" in into, but it is split itself/);
    refused(() => new EventRegistry<One>({ A: { renamedFrom: ['Prior'] }, B: {} }, { splits: { Old: { into: ['Prior' as 'A'], split } } }), /it was renamed to "A"/);
    refused(() => new EventRegistry<One>({ A: {}, B: {} }, { splits: { Old: { into: [], split } } }), /non-empty list/);
    refused(() => new EventRegistry<One>({ A: {}, B: {} }, { splits: { '$stream.deleted': { into: ['A'], split } } }), /lifecycle/);
  });

  it('$stream.* types cannot be defined', () => {
    refused(() => new EventRegistry<One>({ A: {}, B: {}, '$stream.deleted': {} } as EventDefinitions<One>), /lifecycle events/);
  });
});
