// SqlView on the one-call backends: `new SqlView({ backend, name, setup, evolve })` with evolve's
// transaction typed by the backend, leader election taken from the backend (on for postgres()) unless
// `leaderLock: false`, and MemoryView on memory().
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import { silentLogger } from '../../src/core/logger.js';
import { memory } from '../../src/memory/index.js';
import { postgres } from '../../src/postgres/index.js';
import type { PostgresBackend } from '../../src/postgres/index.js';
import { sqlite } from '../../src/sqlite/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { MemoryView, SqlView } from '../../src/view/index.js';
import type { SqlViewSetup } from '../../src/view/index.js';
import { databasesAfterEach } from '../sqlite/helpers.js';
import { createTestSchema } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';
import { counted, other } from './helpers.js';
import type { TestEvent } from './helpers.js';

const files = databasesAfterEach('sql-view-backend');
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const setup: SqlViewSetup = { version: 1, statements: (t) => [`CREATE TABLE ${t('totals')} (stream TEXT PRIMARY KEY, total INTEGER NOT NULL)`] };

async function pgSchema(): Promise<TestSchema> {
  const schema = await createTestSchema({ create: false });
  cleanups.push(() => schema.drop());
  return schema;
}

function pgBackend(schema: TestSchema, leaderElection = true): PostgresBackend<TestEvent> {
  const backend = postgres<TestEvent>({ pool: schema.pool, schema: schema.name, logger: silentLogger, leaderElection });
  cleanups.push(() => backend.close());
  return backend;
}

describe('SqlView on sqlite()', () => {
  it('takes the backend: evolve gets { db, table, prepare, upsert }, and no leader election by default', async () => {
    const backend = sqlite<TestEvent>({ path: files.freshPath() });
    files.closeAfterTest(() => backend.close());
    const view = new SqlView({
      backend,
      name: 'totals',
      types: ['Counted'],
      logger: silentLogger,
      setup,
      evolve: (event, tx) => {
        // @ts-expect-error a SQLite transaction has no pg client
        void tx.client;
        if (event.type === 'Counted') tx.upsert('totals', { stream: event.streamId, total: event.data.n }, { key: ['stream'], increment: ['total'] });
      },
    });
    files.closeAfterTest(() => view.stop());
    await backend.store.append('a', [counted(2), other(), counted(3)]);
    const { position } = await backend.store.append('b', [counted(5)]);
    await view.start();
    await view.waitFor(position);
    assert.deepEqual(backend.database.prepare(`SELECT stream, total FROM ${view.table('totals')} ORDER BY stream`).all(), [
      { stream: 'a', total: 5 },
      { stream: 'b', total: 5 },
    ]);
    const status = await view.status();
    assert.equal(status.state, 'leading');
    assert.equal(status.fencingToken, undefined);
  });

  it('takes evolveBatch: a batch of events per call, in one transaction with the checkpoint', async () => {
    const backend = sqlite<TestEvent>({ path: files.freshPath() });
    files.closeAfterTest(() => backend.close());
    const sizes: number[] = [];
    const view = new SqlView({
      backend,
      name: 'totals',
      types: ['Counted'],
      batchSize: 10,
      logger: silentLogger,
      setup,
      evolveBatch: (events, { prepare, table }) => {
        sizes.push(events.length);
        const add = prepare(`INSERT INTO ${table('totals')} (stream, total) VALUES (?, ?) ON CONFLICT (stream) DO UPDATE SET total = total + excluded.total`);
        for (const event of events) if (event.type === 'Counted') add.run(event.streamId, event.data.n);
      },
    });
    files.closeAfterTest(() => view.stop());
    let position = 0;
    for (let i = 0; i < 25; i++) position = (await backend.store.append(`s-${i % 3}`, [counted(1)])).position;
    await view.start();
    await view.waitFor(position);
    assert.equal(backend.database.prepare(`SELECT sum(total) AS n FROM ${view.table('totals')}`).pluck().get(), 25);
    assert.ok(sizes.some((size) => size > 1), `evolveBatch got batches, not single events: ${sizes.join(', ')}`);
    assert.throws(
      () => new SqlView({ backend, name: 'both', setup, evolve: () => undefined, evolveBatch: () => undefined }),
      (error: unknown) => isEskitError(error, ErrorCode.InvalidArgument) && /evolve or evolveBatch, not both/.test((error as Error).message),
    );
  });

  it('elects a leader when the backend has leader election on, unless leaderLock is false', async () => {
    const path = files.freshPath();
    const backend = sqlite<TestEvent>({ path, leaderElection: true });
    files.closeAfterTest(() => backend.close());
    const elected = new SqlView({ backend, name: 'elected', logger: silentLogger, setup, evolve: () => undefined });
    const otherTables: SqlViewSetup = { version: 1, statements: (t) => [`CREATE TABLE ${t('others')} (id TEXT PRIMARY KEY)`] };
    const unelected = new SqlView({ backend, name: 'unelected', leaderLock: false, logger: silentLogger, setup: otherTables, evolve: () => undefined });
    files.closeAfterTest(() => elected.stop());
    files.closeAfterTest(() => unelected.stop());
    await elected.start();
    await unelected.start();
    await waitUntil(async () => (await elected.status()).fencingToken !== undefined, { timeoutMs: 5000, message: 'the view to lead with a token' });
    assert.equal((await elected.status()).state, 'leading');
    await waitUntil(async () => (await unelected.status()).state === 'leading', { timeoutMs: 5000, message: 'the view without election to run' });
    assert.equal((await unelected.status()).fencingToken, undefined);
  });

  it('refuses a backend without SQL views (memory()), and no backend, saying which backends have them', () => {
    assert.throws(
      () => new SqlView({ name: 'totals', setup, evolve: () => undefined } as never),
      (error: unknown) => isEskitError(error, ErrorCode.InvalidArgument) && /needs a backend: sqlite\(\{ path \}\) or postgres/.test((error as Error).message),
    );
    const backend = memory<TestEvent>();
    assert.throws(
      () => new SqlView({ backend: backend as never, name: 'totals', setup, evolve: () => undefined }),
      (error: unknown) => isEskitError(error, ErrorCode.InvalidArgument) && /has no SQL views.*sqlite\(\{ path \}\) or postgres\(\{ connectionString \}\)/.test((error as Error).message),
    );
  });
});

