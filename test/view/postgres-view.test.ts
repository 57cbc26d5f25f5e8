import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import { MemoryDeadLetterStore } from '../../src/memory/index.js';
import { postgres } from '../../src/postgres/index.js';
import type { PostgresBackend, PostgresEventStore } from '../../src/postgres/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { waitFor } from '../../src/view/index.js';
import { createTestSchema } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';
import { appendMany, counted, expectedPgCounter, fixedLeases, other, pgCounter, readPgCounter } from './helpers.js';
import type { CounterState, TestEvent } from './helpers.js';

let cleanups: Array<() => unknown> = [];
afterEach(async () => {
  const pending = cleanups.reverse();
  cleanups = [];
  for (const cleanup of pending) await cleanup();
});

async function setup(poolSize = 8): Promise<{ schema: TestSchema; backend: PostgresBackend<TestEvent>; store: PostgresEventStore<TestEvent> }> {
  const schema = await createTestSchema({ create: false, poolSize });
  cleanups.push(() => schema.drop());
  // Leader election is tested with chosen tokens (fixedLeases) here; sql-view-backend.test.ts has the backend's.
  const backend = postgres<TestEvent>({ pool: schema.pool, schema: schema.name, leaderElection: false });
  cleanups.push(() => backend.close());
  await backend.migrate();
  return { schema, backend, store: backend.store };
}

function track<V extends { stop(): Promise<void> }>(view: V): V {
  cleanups.push(() => view.stop());
  return view;
}

async function checkpointRow(schema: TestSchema, name = 'counter'): Promise<{ position: number | null; token: number } | undefined> {
  const result = await schema.pool.query<{ position: string | null; fencing_token: string }>(
    `SELECT position, fencing_token FROM "${schema.name}".checkpoints WHERE name = $1`,
    [name],
  );
  const row = result.rows[0];
  return row && { position: row.position === null ? null : Number(row.position), token: Number(row.fencing_token) };
}

describe('SqlView on PostgreSQL: exactly once', () => {
  it('applies every event of its types once, with the checkpoint in the same transaction', async () => {
    const { schema, backend, store } = await setup();
    const head = await appendMany(store, 420);
    const view = track(pgCounter(backend, { batchSize: 32 }));
    await view.start();
    await view.waitFor(head);
    assert.deepEqual(await readPgCounter(schema.pool, schema.name), await expectedPgCounter(schema.pool, schema.name));
    assert.equal(view.table('counts'), `"${schema.name}"."counts"`);
    assert.equal(await view.storedVersion(), 1);
    await view.stop();
    const more = await appendMany(store, 50);
    await view.start();
    await view.waitFor(more);
    assert.deepEqual(await readPgCounter(schema.pool, schema.name), await expectedPgCounter(schema.pool, schema.name));
  });
});

describe('SqlView on PostgreSQL: evolveBatch', () => {
  it('applies whole batches in one statement per table; a failing batch is pinned to its event and dead-lettered', async () => {
    const { schema, backend, store } = await setup();
    const deadLetters = new MemoryDeadLetterStore();
    await appendMany(store, 300);
    const bad = (await store.append('bad', [counted(1000, true)])).position;
    const head = await appendMany(store, 100);
    const view = track(pgCounter(backend, { batched: true, batchSize: 64, throwOnBad: true, deadLetters }));
    await view.start();
    await view.waitFor(head);
    assert.deepEqual(
      (await deadLetters.list({ source: 'counter' })).map((letter) => letter.eventPosition),
      [bad],
    );
    const expected = await expectedPgCounter(schema.pool, schema.name);
    assert.deepEqual(await readPgCounter(schema.pool, schema.name), { seen: expected.seen - 1, distinct: expected.seen - 1, events: expected.seen - 1, total: expected.total - 1000 });
    assert.throws(() => pgCounter(backend, { batched: true, evolve: async () => undefined } as never), /evolve or evolveBatch, not both/);
  });
});

