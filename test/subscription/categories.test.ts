// A category filter reaches every kind of reader: subscriptions (also partitioned), automations,
// in-memory views and SQL views (live, waitFor on an event of another category, rebuild), on every
// adapter; and the category reads use the index (query plans on SQLite and PostgreSQL).
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { Automation } from '../../src/automation/index.js';
import type { Backend } from '../../src/core/backend.js';
import type { Recorded } from '../../src/core/event.js';
import { silentLogger } from '../../src/core/logger.js';
import { categoryOf } from '../../src/core/store.js';
import { memory } from '../../src/memory/index.js';
import { postgres } from '../../src/postgres/index.js';
import { sqlite } from '../../src/sqlite/index.js';
import { Subscription } from '../../src/subscription/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { MemoryView } from '../../src/view/index.js';
import { createTestSchema } from '../support/postgres.js';
import { databasesAfterEach } from '../sqlite/helpers.js';
import { counted, pgCounter, sqliteCounter } from '../view/helpers.js';
import type { TestEvent } from '../view/helpers.js';

const files = databasesAfterEach('categories');
let cleanups: Array<() => unknown> = [];
afterEach(async () => {
  const pending = cleanups.reverse();
  cleanups = [];
  for (const cleanup of pending) await cleanup();
});

/** Streams of 'order' and of look-alike categories, interleaved; returns the head. */
async function seed(backend: Backend<TestEvent>, rounds = 3): Promise<number> {
  let head = 0;
  for (let round = 1; round <= rounds; round++) {
    for (const streamId of ['order-1', 'orders-1', 'order-2', 'cart-1', 'order', 'orderx-1']) {
      head = (await backend.store.append(streamId, [counted(round)])).position;
    }
  }
  return head;
}

async function orderPositions(backend: Backend<TestEvent>): Promise<number[]> {
  const positions: number[] = [];
  for await (const event of backend.store.readAll()) if (categoryOf(event.streamId) === 'order') positions.push(event.position);
  return positions;
}

type Make = () => Promise<Backend<TestEvent>>;
const adapters: Array<[string, Make]> = [
  ['memory', async () => memory<TestEvent>()],
  ['SQLite', async () => sqlite<TestEvent>({ path: files.freshPath() })],
  [
    'PostgreSQL',
    async () => {
      const schema = await createTestSchema({ create: false });
      cleanups.push(() => schema.drop());
      const backend = postgres<TestEvent>({ pool: schema.pool, schema: schema.name, leaderElection: false });
      await backend.migrate();
      return backend;
    },
  ],
];

for (const [adapter, make] of adapters) {
  describe(`category filters on ${adapter}`, () => {
    it('a subscription, a partitioned one and an automation get the events of their category only, new ones included', async () => {
      const backend = await make();
      cleanups.push(() => backend.close());
      await seed(backend);
      const plain: number[] = [];
      const partitioned: number[] = [];
      const triggered: number[] = [];
      const subscription = new Subscription<TestEvent>({ backend, name: 'plain', category: 'order', handler: (event) => void plain.push(event.position), logger: silentLogger, leaderLock: false });
      const lanes = new Subscription<TestEvent>({
        backend,
        name: 'lanes',
        category: 'order',
        partitions: 2,
        handler: (event) => void partitioned.push(event.position),
        logger: silentLogger,
        leaderLock: false,
      });
      const automation = new Automation<TestEvent, number>({
        backend,
        name: 'mailer',
        category: 'order',
        trigger: (event) => ({ key: event.streamId, payload: event.position }),
        execute: (item) => void triggered.push(item.payload),
        logger: silentLogger,
        leaderLock: false,
      });
      for (const runner of [subscription, lanes, automation]) {
        cleanups.push(() => runner.stop());
        await runner.start();
      }
      await seed(backend, 2);
      const expected = await orderPositions(backend);
      await waitUntil(() => plain.length >= expected.length && partitioned.length >= expected.length && triggered.length >= expected.length, {
        timeoutMs: 20_000,
        message: 'every order event delivered',
      });
      assert.deepEqual(plain, expected);
      assert.deepEqual([...partitioned].sort((a, b) => a - b), expected);
      assert.deepEqual([...triggered].sort((a, b) => a - b), expected);
    });

    it('a view of a category folds only its streams, and waitFor an event of another category returns', async () => {
      const backend = await make();
      cleanups.push(() => backend.close());
      await seed(backend);
      const view = new MemoryView<Record<string, number>, TestEvent>({
        name: 'orders',
        store: backend.store,
        category: 'order',
        initialState: {},
        evolve: (state, event: Recorded<TestEvent>) => ({ ...state, [event.streamId]: (state[event.streamId] ?? 0) + 1 }),
        logger: silentLogger,
      });
      cleanups.push(() => view.stop());
      await view.start();
      const head = await seed(backend, 1);
      // The head is an event of 'orderx': the view never applies it, and waitFor must not wait for it.
      await view.waitFor(head, { timeoutMs: 10_000 });
      assert.deepEqual(view.state, { 'order-1': 4, 'order-2': 4, order: 4 });
    });
  });
}

