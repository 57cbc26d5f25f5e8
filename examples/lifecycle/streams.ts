// Deleting and truncating streams, and a view that reacts to it. Runs on the memory backend and
// finishes by itself: npx tsx examples/lifecycle/streams.ts
import assert from 'node:assert/strict';
import { ErrorCode, isEskitError, memory, MemoryView, STREAM_DELETED } from '../../src/index.js';
import type { Recorded, StreamLifecycleEvent } from '../../src/index.js';

type CartEvent = { type: 'ItemAdded'; data: { sku: string } } | { type: 'CheckedOut'; data: null };
// The view names the lifecycle event it handles, so its union includes it.
type ViewEvent = CartEvent | StreamLifecycleEvent;

const backend = memory<ViewEvent>();
const { store } = backend;

// A view of open carts: item counts per cart. It drops a cart when its stream is deleted.
const carts = new MemoryView<ReadonlyMap<string, number>, ViewEvent>({
  backend,
  name: 'open-carts',
  types: ['ItemAdded', 'CheckedOut', STREAM_DELETED],
  initialState: new Map(),
  evolve: (state, event: Recorded<ViewEvent>) => {
    const next = new Map(state);
    if (event.type === 'ItemAdded') next.set(event.streamId, (next.get(event.streamId) ?? 0) + 1);
    else next.delete(event.streamId); // CheckedOut, or $stream.deleted
    return next;
  },
});
await carts.start();

await store.append('cart-1', [{ type: 'ItemAdded', data: { sku: 'apple' } }, { type: 'ItemAdded', data: { sku: 'pear' } }]);
const { position: added } = await store.append('cart-2', [{ type: 'ItemAdded', data: { sku: 'plum' } }]);
await carts.waitFor(added);
assert.deepEqual([...carts.state], [['cart-1', 2], ['cart-2', 1]]);

// Soft delete: cart-1 reads as absent at once; the view hears $stream.deleted and drops the cart.
const { position: deleted } = await store.deleteStream('cart-1', { expectedVersion: 2 });
assert.equal(await store.streamVersion('cart-1'), 0);
await carts.waitFor(deleted);
assert.deepEqual([...carts.state], [['cart-2', 1]]);
// A typed readAll without types never meets lifecycle events; one that names them does.
assert.deepEqual((await collect(store.readAll())).map((e) => e.streamId), ['cart-2']);
const [event] = await collect(store.readAll({ types: [STREAM_DELETED] }));
assert.deepEqual(event?.data, { version: 2, hard: false, appends: 'restart' });
// appends: 'restart' (the default): the next append starts the stream again at version 1.
assert.equal((await store.append('cart-1', [{ type: 'ItemAdded', data: { sku: 'fig' } }])).nextExpectedVersion, 1);

// Hard delete, refusing appends: the rows are removed for good and the id cannot be used again.
await store.deleteStream('cart-1', { hard: true, appends: 'refuse' });
await store.append('cart-1', [{ type: 'ItemAdded', data: { sku: 'kiwi' } }]).then(
  () => assert.fail('an append to a stream deleted with appends: refuse must fail'),
  (error: unknown) => assert.ok(isEskitError(error, ErrorCode.StreamDeleted)),
);

// Truncate: a long stream keeps its versions and its last events; reads start at `before`.
for (let i = 0; i < 5; i++) await store.append('cart-2', [{ type: 'ItemAdded', data: { sku: `item-${i}` } }]);
await store.truncateStream('cart-2', 5);
assert.deepEqual((await collect(store.readStream('cart-2'))).map((e) => e.streamVersion), [5, 6]);
assert.equal(await store.streamVersion('cart-2'), 6);

await carts.stop();
await backend.close();
console.log('lifecycle example: ok');

async function collect<T>(events: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const e of events) out.push(e);
  return out;
}
