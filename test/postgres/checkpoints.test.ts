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

async function row(schema: TestSchema, name: string): Promise<{ position: number | null; token: number; updatedAt: Date } | undefined> {
  const result = await schema.pool.query<{ position: string | null; fencing_token: string; updated_at: Date }>(
    `SELECT position, fencing_token, updated_at FROM "${schema.name}".checkpoints WHERE name = $1`,
    [name],
  );
  const r = result.rows[0];
  return r && { position: r.position === null ? null : Number(r.position), token: Number(r.fencing_token), updatedAt: r.updated_at };
}

describe('PostgresCheckpointStore fencing', () => {
  it('load is undefined until saved, even after a claim; list shows only saved checkpoints', async () => {
    const { schema, checkpoints } = await setup();
    assert.equal(await checkpoints.load('sub'), undefined);
    assert.deepEqual(await checkpoints.list(), []);
    assert.equal(await checkpoints.claim('sub', 5), undefined);
    assert.equal(await checkpoints.load('sub'), undefined);
    assert.deepEqual(await checkpoints.list(), []);
    assert.deepEqual(await row(schema, 'sub').then((r) => r && { position: r.position, token: r.token }), { position: null, token: 5 });
  });

  it('claim: an equal or newer token is accepted, an older one is fenced with the current token', async () => {
    const { checkpoints } = await setup();
    assert.equal(await checkpoints.claim('sub', 5), undefined);
    assert.equal(await checkpoints.claim('sub', 5), undefined, 'the same token claims again (a retry)');
    await assert.rejects(checkpoints.claim('sub', 4), fenced('sub', 4, 5));
    await checkpoints.save('sub', 10, { fencingToken: 5 });
    assert.equal(await checkpoints.claim('sub', 7), 10, 'a new leader gets the saved position');
    await assert.rejects(checkpoints.claim('sub', 6), fenced('sub', 6, 7));
    await assert.rejects(checkpoints.claim('sub', 0), fenced('sub', 0, 7));
    assert.deepEqual(
      (await checkpoints.list()).map(({ name, position, fencingToken }) => ({ name, position, fencingToken })),
      [{ name: 'sub', position: 10, fencingToken: 7 }],
    );
  });

  it('save with a token: older rejected and nothing changes; equal or newer accepted and the token kept at the highest', async () => {
    const { schema, checkpoints } = await setup();
    await checkpoints.claim('sub', 5);
    await checkpoints.save('sub', 10, { fencingToken: 5 });
    assert.equal(await checkpoints.load('sub'), 10);
    const before = await row(schema, 'sub');

    await assert.rejects(checkpoints.save('sub', 11, { fencingToken: 4 }), fenced('sub', 4, 5));
    assert.deepEqual(await row(schema, 'sub'), before, 'a fenced save changes neither position, token nor updated_at');

    await checkpoints.save('sub', 12, { fencingToken: 8 });
    assert.deepEqual(await row(schema, 'sub').then((r) => r && { position: r.position, token: r.token }), { position: 12, token: 8 }, 'a newer token saves and becomes the current one');
    await assert.rejects(checkpoints.save('sub', 13, { fencingToken: 5 }), fenced('sub', 5, 8));
    assert.equal(await checkpoints.load('sub'), 12);
  });

  it('save without a token is unconditional and leaves the token as it is; a first save without one records token 0', async () => {
    const { checkpoints } = await setup();
    await checkpoints.save('plain', 3);
    await checkpoints.save('plain', 4);
    await checkpoints.claim('fenced', 9);
    await checkpoints.save('fenced', 20);
    assert.deepEqual(
      (await checkpoints.list()).map(({ name, position, fencingToken }) => ({ name, position, fencingToken })),
      [
        { name: 'fenced', position: 20, fencingToken: 9 },
        { name: 'plain', position: 4, fencingToken: 0 },
      ],
    );
    await assert.rejects(checkpoints.save('fenced', 21, { fencingToken: 8 }), fenced('fenced', 8, 9));
    // A checkpoint saved without a token can be taken over by any token.
    await checkpoints.save('plain', 5, { fencingToken: 0 });
    assert.equal(await checkpoints.claim('plain', 1), 5);
  });

  it('a first save with a token creates the row with that token', async () => {
    const { checkpoints } = await setup();
    await checkpoints.save('sub', 7, { fencingToken: 3 });
    await assert.rejects(checkpoints.claim('sub', 2), fenced('sub', 2, 3));
    const [info] = await checkpoints.list();
    assert.equal(info?.position, 7);
    assert.equal(info?.fencingToken, 3);
    assert.ok(info?.updatedAt instanceof Date && Math.abs(info.updatedAt.getTime() - Date.now()) < 60_000, 'updatedAt is the database time of the save');
  });

  it('concurrent claims: exactly the highest token wins, every other claim is fenced or overtaken', async () => {
    const { checkpoints } = await setup();
    const tokens = Array.from({ length: 20 }, (_, i) => i + 1).sort(() => Math.random() - 0.5);
    const outcomes = await Promise.allSettled(tokens.map((token) => checkpoints.claim('race', token)));
    outcomes.forEach((outcome, index) => {
      if (outcome.status === 'rejected') {
        const error = outcome.reason as FencedError;
        assert.ok(isEskitError(error, ErrorCode.Fenced));
        assert.ok(error.currentToken > (tokens[index] as number), 'fenced only by a newer token');
      }
    });
    const winner = outcomes[tokens.indexOf(20)];
    assert.equal(winner?.status, 'fulfilled', 'the newest token is never fenced');
    await assert.rejects(checkpoints.save('race', 1, { fencingToken: 19 }), fenced('race', 19, 20));
    await checkpoints.save('race', 1, { fencingToken: 20 });
  });

  it('checks its arguments', async () => {
    const { checkpoints } = await setup();
    await assert.rejects(checkpoints.load(''), code(ErrorCode.InvalidArgument));
    await assert.rejects(checkpoints.load('a\u0000b'), code(ErrorCode.InvalidArgument));
    await assert.rejects(checkpoints.save('x', -1), code(ErrorCode.InvalidArgument));
    await assert.rejects(checkpoints.save('x', 1.5), code(ErrorCode.InvalidArgument));
    await assert.rejects(checkpoints.save('x', 1, { fencingToken: -1 }), code(ErrorCode.InvalidArgument));
    await assert.rejects(checkpoints.claim('x', Number.NaN), code(ErrorCode.InvalidArgument));
  });
});

describe('PostgresCheckpointStore construction and migration', () => {
  it('needs exactly one of store, pool and connectionString; takes the schema as an option or a second argument', async () => {
    const schema = await createTestSchema({ create: false });
    cleanups.push(() => schema.drop());
    assert.throws(() => new PostgresCheckpointStore({}), code(ErrorCode.InvalidArgument));
    assert.throws(() => new PostgresCheckpointStore({ pool: schema.pool, connectionString: POSTGRES_URL }), code(ErrorCode.InvalidArgument));
    assert.throws(() => new PostgresCheckpointStore({ pool: schema.pool, schema: 'Bad-Name' }), code(ErrorCode.InvalidArgument));
    assert.throws(() => new PostgresCheckpointStore(null as never), code(ErrorCode.InvalidArgument));

    const positional = new PostgresCheckpointStore({ pool: schema.pool }, schema.name);
    assert.equal(positional.schema, schema.name);
    await positional.save('a', 1);

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
    assert.throws(() => new PostgresCheckpointStore({ store }, 'other_schema'), code(ErrorCode.InvalidArgument));
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
