// Issue 13, item 1: a subscription that starts from the end must remember where that end was. Without
// it, a stop (or crash) before the first event let the next start read the head again, and every event
// appended in between was never delivered.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { Subscription, silentLogger } from '../../src/index.js';
import type { CheckpointStore } from '../../src/adapter/index.js';
import { MemoryCheckpointStore, MemoryEventStore, MemoryLockRegistry } from '../../src/memory/index.js';
import type { EventStore, LockRegistry, Recorded } from '../../src/index.js';
import { PostgresCheckpointStore, PostgresEventStore } from '../../src/postgres/index.js';
import { SqliteCheckpointStore, SqliteEventStore } from '../../src/sqlite/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { createTestSchema } from '../support/postgres.js';
import { databasesAfterEach } from '../sqlite/helpers.js';

const sqliteFiles = databasesAfterEach('start-from-end');
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Backend {
  store: EventStore;
  checkpoints: CheckpointStore;
}

const backends: Record<string, () => Promise<Backend>> = {
  memory: async () => {
    const store = new MemoryEventStore();
    return { store, checkpoints: new MemoryCheckpointStore() };
  },
  sqlite: async () => {
    const store = new SqliteEventStore({ path: sqliteFiles.freshPath() });
    sqliteFiles.closeAfterTest(() => store.close());
    return { store, checkpoints: new SqliteCheckpointStore({ store }) };
  },
  postgres: async () => {
    const schema = await createTestSchema({ create: false });
    cleanups.push(() => schema.drop());
    const store = new PostgresEventStore({ pool: schema.pool, schema: schema.name });
    return { store, checkpoints: new PostgresCheckpointStore({ store }) };
  },
};

for (const [name, open] of Object.entries(backends)) {
  describe(`startFrom: 'end' is remembered (${name})`, () => {
    for (const leaderLock of [undefined, new MemoryLockRegistry()] as Array<LockRegistry | undefined>) {
      it(`a stop before the first event loses nothing appended before the next start (${leaderLock ? 'with' : 'without'} a leader lock)`, async () => {
        const { store, checkpoints } = await open();
        for (let i = 0; i < 5; i++) await store.append(`old-${i}`, [{ type: 'Tick', data: { i } }]);
        const seen: Recorded[] = [];
        const subscribe = (): Subscription =>
          new Subscription({
            name: 'from-end',
            store,
            checkpoints,
            startFrom: 'end',
            logger: silentLogger,
            pollIntervalMs: 20,
            ...(leaderLock ? { leaderLock } : {}),
            handler: (event) => {
              seen.push(event);
            },
          });
        const first = subscribe();
        await first.start();
        await waitUntil(async () => (await first.status()).state === 'leading', { message: 'the first run leads' });
        await first.stop();
        assert.equal(seen.length, 0, 'the events before the start are not delivered');
        assert.equal(await checkpoints.load('from-end'), 5, 'the start position was saved before any event');

        await store.append('new', [{ type: 'Tick', data: { i: 5 } }]);
        const second = subscribe();
        cleanups.push(() => second.stop());
        await second.start();
        await waitUntil(() => seen.length === 1, { message: 'the event appended between the runs is delivered' });
        assert.equal(seen[0]?.streamId, 'new');
        assert.equal(seen[0]?.position, 6);
      });
    }
  });
}
