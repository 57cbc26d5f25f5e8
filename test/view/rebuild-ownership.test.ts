// A rebuild swaps its new tables in under their live names. It must only ever replace tables of its
// own view: a new setup that names a table of another view (or of the application) is refused, on
// both backends, and that table keeps its rows. (Found by a red-team pass: the swap dropped it.)
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import { silentLogger } from '../../src/core/logger.js';
import { postgres } from '../../src/postgres/index.js';
import { sqlite } from '../../src/sqlite/index.js';
import { SqlView } from '../../src/view/index.js';
import type { SqlViewSetup } from '../../src/view/index.js';
import { createTestSchema } from '../support/postgres.js';
import { removeDatabase, tempDatabasePath } from '../sqlite/helpers.js';

type Counted = { type: 'Counted'; data: { n: number } };
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const ownsTotals: SqlViewSetup = { version: 1, statements: (t) => [`CREATE TABLE ${t('totals')} (id text PRIMARY KEY, n integer)`] };
const bV1: SqlViewSetup = { version: 1, statements: (t) => [`CREATE TABLE ${t('b_rows')} (id text PRIMARY KEY)`] };
// Version 2 of b adds a table named like a's.
const bV2: SqlViewSetup = { version: 2, statements: (t) => [`CREATE TABLE ${t('b_rows')} (id text PRIMARY KEY)`, `CREATE TABLE ${t('totals')} (id text PRIMARY KEY, n integer)`] };

interface World {
  view(name: string, setup: SqlViewSetup): SqlView;
  append(count: number): Promise<number>;
  countTotals(): Promise<number>;
}

const backends: Array<{ name: string; open(): Promise<World> }> = [
  {
    name: 'sqlite',
    open: async () => {
      const path = tempDatabasePath('rebuild-ownership');
      const backend = sqlite<Counted>({ path });
      const { store } = backend;
      cleanups.push(() => removeDatabase(path));
      cleanups.push(() => backend.close());
      return {
        view: (name, setup) =>
          new SqlView({ name, backend, setup, logger: silentLogger, evolve: (event, tx) => tx.upsert('totals', { id: `${name}-${event.position}`, n: 1 }, { key: ['id'] }) }),
        append: async (count) => (await store.append('s', Array.from({ length: count }, (_, n) => ({ type: 'Counted' as const, data: { n } })))).position,
        countTotals: async () => Number(store.database.prepare('SELECT count(*) FROM totals').pluck().get()),
      };
    },
  },
  {
    name: 'postgres',
    open: async () => {
      const schema = await createTestSchema({ create: false });
      cleanups.push(() => schema.drop());
      const backend = postgres<Counted>({ pool: schema.pool, schema: schema.name, leaderElection: false });
      const { store } = backend;
      cleanups.push(() => backend.close());
      return {
        view: (name, setup) =>
          new SqlView({ name, backend, setup, logger: silentLogger, evolve: (event, tx) => tx.upsert('totals', { id: `${name}-${event.position}`, n: 1 }, { key: ['id'] }) }),
        append: async (count) => (await store.append('s', Array.from({ length: count }, (_, n) => ({ type: 'Counted' as const, data: { n } })))).position,
        countTotals: async () => Number((await schema.pool.query<{ n: string }>(`SELECT count(*) AS n FROM "${schema.name}".totals`)).rows[0]?.n),
      };
    },
  },
];

for (const backendCase of backends) {
  describe(`rebuild table ownership (${backendCase.name})`, () => {
    it("a new setup naming another view's table is refused, and that table keeps its rows", async () => {
      const world = await backendCase.open();
      const head = await world.append(2);
      const a = world.view('a', ownsTotals);
      cleanups.push(() => a.stop());
      await a.start();
      await a.waitFor(head);
      assert.equal(await world.countTotals(), 2);

      const b1 = world.view('b', bV1);
      await b1.start();
      await b1.stop();
      const b2 = world.view('b', bV2);
      cleanups.push(() => b2.stop());
      await assert.rejects(b2.rebuildIfChanged(), (error: unknown) => {
        assert.ok(isEskitError(error, ErrorCode.InvalidArgument), String(error));
        assert.match((error as Error).message, /View "b": its new setup creates table\(s\) "totals", which already exist and are not this view's/);
        return true;
      });
      assert.equal(await world.countTotals(), 2, "a's rows are still there");
      assert.equal(await b2.storedVersion(), 1, 'b stays at its old version');
    });
  });
}