describe('SqlView on postgres()', () => {
  it('takes the backend: evolve gets { client, table, upsert, flush }, with leader election on by default', async () => {
    const schema = await pgSchema();
    const backend = pgBackend(schema);
    const second = pgBackend(schema);
    assert.notEqual(backend.locks, undefined);
    const build = (on: PostgresBackend<TestEvent>) =>
      new SqlView({
        backend: on,
        name: 'totals',
        types: ['Counted'],
        logger: silentLogger,
        setup,
        evolve: async (event, tx) => {
          // @ts-expect-error a PostgreSQL transaction has no prepare (that is SQLite's)
          void tx.prepare;
          if (event.type !== 'Counted') return;
          tx.upsert('totals', { stream: event.streamId, total: event.data.n }, { key: ['stream'], increment: ['total'] });
          await tx.flush();
          await tx.client.query('SELECT 1');
        },
      });
    const leader = build(backend);
    const standby = build(second);
    cleanups.push(() => standby.stop(), () => leader.stop());
    await leader.start();
    await waitUntil(async () => (await leader.status()).state === 'leading', { timeoutMs: 10_000, message: 'the first view to lead' });
    await standby.start();
    await waitUntil(async () => (await standby.status()).lockDenied, { timeoutMs: 10_000, message: 'the second view to stand by' });
    assert.equal((await standby.status()).state, 'standby');
    assert.notEqual((await leader.status()).fencingToken, undefined);
    await backend.store.append('a', [counted(2), counted(3)]);
    const { position } = await backend.store.append('b', [counted(4)]);
    await standby.waitFor(position);
    const rows = await schema.pool.query(`SELECT stream, total FROM ${leader.table('totals')} ORDER BY stream`);
    assert.deepEqual(rows.rows, [
      { stream: 'a', total: 5 },
      { stream: 'b', total: 4 },
    ]);
  });

  it('runs without leader election with leaderLock: false', async () => {
    const schema = await pgSchema();
    const backend = pgBackend(schema);
    const view = new SqlView({ backend, name: 'totals', leaderLock: false, logger: silentLogger, setup, evolve: () => undefined });
    cleanups.push(() => view.stop());
    await view.start();
    await waitUntil(async () => (await view.status()).state === 'leading', { timeoutMs: 10_000, message: 'the view to run' });
    assert.equal((await view.status()).fencingToken, undefined);
  });
});

describe('MemoryView on memory()', () => {
  it('takes { backend } instead of a store', async () => {
    const backend = memory<TestEvent>();
    cleanups.push(() => backend.close());
    const view = new MemoryView<number, TestEvent>({
      backend,
      name: 'sum',
      logger: silentLogger,
      initialState: 0,
      evolve: (sum, event) => (event.type === 'Counted' ? sum + event.data.n : sum),
    });
    cleanups.push(() => view.stop());
    const { position } = await backend.store.append('a', [counted(2), other(), counted(5)]);
    await view.start();
    await view.waitFor(position);
    assert.equal(view.state, 7);
  });
});
