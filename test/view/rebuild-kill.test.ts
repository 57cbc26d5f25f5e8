// A rebuild SIGKILLed at 60 % resumes from its shadow tables' own checkpoint, not from zero, and ends
// equal to a fresh build. The killed process hangs inside a shadow batch (its transaction open, rows
// written for the earlier events of the batch): none of that batch may stay, so the resumed rebuild
// must start exactly after the last batch that committed. The live view keeps serving throughout.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { Recorded } from '../../src/core/event.js';
import type { EventStore } from '../../src/core/store.js';
import { postgres } from '../../src/postgres/index.js';
import type { PostgresEventStore } from '../../src/postgres/index.js';
import { sqlite } from '../../src/sqlite/index.js';
import type { RebuildProgress, RebuildResult } from '../../src/view/index.js';
import { ChildNode, fixturePath, killAll } from '../support/processes.js';
import { removeDatabase, tempDatabasePath } from '../sqlite/helpers.js';
import { createTestSchema } from '../support/postgres.js';
import { appendMany, counted, expectedPgCounter, expectedSqliteCounter, other, pgCounter, readPgCounter, readSqliteCounter, sqliteCounter } from './helpers.js';
import type { CounterState, TestEvent } from './helpers.js';

type Line = { ev: 'progress'; done: number; total: number } | { ev: 'blocking'; position: number } | ({ ev: 'rebuilt' } & RebuildResult);

const NODE = fixturePath('./fixtures/rebuild-node.ts', import.meta.url);
const EVENTS = 3000;
/** Every fifth event is of a type the view skips. */
const RELEVANT = 2400;
const BATCH = 50;
/** The counted event the killed rebuild hangs on: 60 % in, inside a batch (the 29th, 1401-1450). */
const KILL_AT = 1440;
const COMMITTED = 1400;

const nodes: ChildNode<Line>[] = [];
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  await killAll(nodes.splice(0));
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** The counting view of helpers.ts, as either backend makes it. */
interface Counter {
  start(): Promise<void>;
  stop(): Promise<void>;
  waitFor(position: number, options?: { timeoutMs?: number }): Promise<void>;
  rebuild(options: { batchSize: number; onProgress: (progress: RebuildProgress) => void }): Promise<RebuildResult>;
}

interface World {
  backend: 'sqlite' | 'postgres';
  target: string;
  store: EventStore<TestEvent>;
  /**
   * The view as the fixture rebuilds it (evolve per event, so that the killed batch had written rows),
   * or, to `follow` the log (the live view, the fresh build), as fast as the backend goes.
   */
  counter(options?: { name?: string; prefix?: string; before?: (event: Recorded<TestEvent>) => void; follow?: boolean }): Counter;
  /** What the view (tables `<prefix>...`) holds, and its rows per stream. */
  read(prefix?: string): Promise<{ state: CounterState; rows: unknown[] }>;
  /** What it must hold, from the events. */
  expected(): Promise<CounterState>;
  /** The position of the k-th counted event (1-based). */
  relevant(k: number): Promise<number>;
}

