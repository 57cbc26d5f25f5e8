// Group commit on PostgreSQL, where it shows: one transaction per group, what happens when the server
// refuses a group's statement for one append's data, and when the connection is lost mid-group.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import pg from 'pg';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import { advisoryKey, migratePostgres, POSTGRES_MIGRATIONS, PostgresEventStore } from '../../src/postgres/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { createTestSchema, POSTGRES_URL } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';

let cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  const pending = cleanups.reverse();
  cleanups = [];
  for (const cleanup of pending) await cleanup();
});

async function setup(): Promise<{ schema: TestSchema; store: PostgresEventStore }> {
  const schema = await createTestSchema({ create: false });
  cleanups.push(() => schema.drop());
  const store = new PostgresEventStore({ pool: schema.pool, schema: schema.name });
  cleanups.push(() => store.close());
  await store.migrate();
  return { schema, store };
}

const note = (n: number) => ({ type: 'Noted', data: { n } });

describe('PostgreSQL group commit', () => {
  it('writes the appends of one burst in one transaction, each with its own positions', async () => {
    const { schema, store } = await setup();
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => store.append(`s-${i}`, [note(i), note(i)])));
    const transactions = await schema.pool.query<{ n: string }>(`SELECT count(DISTINCT xmin::text) AS n FROM "${schema.name}".events`);
    assert.equal(Number(transactions.rows[0]?.n), 1, 'the burst should have been one transaction');
    assert.deepEqual(
      results.map((r) => r.events.map((e) => e.position)),
      Array.from({ length: 8 }, (_, i) => [2 * i + 1, 2 * i + 2]),
    );
    const stored = await schema.pool.query<{ stream_id: string; stream_version: string; position: string }>(
      `SELECT stream_id, stream_version, position FROM "${schema.name}".events ORDER BY position`,
    );
    assert.deepEqual(
      stored.rows.map((r) => `${r.stream_id}@${r.stream_version}=${r.position}`),
      Array.from({ length: 16 }, (_, p) => `s-${Math.floor(p / 2)}@${(p % 2) + 1}=${p + 1}`),
    );
  });

  it('a group the server refuses for one append\'s data is written one append at a time: that append fails alone', async () => {
    const { schema, store } = await setup();
    // A constraint of the application's own, which eskit's checks know nothing about.
    await schema.pool.query(`ALTER TABLE "${schema.name}".events ADD CONSTRAINT no_forbidden CHECK (type <> 'Forbidden')`);
    const results = await Promise.allSettled([
      store.append('a', [note(1)]),
      store.append('b', [note(2), { type: 'Forbidden', data: {} }]),
      store.append('c', [note(3)]),
    ]);
    assert.deepEqual(
      results.map((r) => r.status),
      ['fulfilled', 'rejected', 'fulfilled'],
    );
    assert.match(String((results[1] as PromiseRejectedResult).reason), /no_forbidden/);
    const stored = await schema.pool.query<{ stream_id: string }>(`SELECT stream_id FROM "${schema.name}".events ORDER BY position`);
    assert.deepEqual(
      stored.rows.map((r) => r.stream_id),
      ['a', 'c'],
    );
  });

  it('a trigger of the application that refuses one append of a group fails that append alone', async () => {
    const { schema, store } = await setup();
    await schema.pool.query(`
      CREATE FUNCTION "${schema.name}".refuse_forbidden() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.type = 'Forbidden' THEN RAISE EXCEPTION 'forbidden by the application'; END IF;
        RETURN NEW;
      END $$;
      CREATE TRIGGER refuse_forbidden BEFORE INSERT ON "${schema.name}".events FOR EACH ROW EXECUTE FUNCTION "${schema.name}".refuse_forbidden();`);
    const results = await Promise.allSettled([
      store.append('a', [note(1)]),
      store.append('b', [{ type: 'Forbidden', data: {} }]),
      store.append('c', [note(3)]),
    ]);
    assert.deepEqual(
      results.map((r) => r.status),
      ['fulfilled', 'rejected', 'fulfilled'],
    );
    assert.match(String((results[1] as PromiseRejectedResult).reason), /forbidden by the application/);
  });

  it('a schema not yet migrated to append_group (migrate: false, a rolling deploy) still takes bursts, one append at a time', async () => {
    const schema = await createTestSchema({ create: false });
    cleanups.push(() => schema.drop());
    await migratePostgres(schema.pool, schema.name, POSTGRES_MIGRATIONS.slice(0, 6));
    const store = new PostgresEventStore({ pool: schema.pool, schema: schema.name, migrate: false });
    cleanups.push(() => store.close());
    const results = await Promise.all([store.append('a', [note(1)]), store.append('a', [note(2)]), store.append('b', [note(3)])]);
    assert.deepEqual(
      results.map((r) => r.nextExpectedVersion),
      [1, 2, 1],
    );
  });

  it('a pooled connection left in a failed transaction by other code is dropped, not kept: the next append works', async () => {
    const schema = await createTestSchema({ create: false, poolSize: 1 });
    cleanups.push(() => schema.drop());
    const store = new PostgresEventStore({ pool: schema.pool, schema: schema.name });
    cleanups.push(() => store.close());
    await store.append('warm', [note(0)]);
    // Someone else's code on the shared pool gives its client back in the middle of a failed transaction.
    const client = await schema.pool.connect();
    await client.query('BEGIN');
    await client.query('SELECT 1 / 0').catch(() => undefined);
    client.release();
    await assert.rejects(store.append('a', [note(1)]), /aborted/);
    assert.equal((await store.append('b', [note(2)])).nextExpectedVersion, 1);
  });

  it('a connection lost mid-group fails every append of the group with ESKIT_CONNECTION, and none is retried', { timeout: 20_000 }, async () => {
    const { schema, store } = await setup();
    await store.append('warm', [note(0)]);
    // Hold the append lock, so that the group waits on the server; then end the group's session.
    const holder = new pg.Client({ connectionString: POSTGRES_URL });
    await holder.connect();
    cleanups.push(() => holder.end());
    const [lockClass, lockObject] = advisoryKey('append', schema.name);
    await holder.query('BEGIN');
    await holder.query('SELECT pg_advisory_xact_lock($1, $2)', [lockClass, lockObject]);
    const group = Promise.allSettled([store.append('a', [note(1)]), store.append('b', [note(2)])]);
    // Asked outside the holder's transaction: pg_stat_activity is read once per transaction.
    const waiting = async () => {
      const r = await schema.pool.query<{ pid: number }>(
        `SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%append_group%' AND datname = current_database()`,
      );
      return r.rows[0]?.pid;
    };
    await waitUntil(async () => (await waiting()) !== undefined, { timeoutMs: 5000, message: 'the group never waited on the append lock' });
    await schema.pool.query('SELECT pg_terminate_backend($1)', [await waiting()]);
    const results = await group;
    await holder.query('ROLLBACK');
    for (const result of results) {
      assert.equal(result.status, 'rejected');
      assert.ok(isEskitError((result as PromiseRejectedResult).reason, ErrorCode.Connection), String((result as PromiseRejectedResult).reason));
    }
    const stored = await schema.pool.query<{ stream_id: string }>(`SELECT stream_id FROM "${schema.name}".events ORDER BY position`);
    assert.deepEqual(
      stored.rows.map((r) => r.stream_id),
      ['warm'],
      'nothing of the group may be written, and nothing replayed',
    );
    // The store carries on.
    assert.equal((await store.append('after', [note(3)])).position, 2);
  });

  it('a lone append on a connection where its statements once failed to parse (schema not migrated yet) works once migrated', async () => {
    const schema = await createTestSchema({ create: false, poolSize: 1 });
    cleanups.push(() => schema.drop());
    const store = new PostgresEventStore({ pool: schema.pool, schema: schema.name, migrate: false });
    cleanups.push(() => store.close());
    await assert.rejects(store.append('a', [note(1)]), (error) => isEskitError(error, ErrorCode.Migration));
    await store.migrate();
    assert.equal((await store.append('a', [note(1)])).position, 1);
    // A refused append (after parsing went through) leaves the statements usable, too.
    await assert.rejects(store.append('a', [note(2)], { expectedVersion: 0 }), (error) => isEskitError(error, ErrorCode.Concurrency));
    const first = await store.append('b', [note(3)]);
    await assert.rejects(store.append('c', [{ ...note(4), id: first.events[0]?.id }]), (error) => isEskitError(error, ErrorCode.DuplicateEventId));
    assert.equal((await store.append('a', [note(5)])).nextExpectedVersion, 2);
  });
});
