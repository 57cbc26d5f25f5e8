import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import type { FencedError } from '../../src/core/errors.js';
import { migratePostgres, PostgresCheckpointStore, PostgresEventStore, savePostgresCheckpoint } from '../../src/postgres/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { createTestSchema, POSTGRES_URL } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';

let cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  const pending = cleanups.reverse();
  cleanups = [];
  for (const cleanup of pending) await cleanup();
});

async function setup(): Promise<{ schema: TestSchema; checkpoints: PostgresCheckpointStore }> {
  const schema = await createTestSchema({ create: false });
  cleanups.push(() => schema.drop());
  return { schema, checkpoints: new PostgresCheckpointStore({ pool: schema.pool, schema: schema.name }) };
}

const code = (wanted: string) => (error: unknown) => isEskitError(error, wanted);

/** A FencedError for `name` with exactly these tokens. */
function fenced(name: string, token: number, current: number) {
  return (error: unknown): boolean => {
    assert.ok(isEskitError(error, ErrorCode.Fenced), `expected ESKIT_FENCED, got ${String(error)}`);
    const e = error as FencedError;
    assert.deepEqual({ lockName: e.lockName, fencingToken: e.fencingToken, currentToken: e.currentToken }, { lockName: name, fencingToken: token, currentToken: current });
    return true;
  };
}

// The behaviour every CheckpointStore shares is in the conformance suite (checkpoint-conformance.test.ts);
// this is PostgreSQL's own.

describe('PostgresCheckpointStore names', () => {
  it('refuses a name PostgreSQL text cannot store', async () => {
    const { checkpoints } = await setup();
    await assert.rejects(checkpoints.load('a\u0000b'), code(ErrorCode.InvalidArgument));
    await assert.rejects(checkpoints.claim('a\u0000b', 1), code(ErrorCode.InvalidArgument));
    await assert.rejects(checkpoints.save('a\u0000b', 1), code(ErrorCode.InvalidArgument));
    assert.deepEqual(await checkpoints.list(), []);
  });
});

describe('PostgresCheckpointStore construction and migration', () => {
  it('needs exactly one of store, pool and connectionString; takes the schema as an option', async () => {
    const schema = await createTestSchema({ create: false });
    cleanups.push(() => schema.drop());
    assert.throws(() => new PostgresCheckpointStore({}), code(ErrorCode.InvalidArgument));
    assert.throws(() => new PostgresCheckpointStore({ pool: schema.pool, connectionString: POSTGRES_URL }), code(ErrorCode.InvalidArgument));
    assert.throws(() => new PostgresCheckpointStore({ pool: schema.pool, schema: 'Bad-Name' }), code(ErrorCode.InvalidArgument));
    assert.throws(() => new PostgresCheckpointStore(null as never), code(ErrorCode.InvalidArgument));

    const onPool = new PostgresCheckpointStore({ pool: schema.pool, schema: schema.name });
    assert.equal(onPool.schema, schema.name);
    await onPool.save('a', 1);

    const owned = new PostgresCheckpointStore({ connectionString: POSTGRES_URL, schema: schema.name });
    assert.equal(await owned.load('a'), 1, 'the same table through its own pool');
    await owned.close();
    await owned.close();
    assert.equal(owned.pool.ended, true, 'close() ends the pool it created');
    assert.equal(schema.pool.ended, false);
  });

  it('{ store } shares the event store pool, schema and migration', async () => {
    const schema = await createTestSchema({ create: false });
    cleanups.push(() => schema.drop());
    const store = new PostgresEventStore({ pool: schema.pool, schema: schema.name });
    cleanups.push(() => store.close());
    const checkpoints = new PostgresCheckpointStore({ store });
    assert.equal(checkpoints.schema, schema.name);
    assert.equal(checkpoints.pool, schema.pool);
    assert.throws(() => new PostgresCheckpointStore({ store, schema: 'other_schema' }), code(ErrorCode.InvalidArgument));
    // The first call migrates (through the store): no table existed before.
    await checkpoints.save('sub', 2, { fencingToken: 1 });
    assert.equal(await checkpoints.claim('sub', 1), 2);
  });

  it('with migrate: false on an unmigrated schema, calls fail with ESKIT_MIGRATION', async () => {
    const schema = await createTestSchema({ create: false });
    cleanups.push(() => schema.drop());
    const checkpoints = new PostgresCheckpointStore({ pool: schema.pool, schema: schema.name, migrate: false });
    await assert.rejects(checkpoints.load('x'), code(ErrorCode.Migration));
    await assert.rejects(checkpoints.save('x', 1), code(ErrorCode.Migration));
    await migratePostgres(schema.pool, schema.name);
    await checkpoints.save('x', 1);
    assert.equal(await checkpoints.load('x'), 1);
  });
});

