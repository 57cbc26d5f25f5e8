// A rebuild whose process died leaves its shadow tables and their own checkpoint (committed with each
// shadow batch); the next rebuild takes them over and resumes there, on both backends, unless the
// shadow was built with other code (another evolve, setup or types), another rebuilder (older code)
// took the shadow over meanwhile, or `fresh` asks to start over. One that failed or was aborted drops
// them. Backend level first, then through SqlView.rebuild().
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import type { Recorded } from '../../src/core/event.js';
import { silentLogger } from '../../src/core/logger.js';
import type { Admin } from '../../src/core/admin.js';
import type { EventStore } from '../../src/core/store.js';
import type { SqlViewBackend, SqlViewSpec, SqlViewTx } from '../../src/core/view-backend.js';
import { postgres } from '../../src/postgres/index.js';
import { sqlite } from '../../src/sqlite/index.js';
import { SqlView } from '../../src/view/index.js';
import type { RebuildProgress } from '../../src/view/index.js';
import { removeDatabase, tempDatabasePath } from '../sqlite/helpers.js';
import { createTestSchema } from '../support/postgres.js';
import { counted, other } from './helpers.js';
import type { TestEvent } from './helpers.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

type Spec = SqlViewSpec<TestEvent, SqlViewTx, void>;

// One row per stream, counting its events: works unchanged on either backend.
const spec: Spec = {
  name: 'tally',
  types: ['Counted'],
  setup: { version: 1, statements: (t) => [`CREATE TABLE ${t('tally')} (stream TEXT PRIMARY KEY, n INTEGER NOT NULL)`] },
  evolve: (event, tx) => tx.upsert('tally', { stream: event.streamId, n: 1 }, { key: ['stream'], increment: ['n'] }),
};
// The same view with an evolve of other source text: its rows must never mix with the first one's.
const otherEvolve: Spec = { ...spec, evolve: (event, tx) => tx.upsert('tally', { stream: event.streamId, n: 2 }, { key: ['stream'], increment: ['n'] }) };

interface World {
  store: EventStore<TestEvent>;
  admin: Admin;
  create(spec: Spec): SqlViewBackend<TestEvent>;
  view(spec: Spec): SqlView<TestEvent, SqlViewTx, void>;
  /** The sum of n over the table (`tally`, or a shadow `tally__rebuild_<g>`); undefined when it does not exist. */
  sum(table: string): Promise<number | undefined>;
  /** What an older eskit's rebuild leaves behind when it takes over: another owner, and no checkpoint of its own. */
  ownedByOlderCode(): Promise<void>;
  /** A database set up before rebuilds kept a checkpoint: no table for it. */
  dropRebuildCheckpoints(): Promise<void>;
}

const worlds: Array<{ name: string; open(): Promise<World> }> = [
  {
    name: 'SQLite',
    async open() {
      const path = tempDatabasePath('rebuild-resume');
      cleanups.push(() => removeDatabase(path));
      const backend = sqlite<TestEvent>({ path });
      cleanups.push(() => backend.close());
      const db = backend.store.database;
      const exists = (table: string) => db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(table) !== undefined;
      return {
        store: backend.store,
        admin: backend.admin,
        create: (s) => backend.views.create(s),
        view: (s) => new SqlView({ ...s, backend, logger: silentLogger }) as SqlView<TestEvent, SqlViewTx, void>,
        sum: async (table) => (exists(table) ? Number(db.prepare(`SELECT coalesce(sum(n), 0) FROM "${table}"`).pluck().get()) : undefined),
        ownedByOlderCode: async () => void db.prepare("UPDATE eskit_view_versions SET rebuild_id = 'older-code' WHERE name = 'tally'").run(),
        dropRebuildCheckpoints: async () => void db.exec('DROP TABLE eskit_view_shadows'),
      };
    },
  },
  {
    name: 'PostgreSQL',
    async open() {
      const schema = await createTestSchema({ create: false });
      cleanups.push(() => schema.drop());
      const backend = postgres<TestEvent>({ pool: schema.pool, schema: schema.name, leaderElection: false });
      cleanups.push(() => backend.close());
      const s = `"${schema.name}"`;
      return {
        store: backend.store,
        admin: backend.admin,
        create: (x) => backend.views.create(x),
        view: (x) => new SqlView({ ...x, backend, logger: silentLogger }) as unknown as SqlView<TestEvent, SqlViewTx, void>,
        async sum(table) {
          const found = await schema.pool.query('SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2', [schema.name, table]);
          if (found.rowCount === 0) return undefined;
          return Number((await schema.pool.query<{ n: string }>(`SELECT coalesce(sum(n), 0) AS n FROM ${s}."${table}"`)).rows[0]?.n);
        },
        ownedByOlderCode: async () => void (await schema.pool.query(`UPDATE ${s}.view_versions SET rebuild_id = 'older-code' WHERE name = 'tally'`)),
        dropRebuildCheckpoints: async () => void (await schema.pool.query(`DROP TABLE ${s}.view_shadows`)),
      };
    },
  },
];

