// waitFor on positions a view's typed reads see differently from the stored log: a lifecycle event
// (a view never applies it unless its types name it) and an event stored under a type's old name
// (the view asks for the new name). Either way waitFor must return once the view has applied
// everything up to the position, and not wait for what it will never apply.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { Backend } from '../../src/core/backend.js';
import { silentLogger } from '../../src/core/logger.js';
import { EventRegistry } from '../../src/core/registry.js';
import { memory } from '../../src/memory/index.js';
import { postgres } from '../../src/postgres/index.js';
import type { PostgresViewTx } from '../../src/postgres/index.js';
import { sqlite } from '../../src/sqlite/index.js';
import type { SqliteViewTx } from '../../src/sqlite/index.js';
import { MemoryView, SqlView } from '../../src/view/index.js';
import { createTestSchema } from '../support/postgres.js';
import { databasesAfterEach } from '../sqlite/helpers.js';

type Ev = { type: 'Added'; data: { n: number } } | { type: 'Renamed'; data: { n: number } };
const registry = (): EventRegistry<Ev> => new EventRegistry<Ev>({ Added: {}, Renamed: { renamedFrom: ['Old'] } });

const files = databasesAfterEach('wait-for-evolution');
let cleanups: Array<() => unknown> = [];
afterEach(async () => {
  const pending = cleanups.reverse();
  cleanups = [];
  for (const cleanup of pending) await cleanup();
});

interface Subject {
  backend: Backend<Ev>;
  /** Writes an event under a type name the registry no longer writes (as old code did). */
  appendOld(streamId: string, n: number): Promise<number>;
  /** A view of `types` (every type when undefined) that records the n of each event it applies. */
  view(types: readonly Ev['type'][] | undefined): { start(): Promise<void>; stop(): Promise<void>; waitFor(position: number, options: { timeoutMs: number }): Promise<void>; applied(): Promise<number[]> };
}

const subjects: Array<[string, () => Promise<Subject>]> = [
  [
    'MemoryView on memory()',
    async () => {
      const backend = memory<Ev>({ registry: registry() });
      const raw = backend.store as unknown as { append(id: string, events: unknown[]): Promise<{ position: number }> };
      return {
        backend,
        // memory() has one log per object: old code's event goes through the same store, unchecked, by raw type.
        appendOld: async () => {
          throw new Error('not on memory');
        },
        view: (types) => {
          const view = new MemoryView<number[], Ev>({ name: 'v', store: backend.store, types, initialState: [], evolve: (state, event) => [...state, (event.data as { n: number }).n], logger: silentLogger });
          void raw;
          return { start: () => view.start(), stop: () => view.stop(), waitFor: (p, o) => view.waitFor(p, o), applied: async () => view.state };
        },
      };
    },
  ],
  [
    'SqlView on SQLite',
    async () => {
      const path = files.freshPath();
      const backend = sqlite<Ev>({ path, registry: registry() });
      const old = sqlite({ path });
      cleanups.push(() => old.close());
      return {
        backend,
        appendOld: async (streamId, n) => (await old.store.append(streamId, [{ type: 'Old', data: { n } }])).position,
        view: (types) => {
          const view = new SqlView<Ev, SqliteViewTx, void>({
            name: 'v',
            backend,
            types,
            leaderLock: false,
            logger: silentLogger,
            setup: { version: 1, statements: (t) => [`CREATE TABLE ${t('applied')} (position INTEGER PRIMARY KEY, n INTEGER NOT NULL)`] },
            evolve: (event, { prepare, table }) => void prepare(`INSERT INTO ${table('applied')} (position, n) VALUES (?, ?)`).run(event.position, (event.data as { n: number }).n),
          });
          const applied = async (): Promise<number[]> => backend.database.prepare('SELECT n FROM applied ORDER BY position').pluck().all() as number[];
          return { start: () => view.start(), stop: () => view.stop(), waitFor: (p, o) => view.waitFor(p, o), applied };
        },
      };
    },
  ],
  [
    'SqlView on PostgreSQL',
    async () => {
      const schema = await createTestSchema({ create: false });
      cleanups.push(() => schema.drop());
      const backend = postgres<Ev>({ pool: schema.pool, schema: schema.name, leaderElection: false, registry: registry() });
      const old = postgres({ pool: schema.pool, schema: schema.name, leaderElection: false });
      cleanups.push(() => old.close());
      await backend.migrate();
      return {
        backend,
        appendOld: async (streamId, n) => (await old.store.append(streamId, [{ type: 'Old', data: { n } }])).position,
        view: (types) => {
          const view = new SqlView<Ev, PostgresViewTx, Promise<void>>({
            name: 'v',
            backend,
            types,
            logger: silentLogger,
            setup: { version: 1, statements: (t) => [`CREATE TABLE ${t('applied')} (position bigint PRIMARY KEY, n int NOT NULL)`] },
            evolve: async (event, { client, table }) => {
              await client.query(`INSERT INTO ${table('applied')} (position, n) VALUES ($1, $2)`, [event.position, (event.data as { n: number }).n]);
            },
          });
          const applied = async (): Promise<number[]> => (await schema.pool.query<{ n: number }>(`SELECT n FROM "${schema.name}".applied ORDER BY position`)).rows.map((row) => row.n);
          return { start: () => view.start(), stop: () => view.stop(), waitFor: (p, o) => view.waitFor(p, o), applied };
        },
      };
    },
  ],
];

for (const [name, make] of subjects) {
  describe(`waitFor across lifecycle events and renamed types: ${name}`, () => {
    it('a view of every type: waitFor the position of a lifecycle event returns once the events before it are applied', async () => {
      const subject = await make();
      cleanups.push(() => subject.backend.close());
      const view = subject.view(undefined);
      cleanups.push(() => view.stop());
      await view.start();
      await subject.backend.store.append('cart-1', [{ type: 'Added', data: { n: 1 } }]);
      await view.waitFor((await subject.backend.store.append('cart-2', [{ type: 'Added', data: { n: 2 } }])).position, { timeoutMs: 5_000 });
      // The newest event of the log is now one the view never applies.
      const { position } = await subject.backend.store.deleteStream('cart-1');
      await view.waitFor(position, { timeoutMs: 5_000 });
      assert.deepEqual(await view.applied(), [1, 2]);
    });

    if (name.startsWith('MemoryView')) return;

    it('a view of a renamed type: waitFor an event stored under the old name returns after applying it', async () => {
      const subject = await make();
      cleanups.push(() => subject.backend.close());
      await subject.backend.store.append('cart-1', [{ type: 'Renamed', data: { n: 1 } }]);
      const view = subject.view(['Renamed']);
      cleanups.push(() => view.stop());
      await view.start();
      await view.waitFor(await subject.backend.store.headPosition(), { timeoutMs: 5_000 });
      const position = await subject.appendOld('cart-2', 2);
      await subject.backend.store.append('cart-3', [{ type: 'Added', data: { n: 3 } }]);
      await view.waitFor(position, { timeoutMs: 5_000 });
      assert.deepEqual(await view.applied(), [1, 2], 'the old-name event is applied when waitFor returns');
    });
  });
}