describe('savePostgresCheckpoint inside the caller transaction', () => {
  async function setupView(): Promise<{ schema: TestSchema; checkpoints: PostgresCheckpointStore; view: string }> {
    const context = await setup();
    await context.checkpoints.load('warm-up'); // migrates
    const view = `"${context.schema.name}".view_rows`;
    await context.schema.pool.query(`CREATE TABLE ${view} (id int PRIMARY KEY, note text)`);
    return { ...context, view };
  }

  it('a rolled-back transaction leaves the checkpoint and the view unchanged; a committed one moves both', async () => {
    const { schema, checkpoints, view } = await setupView();
    await checkpoints.save('view', 10, { fencingToken: 2 });
    const client = await schema.pool.connect();
    try {
      await client.query('BEGIN');
      await client.query(`INSERT INTO ${view} VALUES (1, 'rolled back')`);
      await savePostgresCheckpoint(client, 'view', 11, { fencingToken: 2, schema: schema.name });
      assert.equal(await checkpoints.load('view'), 10, 'other connections do not see the uncommitted save');
      await client.query('ROLLBACK');
      assert.equal(await checkpoints.load('view'), 10);
      assert.equal((await schema.pool.query(`SELECT count(*)::int AS n FROM ${view}`)).rows[0].n, 0);

      await client.query('BEGIN');
      await client.query(`INSERT INTO ${view} VALUES (2, 'committed')`);
      await checkpoints.saveWith(client, 'view', 12, { fencingToken: 3 });
      await client.query('COMMIT');
      assert.equal(await checkpoints.load('view'), 12);
      assert.deepEqual((await schema.pool.query(`SELECT id FROM ${view}`)).rows, [{ id: 2 }]);
      await assert.rejects(checkpoints.save('view', 13, { fencingToken: 2 }), fenced('view', 2, 3), 'the committed token fences');
    } finally {
      client.release();
    }
  });

  it('a fenced save inside a transaction throws and, rolled back, commits none of the view writes', async () => {
    const { schema, checkpoints, view } = await setupView();
    await checkpoints.claim('view', 5);
    await checkpoints.save('view', 20, { fencingToken: 5 });
    const client = await schema.pool.connect();
    try {
      await client.query('BEGIN');
      await client.query(`INSERT INTO ${view} VALUES (1, 'stale leader')`);
      await assert.rejects(savePostgresCheckpoint(client, 'view', 21, { fencingToken: 4, schema: schema.name }), fenced('view', 4, 5));
      await client.query('ROLLBACK');
    } finally {
      client.release();
    }
    assert.equal(await checkpoints.load('view'), 20);
    assert.equal((await schema.pool.query(`SELECT count(*)::int AS n FROM ${view}`)).rows[0].n, 0);
  });

  it('a save in an open transaction holds the row: a competing claim waits for the commit and then sees it', async () => {
    const { schema, checkpoints } = await setupView();
    await checkpoints.save('view', 1, { fencingToken: 1 });
    const client = await schema.pool.connect();
    try {
      await client.query('BEGIN');
      await savePostgresCheckpoint(client, 'view', 2, { fencingToken: 1, schema: schema.name });
      let claimed: number | undefined | 'pending' = 'pending';
      const claim = checkpoints.claim('view', 2).then((position) => {
        claimed = position;
      });
      // The claim blocks on the row lock until the transaction ends.
      await waitUntil(
        async () =>
          (
            await schema.pool.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND position($1 in query) > 0`, [
              `"${schema.name}".checkpoints`,
            ])
          ).rows[0].n === 1,
        { message: 'the claim to wait for the row lock' },
      );
      assert.equal(claimed, 'pending');
      await client.query('COMMIT');
      await claim;
      assert.equal(claimed, 2, 'the claim read the committed position');
    } finally {
      client.release();
    }
  });

  it('a missing table reports ESKIT_MIGRATION; arguments are checked', async () => {
    const { schema } = await setup();
    const client = await schema.pool.connect();
    try {
      await assert.rejects(savePostgresCheckpoint(client, 'x', 1, { schema: `${schema.name}_none` }), code(ErrorCode.Migration));
      await assert.rejects(savePostgresCheckpoint(client, '', 1, { schema: schema.name }), code(ErrorCode.InvalidArgument));
      await assert.rejects(savePostgresCheckpoint(client, 'x', 1, { schema: 'Not Valid' }), code(ErrorCode.InvalidArgument));
    } finally {
      client.release();
    }
  });
});