/** 40 events: 30 counted, over three streams. */
async function appendEvents(store: EventStore<TestEvent>): Promise<Recorded<TestEvent>[]> {
  for (let i = 0; i < 10; i++) await store.append(`s-${i % 3}`, [counted(1), counted(2), other(), counted(3)]);
  const events: Recorded<TestEvent>[] = [];
  for await (const event of store.readAll({ types: ['Counted'] })) events.push(event);
  return events;
}

const fenced = (error: unknown): boolean => isEskitError(error, ErrorCode.Fenced);

/** What the admin surface (`eskit status`) says of the view's rebuild: its shadow checkpoint's position, or whether one runs without. */
async function shadowOf(w: World): Promise<{ rebuilding: boolean | undefined; position: number | undefined }> {
  const view = (await w.admin.views()).find((row) => row.name === 'tally');
  return { rebuilding: view?.rebuilding, position: view?.shadow?.position };
}

for (const world of worlds) {
  describe(`resumable rebuilds (${world.name}): the backend`, () => {
    it('a new rebuild takes over the shadow tables at their own checkpoint; the old rebuilder is fenced', async () => {
      const w = await world.open();
      const events = await appendEvents(w.store);
      const first = w.create(spec);
      await first.ensureSetup(1);
      assert.deepEqual(await first.beginRebuild('r1'), { generation: 1, resumeFrom: 0 });
      await first.applyShadow(events.slice(0, 10), 'r1', 1);
      await first.applyShadow(events.slice(10, 20), 'r1', 1);

      // Another process (another backend object) after the first one died.
      const second = w.create(spec);
      await second.ensureSetup(1);
      assert.deepEqual(await second.beginRebuild('r2'), { generation: 1, resumeFrom: (events[19] as Recorded<TestEvent>).position });
      assert.equal(await w.sum('tally__rebuild_1'), 20, 'the shadow rows are still there');
      await assert.rejects(first.applyShadow(events.slice(20), 'r1', 1), fenced);
      await second.applyShadow(events.slice(20), 'r2', 1);
      const swapped = await second.swap('r2', 1, (events[29] as Recorded<TestEvent>).position, 1, ['tally']);
      assert.notEqual(swapped, 'behind');
      assert.equal(await w.sum('tally'), 30);
      // The swap used the shadow's checkpoint up: the next rebuild starts over, one generation on.
      assert.deepEqual(await second.beginRebuild('r3'), { generation: 2, resumeFrom: 0 });
    });

    it('starts over when the shadow was built by other code, taken over by an older rebuilder, with fresh, or after an abandon', async () => {
      const w = await world.open();
      const events = await appendEvents(w.store);
      const mine = w.create(spec);
      await mine.ensureSetup(1);
      const tenIn = (events[9] as Recorded<TestEvent>).position;
      const begin = async (backend: SqlViewBackend<TestEvent>, id: string, options?: { fresh?: boolean }) => {
        const started = await backend.beginRebuild(id, options);
        await backend.applyShadow(events.slice(0, 10), id, 1);
        return started;
      };

      assert.equal((await begin(mine, 'a')).resumeFrom, 0);
      assert.equal((await begin(w.create(otherEvolve), 'b')).resumeFrom, 0, 'another evolve');
      assert.equal(await w.sum('tally__rebuild_1'), 20, "only the other evolve's rows (n: 2 each)");
      assert.equal((await begin(mine, 'c')).resumeFrom, 0, 'back to the first evolve');
      assert.equal(await w.sum('tally__rebuild_1'), 10);
      const version2 = { ...spec, setup: { ...spec.setup, version: 2 } };
      assert.equal((await begin(w.create(version2), 'd')).resumeFrom, 0, 'another setup version');
      const statements = { ...spec, setup: { version: 1, statements: (t: (name: string) => string) => [`CREATE TABLE ${t('tally')} (stream TEXT PRIMARY KEY, n BIGINT NOT NULL)`] } };
      assert.equal((await begin(w.create(statements), 'e')).resumeFrom, 0, 'other setup statements');
      assert.equal((await begin(w.create({ ...spec, types: ['Counted', 'Other'] }), 'f')).resumeFrom, 0, 'other types');

      assert.equal((await begin(mine, 'g')).resumeFrom, 0);
      assert.deepEqual(await mine.beginRebuild('h'), { generation: 1, resumeFrom: tenIn }, 'the same code resumes');
      assert.deepEqual(await shadowOf(w), { rebuilding: true, position: tenIn }, 'the admin shows where the taken-over shadow is');
      await w.ownedByOlderCode();
      assert.deepEqual(await shadowOf(w), { rebuilding: true, position: undefined }, "an older rebuilder's progress is not the shadow row's");
      assert.equal((await begin(mine, 'i')).resumeFrom, 0, 'an older rebuilder took the shadow over (and rebuilt it its way)');
      assert.equal((await begin(mine, 'j', { fresh: true })).resumeFrom, 0, 'fresh');
      assert.equal(await w.sum('tally__rebuild_1'), 10);

      await mine.abandonRebuild('j', 1);
      assert.equal(await w.sum('tally__rebuild_1'), undefined, 'an abandoned rebuild drops its shadow tables');
      assert.deepEqual(await shadowOf(w), { rebuilding: false, position: undefined });
      assert.deepEqual(await mine.beginRebuild('k'), { generation: 1, resumeFrom: 0 });
      // Abandoning a rebuild that is no longer ours changes nothing.
      await mine.applyShadow(events.slice(0, 10), 'k', 1);
      await mine.abandonRebuild('j', 1);
      assert.deepEqual(await mine.beginRebuild('l'), { generation: 1, resumeFrom: tenIn });
    });

    it('a database set up before rebuilds kept a checkpoint gets its table at ensureSetup', async () => {
      const w = await world.open();
      const events = await appendEvents(w.store);
      const backend = w.create(spec);
      await backend.ensureSetup(1);
      await backend.beginRebuild('old');
      await w.dropRebuildCheckpoints();
      assert.deepEqual(await shadowOf(w), { rebuilding: true, position: undefined }, 'the admin reads such a database too');
      const again = w.create(spec);
      await again.ensureSetup(1);
      assert.deepEqual(await again.beginRebuild('r1'), { generation: 1, resumeFrom: 0 });
      await again.applyShadow(events.slice(0, 5), 'r1', 1);
      assert.deepEqual(await again.beginRebuild('r2'), { generation: 1, resumeFrom: (events[4] as Recorded<TestEvent>).position });
    });
  });

  describe(`resumable rebuilds (${world.name}): SqlView.rebuild()`, () => {
    it('resumes from the shadow checkpoint, counts the events already there as done, and ends equal to a fresh build', async () => {
      const w = await world.open();
      const events = await appendEvents(w.store);
      const view = w.view(spec);
      const fresh = await view.rebuild({ batchSize: 7 });
      assert.equal(fresh.resumedFrom, 0);
      assert.equal(fresh.events, 30);

      // What a rebuild killed after twelve events leaves behind.
      const dead = w.create(spec);
      assert.deepEqual(await dead.beginRebuild('dead'), { generation: 2, resumeFrom: 0 });
      await dead.applyShadow(events.slice(0, 12), 'dead', 2);
      assert.deepEqual(await shadowOf(w), { rebuilding: true, position: (events[11] as Recorded<TestEvent>).position });

      const progress: RebuildProgress[] = [];
      const resumed = await view.rebuild({ batchSize: 7, onProgress: (p) => progress.push(p) });
      assert.equal(resumed.resumedFrom, (events[11] as Recorded<TestEvent>).position);
      assert.deepEqual(progress[0], { done: 12, total: 30 }, 'the events already in the shadow count as done from the start');
      assert.deepEqual(progress[progress.length - 1], { done: 30, total: 30 });
      assert.equal(resumed.events, 30);
      assert.equal(resumed.generation, 2);
      assert.equal(await w.sum('tally'), 30);
      assert.deepEqual(await shadowOf(w), { rebuilding: false, position: undefined }, 'swapped in: no shadow left');

      // fresh: true drops such a shadow and starts from zero.
      await dead.beginRebuild('dead again');
      await dead.applyShadow(events.slice(0, 12), 'dead again', 3);
      const restarted = await view.rebuild({ batchSize: 7, fresh: true });
      assert.equal(restarted.resumedFrom, 0);
      assert.equal(await w.sum('tally'), 30);

      // A rebuild that fails drops its shadow: the next one starts over.
      await dead.beginRebuild('dead once more');
      await dead.applyShadow(events.slice(0, 12), 'dead once more', 4);
      const controller = new AbortController();
      controller.abort(new Error('stop it'));
      await assert.rejects(view.rebuild({ signal: controller.signal }), /stop it/);
      assert.equal((await view.rebuild()).resumedFrom, (events[11] as Recorded<TestEvent>).position, 'aborted before it took the shadow over');
      await dead.beginRebuild('dead a fourth time');
      await dead.applyShadow(events.slice(0, 12), 'dead a fourth time', 5);
      let aborted = false;
      const abort = new AbortController();
      await assert.rejects(
        view.rebuild({
          batchSize: 5,
          signal: abort.signal,
          onProgress: () => {
            if (!aborted) abort.abort(new Error('stop it'));
            aborted = true;
          },
        }),
        /stop it/,
      );
      assert.equal(await w.sum('tally__rebuild_5'), undefined, 'the aborted rebuild dropped the shadow it took over');
      assert.equal((await view.rebuild()).resumedFrom, 0);
    });
  });
}