async function killAndResume(w: World): Promise<void> {
  const live = w.counter({ follow: true });
  cleanups.push(() => live.stop());
  await live.start();
  await live.waitFor(await w.store.headPosition(), { timeoutMs: 20_000 });

  const blockAt = await w.relevant(KILL_AT);
  const node = new ChildNode<Line>('rebuild node', NODE, [w.backend, w.target, String(blockAt), String(BATCH)]);
  nodes.push(node);
  await node.waitFor((line) => line.ev === 'blocking', `the rebuild to reach position ${blockAt}`, { timeoutMs: 30_000 });
  const reported = node.find((line) => line.ev === 'progress').at(-1) as Extract<Line, { ev: 'progress' }>;
  assert.deepEqual(reported, { ev: 'progress', done: COMMITTED, total: RELEVANT }, 'the killed rebuild got 60 % through');
  node.kill('SIGKILL');
  assert.equal((await node.exited).signal, 'SIGKILL');

  // The live view serves and follows the log while the dead rebuild's shadow tables lie around.
  const { position } = await w.store.append('after-kill', [counted(4), other(), counted(5)]);
  await live.waitFor(position);
  assert.deepEqual((await w.read()).state, await w.expected());

  let applied = 0;
  const resumer = w.counter({ before: () => void (applied += 1) });
  const progress: RebuildProgress[] = [];
  const result = await resumer.rebuild({ batchSize: BATCH, onProgress: (p) => progress.push(p) });
  const total = RELEVANT + 2;
  assert.equal(result.resumedFrom, await w.relevant(COMMITTED), 'resumed right after the last batch that committed');
  assert.equal(applied, total - COMMITTED, 'replayed only what the shadow did not hold');
  assert.deepEqual(progress[0], { done: COMMITTED, total });
  assert.equal(result.events, total);
  assert.equal(result.generation, 1);

  // Equal to a fresh build, and to what the events say; the live runner carries on on the new tables.
  const head = await w.store.headPosition();
  const fresh = w.counter({ name: 'fresh', prefix: 'fresh_', follow: true });
  cleanups.push(() => fresh.stop());
  await fresh.start();
  await fresh.waitFor(head, { timeoutMs: 20_000 });
  const rebuilt = await w.read();
  assert.deepEqual(rebuilt, await w.read('fresh_'));
  assert.deepEqual(rebuilt.state, await w.expected());
  const after = await w.store.append('after-rebuild', [counted(6)]);
  await live.waitFor(after.position);
  assert.deepEqual((await w.read()).state, await w.expected());
}

describe('views: a rebuild killed at 60 % resumes from its shadow checkpoint', () => {
  it('SQLite', async () => {
    const path = tempDatabasePath('rebuild-kill');
    cleanups.push(() => removeDatabase(path));
    const backend = sqlite<TestEvent>({ path });
    cleanups.push(() => backend.close());
    const { store } = backend;
    await appendMany(store, EVENTS);
    const db = store.database;
    await killAndResume({
      backend: 'sqlite',
      target: path,
      store,
      // SQLite's evolve is as fast either way.
      counter: ({ follow: _follow, ...options } = {}) => sqliteCounter(backend, { batchSize: 500, ...options }),
      async read(prefix = '') {
        return { state: readSqliteCounter(db, prefix), rows: db.prepare(`SELECT stream, events, total FROM "${prefix}counts" ORDER BY stream`).all() };
      },
      expected: async () => expectedSqliteCounter(db),
      relevant: async (k) => db.prepare("SELECT position FROM eskit_events WHERE type = 'Counted' ORDER BY position LIMIT 1 OFFSET ?").pluck().get(k - 1) as number,
    });
  });

  it('PostgreSQL', async () => {
    const schema = await createTestSchema({ create: false, poolSize: 8 });
    cleanups.push(() => schema.drop());
    const backend = postgres<TestEvent>({ pool: schema.pool, schema: schema.name, leaderElection: false });
    cleanups.push(() => backend.close());
    const store: PostgresEventStore<TestEvent> = backend.store;
    await appendMany(store, EVENTS);
    const s = `"${schema.name}"`;
    await killAndResume({
      backend: 'postgres',
      target: schema.name,
      store,
      // One statement per table and batch (evolveBatch) to follow; the fixture's evolve to rebuild.
      counter: ({ follow, ...options } = {}) => pgCounter(backend, { batchSize: 500, batched: follow === true, ...options }),
      async read(prefix = '') {
        const rows = await schema.pool.query(`SELECT stream, events::int, total::int FROM ${s}."${prefix}counts" ORDER BY stream`);
        return { state: await readPgCounter(schema.pool, schema.name, prefix), rows: rows.rows };
      },
      expected: () => expectedPgCounter(schema.pool, schema.name),
      async relevant(k) {
        const result = await schema.pool.query<{ position: string }>(`SELECT position FROM ${s}.events WHERE type = 'Counted' ORDER BY position LIMIT 1 OFFSET $1`, [k - 1]);
        return Number(result.rows[0]?.position);
      },
    });
  });
});
