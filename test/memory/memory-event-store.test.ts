import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import { MemoryEventStore } from '../../src/memory/memory-event-store.js';
import type { EventStore } from '../../src/core/store.js';
import { eventStoreConformance } from '../../src/testing/conformance.js';
import { collect } from '../../src/testing/conformance/context.js';

// Each store's snapshot names per stream, cleared through the hook a deletion calls (the memory
// snapshot store listens to the same hook).
const snapshots = new WeakMap<EventStore, Map<string, Set<string>>>();
function memoryStore(store: EventStore): MemoryEventStore {
  assert.ok(store instanceof MemoryEventStore, 'the memory harness was handed a store it did not create');
  return store;
}

eventStoreConformance({
  name: 'memory',
  createStore: async (options) => {
    const store = new MemoryEventStore(options);
    const stored = new Map<string, Set<string>>();
    store.onStreamDeleted((streamId) => stored.delete(streamId));
    snapshots.set(store as EventStore, stored);
    return store;
  },
  lifecycle: {
    deletedVersions: async (store, streamId) => memoryStore(store).deletedVersionsForTesting(streamId),
    writeSnapshot: async (store, streamId, name) => {
      const stored = snapshots.get(store) as Map<string, Set<string>>;
      stored.set(streamId, (stored.get(streamId) ?? new Set()).add(name));
    },
    snapshotCount: async (store, streamId) => snapshots.get(store)?.get(streamId)?.size ?? 0,
  },
  corruptEvent: async (store, position) => {
    assert.ok(store instanceof MemoryEventStore, 'the memory harness only corrupts MemoryEventStore');
    store.corruptForTesting(position, { data: '{"truncated": ' });
  },
});

describe('MemoryEventStore', () => {
  it('refuses a pageSize that is not a positive integer', () => {
    for (const pageSize of [0, -1, 1.5, Number.NaN]) {
      assert.throws(() => new MemoryEventStore({ pageSize }), (e: unknown) => isEskitError(e, ErrorCode.InvalidArgument));
    }
  });

  it('stores a copy: mutating the appended data or a read event cannot change the log', async () => {
    const store = new MemoryEventStore();
    const data = { items: ['a'] };
    const metadata = { correlationId: 'c', tags: ['x'] };
    const result = await store.append('s', [{ type: 'A', data, metadata }]);
    data.items.push('mutated');
    metadata.tags.push('mutated');
    (result.events[0]!.data as { items: string[] }).items.push('mutated too');
    for await (const e of store.readStream('s')) (e.data as { items: string[] }).items.push('read and mutated');
    const [event] = await collect(store.readAll());
    assert.deepEqual(event?.data, { items: ['a'] });
    assert.deepEqual(event?.metadata, { correlationId: 'c', tags: ['x'] });
  });

  it('corruptForTesting with metadata that is not an object reads as ESKIT_CORRUPT_EVENT', async () => {
    const store = new MemoryEventStore();
    const { position } = await store.append('s', [{ type: 'A', data: 1 }]);
    store.corruptForTesting(position, { metadata: '[1,2]' });
    await assert.rejects(
      collect(store.readAll()),
      (e: unknown) => isEskitError(e, ErrorCode.CorruptEvent) && (e as { position?: unknown }).position === position,
    );
  });

  it('positions are gapless from 1 and equal to the number of events', async () => {
    const store = new MemoryEventStore();
    await store.append('a', [{ type: 'A', data: 1 }, { type: 'A', data: 2 }]);
    await store.append('b', [{ type: 'A', data: 3 }]);
    const all = await collect(store.readAll());
    assert.deepEqual(all.map((e) => e.position), [1, 2, 3]);
    assert.equal(await store.headPosition(), 3);
  });
});