describe('category filters on SQL views', () => {
  it('SQLite: live and rebuilt, only the category; waitFor an event of another category returns', async () => {
    const backend = sqlite<TestEvent>({ path: files.freshPath() });
    cleanups.push(() => backend.close());
    await seed(backend);
    const view = sqliteCounter(backend, { category: 'order', leaderLock: false });
    cleanups.push(() => view.stop());
    await view.start();
    const head = await seed(backend, 1);
    await view.waitFor(head, { timeoutMs: 10_000 });
    const expected = { 'order-1': 4, 'order-2': 4, order: 4 };
    const counts = (): Record<string, number> =>
      Object.fromEntries((backend.database.prepare('SELECT stream, events FROM counts').raw().all() as [string, number][]).map(([stream, events]) => [stream, events]));
    assert.deepEqual(counts(), expected);
    await view.rebuild();
    assert.deepEqual(counts(), expected);
  });

  it('PostgreSQL: live and rebuilt, only the category; waitFor an event of another category returns', async () => {
    const schema = await createTestSchema({ create: false });
    cleanups.push(() => schema.drop());
    const backend = postgres<TestEvent>({ pool: schema.pool, schema: schema.name, leaderElection: false });
    cleanups.push(() => backend.close());
    await backend.migrate();
    await seed(backend);
    const view = pgCounter(backend, { category: 'order' });
    cleanups.push(() => view.stop());
    await view.start();
    const head = await seed(backend, 1);
    await view.waitFor(head, { timeoutMs: 10_000 });
    const expected = { 'order-1': 4, 'order-2': 4, order: 4 };
    const counts = async (): Promise<Record<string, number>> =>
      Object.fromEntries((await schema.pool.query<{ stream: string; events: string }>(`SELECT stream, events FROM "${schema.name}".counts`)).rows.map((row) => [row.stream, Number(row.events)]));
    assert.deepEqual(await counts(), expected);
    await view.rebuild();
    assert.deepEqual(await counts(), expected);
  });
});

describe('category reads use the index', () => {
  it('SQLite plans the category read (alone and with types) on the category index', async () => {
    const backend = sqlite<TestEvent>({ path: files.freshPath() });
    cleanups.push(() => backend.close());
    const category = "(CASE WHEN instr(stream_id, '-') > 0 THEN substr(stream_id, 1, instr(stream_id, '-') - 1) ELSE stream_id END)";
    for (const [sql, parameters] of [
      [`SELECT * FROM eskit_events WHERE ${category} = ? AND position > ? ORDER BY position LIMIT ?`, ['order', 0, 10]],
      [`SELECT * FROM eskit_events WHERE ${category} = ? AND position > ? AND +type IN (SELECT value FROM json_each(?)) ORDER BY position LIMIT ?`, ['order', 0, '["A"]', 10]],
    ] as const) {
      const plan = backend.database.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...parameters).map((row) => (row as { detail: string }).detail).join('\n');
      assert.match(plan, /USING INDEX eskit_events_category_position/, plan);
      assert.doesNotMatch(plan, /TEMP B-TREE/, `no sort: ${plan}`);
    }
  });

  it('PostgreSQL plans a small category on its index and a large one by position, planning each read for its category', async () => {
    const schema = await createTestSchema({ create: false });
    cleanups.push(() => schema.drop());
    const backend = postgres<TestEvent>({ pool: schema.pool, schema: schema.name, leaderElection: false });
    cleanups.push(() => backend.close());
    await backend.migrate();
    // 'order' is 1% of the log, 'cart' the rest.
    await schema.pool.query(
      `INSERT INTO "${schema.name}".events (position, id, stream_id, stream_version, type, data, metadata, created_at)
       SELECT i, gen_random_uuid(), (CASE WHEN i % 100 = 0 THEN 'order-' ELSE 'cart-' END) || i, 1, 'A', '{}', '{}', now() FROM generate_series(1, 20000) AS i`,
    );
    await schema.pool.query(`ANALYZE "${schema.name}".events`);
    // The statement the store sends is unnamed, so each read is planned for its own category: a named
    // one would switch to a generic plan after five runs, one way for every category.
    const plan = async (category: string): Promise<string> =>
      (
        await schema.pool.query<{ 'QUERY PLAN': string }>(
          `EXPLAIN SELECT * FROM "${schema.name}".events WHERE split_part(stream_id, '-', 1) = $1 AND position > 0 ORDER BY position LIMIT 500`,
          [category],
        )
      ).rows
        .map((row) => row['QUERY PLAN'])
        .join('\n');
    for (let i = 0; i < 8; i++) assert.match(await plan('order'), /events_category_position/, 'a small category walks its index');
    assert.doesNotMatch(await plan('cart'), /events_category_position/, 'a large one walks positions');
    const read: number[] = [];
    for await (const event of backend.store.readAll({ category: 'order', raw: true })) read.push(event.position);
    assert.equal(read.length, 200);
  });
});