describe('SqlView on PostgreSQL: a failing evolve', () => {
  it('rolls back and stops the view (state failed) without a dead-letter store', async () => {
    const { schema, backend, store } = await setup();
    await store.append('a', [counted(1), counted(2)]);
    const bad = (await store.append('a', [counted(3, true)])).position;
    await store.append('a', [counted(4)]);
    const view = track(pgCounter(backend, { throwOnBad: true }));
    await view.start();
    const status = await view.whenStopped();
    assert.equal(status.state, 'failed');
    assert.ok(isEskitError(status.error, ErrorCode.HandlerFailed), String(status.error));
    assert.deepEqual(await readPgCounter(schema.pool, schema.name), await expectedPgCounter(schema.pool, schema.name, bad - 1));
    assert.equal((await checkpointRow(schema))?.position, bad - 1);
  });

  it('dead-letters the event and goes on with a dead-letter store', async () => {
    const { schema, backend, store } = await setup();
    const deadLetters = new MemoryDeadLetterStore();
    await store.append('a', [counted(1), counted(2)]);
    const bad = (await store.append('b', [counted(40, true)])).position;
    const head = (await store.append('a', [counted(3), other(), counted(5)])).position;
    const view = track(pgCounter(backend, { throwOnBad: true, deadLetters }));
    await view.start();
    await view.waitFor(head);
    assert.deepEqual(
      (await deadLetters.list({ source: 'counter' })).map((letter) => letter.eventPosition),
      [bad],
    );
    assert.deepEqual(await readPgCounter(schema.pool, schema.name), { seen: 4, distinct: 4, events: 4, total: 11 });
  });
});

describe('SqlView on PostgreSQL: fencing', () => {
  it("a stale leader's batch is rejected at its checkpoint write and its view writes are rolled back", async () => {
    const { schema, backend, store } = await setup();
    await appendMany(store, 20, { otherEvery: 1000 });
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const attempts: number[] = [];
    const stale = track(
      pgCounter(backend, {
        leaderLock: fixedLeases([1]),
        before: async (event) => {
          attempts.push(event.position);
          // Hang in the middle of the batch, after the first late event's rows were written.
          if (event.position === 22) await gate;
        },
      }),
    );
    await stale.start();
    await stale.waitFor(20);
    await store.append('late', [counted(100), counted(200), counted(300)]);
    await waitUntil(() => attempts.includes(22), { message: 'the stale node to be inside its batch' });

    const leader = track(pgCounter(backend, { leaderLock: fixedLeases([2]) }));
    await leader.start();
    await waitUntil(async () => (await checkpointRow(schema))?.token === 2, { message: 'the new leader to claim the checkpoint' });
    release();
    await leader.waitFor(23, { timeoutMs: 10_000 });
    await waitUntil(async () => (await stale.status()).state === 'standby', { message: 'the stale node to give up' });
    assert.deepEqual(await readPgCounter(schema.pool, schema.name), await expectedPgCounter(schema.pool, schema.name));
    assert.deepEqual(await checkpointRow(schema), { position: 23, token: 2 });
  });
});

describe('SqlView on PostgreSQL: waitFor and changes', () => {
  it('resolves right after an append; follows another instance; notifies listeners with keys', async () => {
    const { schema, backend, store } = await setup();
    const view = track(pgCounter(backend, { keysOf: (event) => event.streamId }));
    await view.start();
    const observer = pgCounter(backend, { checkpointPollMs: 10 });
    const keys = new Set<string>();
    const unsubscribe = view.changes.subscribe((change) => change.keys?.forEach((key) => keys.add(key)));
    cleanups.push(unsubscribe);
    for (let i = 1; i <= 10; i++) {
      const { position } = await store.append(`w-${i}`, [counted(i)]);
      await waitFor(view, position, { timeoutMs: 2000 });
      assert.equal((await readPgCounter(schema.pool, schema.name)).seen, i);
      await observer.waitFor(position, { timeoutMs: 2000 });
    }
    const { position } = await store.append('o', [other()]);
    await view.waitFor(position, { timeoutMs: 200 });
    await waitUntil(() => keys.size === 10, { message: 'the listener to hear of every stream' });
    const idle = pgCounter(backend, { name: 'never-started' });
    await assert.rejects(idle.waitFor(position, { timeoutMs: 50 }), (error: unknown) => isEskitError(error, ErrorCode.Timeout));
  });
});

