// A subscription behind a delete or a truncate, on every adapter: it never receives the removed
// events, and receives the lifecycle events when its types name them (they travel through readAll).
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { Backend } from '../../src/core/backend.js';
import type { EventShape, Recorded } from '../../src/core/event.js';
import { STREAM_DELETED, STREAM_TRUNCATED } from '../../src/core/lifecycle.js';
import { silentLogger } from '../../src/core/logger.js';
import { memory } from '../../src/memory/index.js';
import { postgres } from '../../src/postgres/index.js';
import { sqlite } from '../../src/sqlite/index.js';
import { Subscription } from '../../src/subscription/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { createTestSchema } from '../support/postgres.js';
import { databasesAfterEach } from '../sqlite/helpers.js';

const files = databasesAfterEach('stream-lifecycle');
let cleanups: Array<() => unknown> = [];
afterEach(async () => {
  const pending = cleanups.reverse();
  cleanups = [];
  for (const cleanup of pending) await cleanup();
});

const adapters: Array<[string, () => Promise<Backend<EventShape>>]> = [
  ['memory', async () => memory()],
  ['SQLite', async () => sqlite({ path: files.freshPath() })],
  [
    'PostgreSQL',
    async () => {
      const schema = await createTestSchema({ create: false });
      cleanups.push(() => schema.drop());
      const backend = postgres({ pool: schema.pool, schema: schema.name, leaderElection: false });
      await backend.migrate();
      return backend;
    },
  ],
];

for (const [adapter, make] of adapters) {
  describe(`stream lifecycle and subscriptions on ${adapter}`, () => {
    it('a subscription behind the delete never receives the deleted events, and receives the lifecycle event when its types name it', async () => {
      const backend = await make();
      cleanups.push(() => backend.close());
      const { store } = backend;
      const seed = async (streamId: string, count: number): Promise<void> => {
        for (let i = 1; i <= count; i++) await store.append(streamId, [{ type: 'A', data: i }]);
      };
      await seed('live', 1);
      await seed('doomed', 3);
      await seed('cut', 3);
      await store.deleteStream('doomed');
      await store.truncateStream('cut', 3);
      const { position: last } = await store.append('live', [{ type: 'A', data: 2 }]);
      const run = async (name: string, types: readonly string[] | undefined): Promise<Recorded[]> => {
        const seen: Recorded[] = [];
        const subscription = new Subscription<EventShape>({
          name,
          backend,
          leaderLock: false,
          logger: silentLogger,
          pollIntervalMs: 20,
          ...(types === undefined ? {} : { types }),
          handler: (event) => void seen.push(event),
        });
        await subscription.start();
        try {
          await waitUntil(() => seen.some((e) => e.position === last), { message: `${name} to reach the last event` });
        } finally {
          await subscription.stop();
        }
        return seen;
      };
      const all = await run('all-types', undefined);
      assert.deepEqual(all.map((e) => [e.streamId, e.streamVersion]), [['live', 1], ['cut', 3], ['live', 2]]);
      const named = await run('named-types', ['A', STREAM_DELETED, STREAM_TRUNCATED]);
      assert.deepEqual(named.map((e) => [e.streamId, e.type, e.streamVersion]), [
        ['live', 'A', 1],
        ['cut', 'A', 3],
        ['doomed', STREAM_DELETED, -1],
        ['cut', STREAM_TRUNCATED, -1],
        ['live', 'A', 2],
      ]);
      assert.deepEqual(named[2]?.data, { version: 3, hard: false, appends: 'restart' });
    });

    it('a running subscription that already passed the stream receives the lifecycle event, and nothing of the deleted stream after it', async () => {
      const backend = await make();
      cleanups.push(() => backend.close());
      const { store } = backend;
      const seen: Recorded[] = [];
      const subscription = new Subscription<EventShape>({
        name: 'running',
        backend,
        leaderLock: false,
        logger: silentLogger,
        pollIntervalMs: 20,
        types: ['A', STREAM_DELETED],
        handler: (event) => void seen.push(event),
      });
      await subscription.start();
      cleanups.push(() => subscription.stop());
      const { position: written } = await store.append('x', [{ type: 'A', data: 1 }]);
      await waitUntil(() => seen.some((e) => e.position === written), { message: 'the first event' });
      const { position: deleted } = await store.deleteStream('x');
      const { position: again } = await store.append('x', [{ type: 'A', data: 'again' }]);
      await waitUntil(() => seen.some((e) => e.position === again), { message: 'the restarted stream' });
      assert.deepEqual(seen.map((e) => [e.type, e.position, e.streamVersion]), [
        ['A', written, 1],
        [STREAM_DELETED, deleted, -1],
        ['A', again, 1],
      ]);
    });
  });
}