describe('SqlView on PostgreSQL: rebuild', () => {
  it('rebuilds while writes continue, ends equal to a fresh build, and readers never see a half-built view', async () => {
    const { schema, backend, store } = await setup();
    await appendMany(store, 1500, { batch: 100 });
    const view = track(pgCounter(backend, { batchSize: 50 }));
    await view.start();
    await view.waitFor(await store.headPosition(), { timeoutMs: 20_000 });
    const s = `"${schema.name}"`;
    // One statement, one snapshot: the view must hold exactly the events up to its checkpoint.
    const consistency = `
      WITH cp AS (SELECT coalesce((SELECT position FROM ${s}.checkpoints WHERE name = 'counter'), 0) AS p)
      SELECT cp.p,
             (SELECT count(*) FROM ${s}.seen), (SELECT count(DISTINCT position) FROM ${s}.seen),
             (SELECT coalesce(sum(events), 0) FROM ${s}.counts), (SELECT coalesce(sum(total), 0) FROM ${s}.counts),
             (SELECT count(*) FROM ${s}.events WHERE type = 'Counted' AND position <= cp.p),
             (SELECT coalesce(sum((data->>'n')::bigint), 0) FROM ${s}.events WHERE type = 'Counted' AND position <= cp.p)
      FROM cp`;
    let reading = true;
    let reads = 0;
    const violations: unknown[] = [];
    const readers = (async () => {
      while (reading) {
        const result = await schema.pool.query<string[]>({ rowMode: 'array', text: consistency });
        const [p, seen, distinct, events, total, count, sum] = (result.rows[0] as string[]).map(Number) as number[];
        const actual: CounterState = { seen: seen as number, distinct: distinct as number, events: events as number, total: total as number };
        const expected: CounterState = { seen: count as number, distinct: count as number, events: count as number, total: sum as number };
        if (JSON.stringify(actual) !== JSON.stringify(expected)) violations.push({ p, actual, expected });
        reads += 1;
      }
    })();
    let writing = true;
    let written = 0;
    const writer = (async () => {
      while (writing) {
        await store.append(`live-${written % 5}`, [counted(written % 9), other()]);
        written += 1;
      }
    })();
    const progress: Array<{ done: number; total: number }> = [];
    const result = await view.rebuild({ batchSize: 100, onProgress: (p) => progress.push(p) });
    const writtenDuringRebuild = written;
    writing = false;
    await writer;
    const head = await store.headPosition();
    await view.waitFor(head, { timeoutMs: 20_000 });
    reading = false;
    await readers;

    assert.deepEqual(violations, []);
    assert.ok(reads > 5, `readers read (${reads})`);
    assert.ok(writtenDuringRebuild > 0, 'appends went on during the rebuild');
    assert.deepEqual(progress[progress.length - 1], { done: result.events, total: result.events });
    assert.equal(result.generation, 1);
    const fresh = track(pgCounter(backend, { name: 'fresh', prefix: 'fresh_' }));
    await fresh.start();
    await fresh.waitFor(head, { timeoutMs: 20_000 });
    assert.deepEqual(await readPgCounter(schema.pool, schema.name), await readPgCounter(schema.pool, schema.name, 'fresh_'));
    const rows = async (prefix: string) => (await schema.pool.query(`SELECT stream, events, total FROM ${s}."${prefix}counts" ORDER BY stream`)).rows;
    assert.deepEqual(await rows(''), await rows('fresh_'));
    assert.deepEqual(await readPgCounter(schema.pool, schema.name), await expectedPgCounter(schema.pool, schema.name));
    const leftovers = await schema.pool.query(`SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND relname LIKE '%rebuild%' AND relkind = 'r'`, [
      schema.name,
    ]);
    assert.deepEqual(leftovers.rows, []);
    assert.equal((await view.status()).state, 'leading');
  });

  it('a changed setup version: start() refuses, rebuildIfChanged() rebuilds, the new tables are in place', async () => {
    const { schema, backend, store } = await setup();
    await appendMany(store, 200);
    const v1 = track(pgCounter(backend));
    await v1.start();
    await v1.waitFor(await store.headPosition());
    await v1.stop();
    const v2 = track(pgCounter(backend, { version: 2, withMax: true }));
    await assert.rejects(v2.start(), (error: unknown) => isEskitError(error, ErrorCode.Migration));
    const progress: number[] = [];
    const result = await v2.rebuildIfChanged({ onProgress: (p) => progress.push(p.done) });
    assert.ok(result && result.events === (await expectedPgCounter(schema.pool, schema.name)).seen);
    assert.ok(progress.length > 0);
    assert.equal(await v2.storedVersion(), 2);
    assert.equal(await v2.rebuildIfChanged(), undefined);
    await v2.start();
    const { position } = await store.append('after', [counted(7)]);
    await v2.waitFor(position);
    const max = await schema.pool.query(`SELECT max_n FROM "${schema.name}".counts WHERE stream = 'after'`);
    assert.equal(Number(max.rows[0]?.max_n), 7);
    assert.deepEqual(await readPgCounter(schema.pool, schema.name), await expectedPgCounter(schema.pool, schema.name));
  });
});
