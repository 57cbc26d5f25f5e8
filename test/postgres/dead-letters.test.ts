import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type pg from 'pg';
import { v7 as uuidv7 } from 'uuid';
import type { NewDeadLetter } from '../../src/core/dead-letter.js';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import type { FencedError } from '../../src/core/errors.js';
import {
  migratePostgres,
  POSTGRES_MIGRATIONS,
  PostgresCheckpointStore,
  PostgresCompletionStore,
  PostgresDeadLetterStore,
  PostgresEventStore,
  savePostgresCheckpoint,
} from '../../src/postgres/index.js';
import { deadLetterStoreConformance } from '../../src/testing/dead-letter-conformance.js';
import { waitUntil } from '../../src/testing/wait.js';
import { createTestSchema } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';

deadLetterStoreConformance({
  name: 'postgres, sharing an event store (its pool, schema and migration)',
  create: async () => {
    // Not created: the first call's migration creates the schema.
    const schema = await createTestSchema({ create: false });
    const store = new PostgresEventStore({ pool: schema.pool, schema: schema.name });
    return {
      deadLetters: new PostgresDeadLetterStore({ store }),
      checkpoints: new PostgresCheckpointStore({ store }),
      close: async () => {
        await store.close();
        await schema.drop();
      },
    };
  },
});

deadLetterStoreConformance({
  name: 'postgres, each store with its own pool from a connection string',
  create: async () => {
    const schema = await createTestSchema({ create: false, poolSize: 1 });
    const deadLetters = new PostgresDeadLetterStore({ connectionString: schema.connectionString, schema: schema.name });
    const checkpoints = new PostgresCheckpointStore({ connectionString: schema.connectionString, schema: schema.name });
    return {
      deadLetters,
      checkpoints,
      close: async () => {
        await deadLetters.close();
        await checkpoints.close();
        await schema.drop();
      },
    };
  },
});

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function freshSchema(options: { create?: boolean; poolSize?: number } = {}): Promise<TestSchema> {
  const schema = await createTestSchema({ create: false, ...options });
  cleanups.push(() => schema.drop());
  return schema;
}

async function setup(poolSize = 4): Promise<{ schema: TestSchema; deadLetters: PostgresDeadLetterStore; completions: PostgresCompletionStore }> {
  const schema = await freshSchema({ poolSize });
  return {
    schema,
    deadLetters: new PostgresDeadLetterStore({ pool: schema.pool, schema: schema.name }),
    completions: new PostgresCompletionStore({ pool: schema.pool, schema: schema.name }),
  };
}

function letter(overrides: Partial<NewDeadLetter> = {}): NewDeadLetter {
  return {
    source: 'mailer',
    stage: 'execute',
    key: 'customer-1',
    payload: { to: 'a@example.com' },
    eventId: '0190b1d2-3c4d-7e5f-8a6b-7c8d9e0f1a2b',
    eventType: 'OrderPlaced',
    eventPosition: 7,
    streamId: 'order-1',
    attempts: [{ at: new Date(1_700_000_000_123), error: 'Error: boom' }],
    ...overrides,
  };
}

async function expectCode(fn: () => Promise<unknown>, code: string, message?: RegExp): Promise<Error> {
  let caught: unknown;
  await assert.rejects(fn, (error: unknown) => {
    caught = error;
    assert.ok(isEskitError(error, code), `expected ${code}, got ${String(error)}`);
    if (message) assert.match((error as Error).message, message);
    return true;
  });
  return caught as Error;
}

/** Waits until `count` statements on `schema`'s `table` wait for a lock held by another transaction. */
async function waitForLockWaiters(pool: pg.Pool, schema: string, count: number, table = 'dead_letters'): Promise<void> {
  await waitUntil(
    async () => {
      const result = await pool.query<{ n: string }>(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND position($1 in query) > 0",
        [`"${schema}".${table}`],
      );
      return Number(result.rows[0]?.n) === count;
    },
    { message: `${count} statement(s) on ${table} waiting for a row lock` },
  );
}

const fence = (checkpoint: string, fencingToken: number): { fence: { checkpoint: string; fencingToken: number } } => ({ fence: { checkpoint, fencingToken } });

/** Settles to what `promise` resolved or rejected with, so a test can await it later without an unhandled rejection. */
function outcome<T>(promise: Promise<T>): Promise<{ value: T } | { error: unknown }> {
  return promise.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
}

describe('PostgresDeadLetterStore: schema and storage', () => {
  it('migration 4 creates the tables, constraints and index; a letter is stored as documented', async () => {
    const { schema, deadLetters } = await setup();
    const migration = POSTGRES_MIGRATIONS.find((m) => m.version === 4);
    assert.equal(migration?.name, 'dead_letters_and_completions');
    const before = Date.now();
    const added = await deadLetters.add(letter({ payload: { ü: [1, null], n: 1.5e-3 } }));
    const after = Date.now();
    assert.ok(added.createdAt.getTime() >= before - 1000 && added.createdAt.getTime() <= after + 1000, 'the server clock, near ours');
    const { rows } = await schema.pool.query(`SELECT *, created_at = date_trunc('milliseconds', created_at) AS whole_ms FROM "${schema.name}".dead_letters`);
    assert.deepEqual(rows, [
      {
        id: added.id,
        source: 'mailer',
        stage: 'execute',
        key: 'customer-1',
        payload: { ü: [1, null], n: 0.0015 },
        event_id: '0190b1d2-3c4d-7e5f-8a6b-7c8d9e0f1a2b',
        event_type: 'OrderPlaced',
        event_position: '7',
        stream_id: 'order-1',
        attempts: [{ at: 1_700_000_000_123, error: 'Error: boom' }],
        status: 'dead',
        created_at: added.createdAt,
        updated_at: added.createdAt,
        whole_ms: true,
      },
    ]);
    const types = await schema.pool.query<{ column_name: string; data_type: string }>(
      'SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position',
      [schema.name, 'dead_letters'],
    );
    assert.deepEqual(
      types.rows.map((r) => `${r.column_name} ${r.data_type}`),
      [
        'id uuid',
        'source text',
        'stage text',
        'key text',
        'payload jsonb',
        'event_id uuid',
        'event_type text',
        'event_position bigint',
        'stream_id text',
        'attempts jsonb',
        'status text',
        'created_at timestamp with time zone',
        'updated_at timestamp with time zone',
      ],
    );
    const index = await schema.pool.query<{ indexdef: string }>('SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname = $2', [
      schema.name,
      'dead_letters_source_status_id',
    ]);
    assert.match(index.rows[0]?.indexdef ?? '', /ON .*dead_letters USING btree \(source, status, id\)/);
    await assert.rejects(schema.pool.query(`UPDATE "${schema.name}".dead_letters SET status = 'lost'`), /dead_letters_status_check/);
    const key = await schema.pool.query<{ def: string }>(
      `SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint WHERE conname = 'completions_pkey' AND connamespace = $1::regnamespace`,
      [schema.name],
    );
    assert.equal(key.rows[0]?.def, 'PRIMARY KEY (source, "position", item_id)');
  });

  it('the queries the leading node and the operator run use the indexes, without sorting', async () => {
    const { schema, deadLetters } = await setup();
    await deadLetters.count();
    const client = await schema.pool.connect();
    try {
      // The tables are empty: the planner would pick a sequential scan; the point is that an index can serve.
      await client.query('SET enable_seqscan = off');
      const plan = async (sql: string): Promise<string> =>
        (await client.query<{ 'QUERY PLAN': string }>(`EXPLAIN ${sql}`)).rows.map((r) => r['QUERY PLAN']).join('\n');
      const s = `"${schema.name}"`;
      const poll = await plan(`SELECT * FROM ${s}.dead_letters WHERE source = 'm' AND status = 'redrive' AND id > '${uuidv7()}' ORDER BY id LIMIT 100`);
      assert.match(poll, /Index Scan using dead_letters_source_status_id/);
      assert.doesNotMatch(poll, /Sort/);
      assert.match(await plan(`UPDATE ${s}.dead_letters SET status = 'redrive' WHERE source = 'm' AND status = 'dead'`), /dead_letters_source_status_id/);
      assert.match(await plan(`SELECT * FROM ${s}.dead_letters WHERE id = '${uuidv7()}'`), /Index Scan using dead_letters_pkey/);
      assert.doesNotMatch(await plan(`SELECT * FROM ${s}.dead_letters ORDER BY id LIMIT 100`), /Sort/);
      assert.match(await plan(`SELECT position, item_id FROM ${s}.completions WHERE source = 'm' AND position > 3`), /completions_pkey/);
      assert.match(await plan(`DELETE FROM ${s}.completions WHERE source = 'm' AND position <= 3`), /completions_pkey/);
    } finally {
      await client.query('RESET enable_seqscan');
      client.release();
    }
  });

  it('upgrades a schema at version 3, keeping its events', async () => {
    const schema = await freshSchema();
    assert.deepEqual(await migratePostgres(schema.pool, schema.name, POSTGRES_MIGRATIONS.slice(0, 3)), [1, 2, 3]);
    const store = new PostgresEventStore({ pool: schema.pool, schema: schema.name });
    cleanups.push(() => store.close());
    // Appending migrates the store's schema (version 4 included) on first use.
    await store.append('s', [{ type: 'A', data: 1 }]);
    const deadLetters = new PostgresDeadLetterStore({ store });
    await deadLetters.add(letter());
    assert.equal(await deadLetters.count(), 1);
    assert.equal(await store.headPosition(), 1);
    const versions = await schema.pool.query<{ version: number }>(`SELECT version FROM "${schema.name}".migrations ORDER BY version`);
    assert.deepEqual(versions.rows.map((r) => r.version), POSTGRES_MIGRATIONS.map((m) => m.version));
  });

  it('event ids are UUIDs, stored and returned in lower case; positions beyond 2^32 come back as numbers', async () => {
    const { deadLetters, completions } = await setup();
    await expectCode(() => deadLetters.add(letter({ eventId: 'evt-1' })), ErrorCode.InvalidArgument, /eventId must be the id of the event \(a UUID\)/);
    const added = await deadLetters.add(letter({ eventId: '0190B1D2-3C4D-7E5F-8A6B-7C8D9E0F1A2B', eventPosition: 2 ** 40 }));
    assert.equal(added.eventId, '0190b1d2-3c4d-7e5f-8a6b-7c8d9e0f1a2b');
    assert.equal(added.eventPosition, 2 ** 40);
    assert.deepEqual(await deadLetters.get(added.id), added);
    assert.deepEqual(await deadLetters.list(), [added]);
    assert.equal(typeof (await deadLetters.count()), 'number');
    await completions.markCompleted('mailer', [{ position: Number.MAX_SAFE_INTEGER, itemId: 'x' }]);
    assert.deepEqual(await completions.completedAfter('mailer', 2 ** 52), new Set([`${Number.MAX_SAFE_INTEGER}/x`]));
  });
});

describe('PostgresDeadLetterStore: what PostgreSQL cannot store', () => {
  it('NUL or a lone surrogate in the payload or an attempt: ESKIT_SERIALIZATION naming the field, nothing stored', async () => {
    const { deadLetters } = await setup();
    const refused: Array<[Partial<NewDeadLetter>, RegExp]> = [
      [{ payload: { text: 'a\u0000b' } }, /payload contains the character U\+0000 \(NUL\).*nothing was stored/],
      [{ payload: { ['k\u0000']: 1 } }, /payload contains the character U\+0000/],
      [{ payload: ['\ud800'] }, /payload contains a lone UTF-16 surrogate/],
      [{ attempts: [{ at: new Date(1), error: 'Error: \u0000' }] }, /attempt error contains the character U\+0000/],
      [{ attempts: [{ at: new Date(1), error: 'Error: \udc00' }] }, /attempt error contains a lone UTF-16 surrogate/],
    ];
    for (const [overrides, message] of refused) await expectCode(() => deadLetters.add(letter(overrides)), ErrorCode.Serialization, message);
    // An escaped backslash before "u0000" is plain text, which jsonb stores.
    const fine = await deadLetters.add(letter({ payload: { text: '\\u0000 and 👩‍👩‍👧' } }));
    assert.deepEqual((await deadLetters.get(fine.id))?.payload, { text: '\\u0000 and 👩‍👩‍👧' });
    assert.deepEqual(await deadLetters.list(), [fine], 'only the storable letter was stored');
  });

  it('NUL or a lone surrogate in a text field: ESKIT_INVALID_ARGUMENT before any query; lookups by such a source find nothing', async () => {
    const { deadLetters, completions } = await setup();
    for (const field of ['source', 'key', 'eventType', 'streamId'] as const) {
      for (const bad of ['a\u0000b', 'a\ud800b']) {
        await expectCode(() => deadLetters.add(letter({ [field]: bad })), ErrorCode.InvalidArgument, new RegExp(`^${field} contains U\\+0000`));
      }
    }
    await expectCode(() => completions.markCompleted('a\u0000', [{ position: 1, itemId: 'x' }]), ErrorCode.InvalidArgument);
    await expectCode(
      () => completions.markCompleted('mailer', [{ position: 1, itemId: 'ok' }, { position: 2, itemId: 'x\udfff' }]),
      ErrorCode.InvalidArgument,
      /items\[1\]\.itemId/,
    );
    assert.deepEqual(await completions.completedAfter('mailer', 0), new Set(), 'nothing of the refused batch was recorded');
    assert.equal(await deadLetters.count(), 0);
    await deadLetters.add(letter());
    assert.deepEqual(await deadLetters.list({ source: 'mailer\u0000' }), []);
    assert.equal(await deadLetters.count({ source: 'mailer\u0000' }), 0);
    assert.equal(await deadLetters.redrive({ source: 'mailer\u0000' }), 0);
    assert.equal(await deadLetters.discard({ source: 'mailer\ud800' }), 0);
    assert.deepEqual(await completions.completedAfter('mailer\u0000', 0), new Set());
    await completions.prune('mailer\u0000', 10);
    assert.equal(await deadLetters.count({ source: 'mailer' }), 1);
  });

  it('a failed redrive whose attempts cannot be stored is refused whole: the letter stays in redrive, unchanged', async () => {
    const { deadLetters } = await setup();
    const added = await deadLetters.add(letter());
    await deadLetters.redrive({ id: added.id });
    const redriven = await deadLetters.get(added.id);
    await expectCode(
      () => deadLetters.settleRedrive(added.id, { ok: false, attempts: [{ at: new Date(2), error: 'fine' }, { at: new Date(3), error: '\u0000' }] }),
      ErrorCode.Serialization,
      /attempt error contains the character U\+0000/,
    );
    assert.deepEqual(await deadLetters.get(added.id), redriven);
    await deadLetters.settleRedrive(added.id, { ok: false, attempts: [{ at: new Date(2), error: 'fine' }] });
    assert.deepEqual((await deadLetters.get(added.id))?.attempts, [...added.attempts, { at: new Date(2), error: 'fine' }]);
  });
});

describe('PostgresDeadLetterStore: concurrent changes', () => {
  it('two failed settlements of one redrive race: the attempts are appended once', async () => {
    const { schema, deadLetters } = await setup(6);
    const added = await deadLetters.add(letter());
    await deadLetters.redrive({ id: added.id });
    const blocker = await schema.pool.connect();
    let settles: Array<Promise<void>> = [];
    try {
      await blocker.query('BEGIN');
      await blocker.query(`SELECT 1 FROM "${schema.name}".dead_letters WHERE id = $1 FOR UPDATE`, [added.id]);
      settles = [
        deadLetters.settleRedrive(added.id, { ok: false, attempts: [{ at: new Date(10), error: 'node a' }] }),
        deadLetters.settleRedrive(added.id, { ok: false, attempts: [{ at: new Date(20), error: 'node b' }] }),
      ];
      await waitForLockWaiters(schema.pool, schema.name, 2);
      await blocker.query('COMMIT');
    } finally {
      blocker.release();
    }
    await Promise.all(settles);
    const got = await deadLetters.get(added.id);
    assert.equal(got?.status, 'dead');
    assert.equal(got?.attempts.length, 2, `one settlement applied, the other found the letter no longer in redrive: ${JSON.stringify(got?.attempts)}`);
    assert.deepEqual(got?.attempts[0], added.attempts[0]);
  });

  it('a discard committed while a failed settlement waits for the row wins: nothing is resurrected', async () => {
    const { schema, deadLetters } = await setup(6);
    const added = await deadLetters.add(letter());
    const other = await deadLetters.add(letter({ key: 'other' }));
    await deadLetters.redrive({ source: 'mailer' });
    const operator = await schema.pool.connect();
    let settle: Promise<void> | undefined;
    try {
      await operator.query('BEGIN');
      await operator.query(`DELETE FROM "${schema.name}".dead_letters WHERE id = $1`, [added.id]);
      settle = deadLetters.settleRedrive(added.id, { ok: false, attempts: [{ at: new Date(10), error: 'failed again' }] });
      await waitForLockWaiters(schema.pool, schema.name, 1);
      await operator.query('COMMIT');
    } finally {
      operator.release();
    }
    await settle;
    assert.equal(await deadLetters.get(added.id), undefined);
    assert.deepEqual((await deadLetters.list()).map((l) => l.id), [other.id]);
  });

  it('a fenced write waits for an uncommitted claim of its checkpoint, and is fenced once the claim commits', async () => {
    const { schema, deadLetters, completions } = await setup(6);
    const checkpoints = new PostgresCheckpointStore({ pool: schema.pool, schema: schema.name });
    await checkpoints.claim('cp', 5);
    const redriven = await deadLetters.add(letter());
    await deadLetters.redrive({ id: redriven.id });
    const before = await deadLetters.list();
    const newLeader = await schema.pool.connect();
    try {
      await newLeader.query('BEGIN');
      await savePostgresCheckpoint(newLeader, 'cp', 1, { fencingToken: 9, schema: schema.name });
      const writes = [
        outcome(deadLetters.add(letter({ key: 'stale' }), fence('cp', 5))),
        outcome(deadLetters.settleRedrive(redriven.id, { ok: true }, fence('cp', 5))),
        outcome(completions.markCompleted('mailer', [{ position: 1, itemId: 'stale' }], fence('cp', 5))),
      ];
      await waitForLockWaiters(schema.pool, schema.name, 3, 'checkpoints');
      await newLeader.query('COMMIT');
      for (const result of await Promise.all(writes)) {
        assert.ok('error' in result && isEskitError(result.error, ErrorCode.Fenced), `fenced, got ${JSON.stringify(result)}`);
        const error = result.error as FencedError;
        assert.deepEqual([error.lockName, error.fencingToken, error.currentToken], ['cp', 5, 9], 'the token the claim committed');
      }
    } finally {
      newLeader.release();
    }
    assert.deepEqual(await deadLetters.list(), before, 'no stale write landed');
    assert.deepEqual(await completions.completedAfter('mailer', 0), new Set());
  });

  it('a fenced write that waited for a claim rolled back goes through', async () => {
    const { schema, deadLetters, completions } = await setup(6);
    const checkpoints = new PostgresCheckpointStore({ pool: schema.pool, schema: schema.name });
    await checkpoints.claim('cp', 5);
    const other = await schema.pool.connect();
    let writes: Array<Promise<{ value: unknown } | { error: unknown }>> = [];
    try {
      await other.query('BEGIN');
      await savePostgresCheckpoint(other, 'cp', 1, { fencingToken: 9, schema: schema.name });
      writes = [
        outcome(deadLetters.add(letter(), fence('cp', 5))),
        outcome(completions.markCompleted('mailer', [{ position: 1, itemId: 'a' }], fence('cp', 5))),
      ];
      await waitForLockWaiters(schema.pool, schema.name, 2, 'checkpoints');
      await other.query('ROLLBACK');
    } finally {
      other.release();
    }
    for (const result of await Promise.all(writes)) assert.ok('value' in result, `applied, got ${String((result as { error: unknown }).error)}`);
    assert.equal(await deadLetters.count(), 1);
    assert.deepEqual(await completions.completedAfter('mailer', 0), new Set(['1/a']));
  });

  it('a claim waits for a fenced write in flight; the new leader then reads what it wrote', async () => {
    const { schema, completions } = await setup(6);
    const checkpoints = new PostgresCheckpointStore({ pool: schema.pool, schema: schema.name });
    await checkpoints.claim('cp', 5);
    // An uncommitted completion of the same item holds the fenced write inside its statement, after its
    // check has locked the checkpoint row.
    const holder = await schema.pool.connect();
    let mark: Promise<{ value: unknown } | { error: unknown }> | undefined;
    let claim: Promise<{ value: unknown } | { error: unknown }> | undefined;
    let claimed = false;
    try {
      await holder.query('BEGIN');
      await holder.query(`INSERT INTO "${schema.name}".completions (source, position, item_id) VALUES ('mailer', 2, 'b')`);
      mark = outcome(completions.markCompleted('mailer', [{ position: 1, itemId: 'a' }, { position: 2, itemId: 'b' }], fence('cp', 5)));
      await waitForLockWaiters(schema.pool, schema.name, 1, 'completions');
      claim = outcome(
        checkpoints.claim('cp', 6).then(async (position) => {
          claimed = true;
          return { position, seen: await completions.completedAfter('mailer', 0) };
        }),
      );
      await waitForLockWaiters(schema.pool, schema.name, 2, 'checkpoints');
      assert.equal(claimed, false, 'the claim waits for the fenced write');
      await holder.query('COMMIT');
    } finally {
      holder.release();
    }
    assert.ok(mark && 'value' in (await mark), 'the fenced write went through: it checked the fence before the claim');
    const result = await claim;
    assert.ok(result && 'value' in result, `claimed, got ${JSON.stringify(result)}`);
    assert.deepEqual(result.value, { position: undefined, seen: new Set(['1/a', '2/b']) });
    await assert.rejects(completions.markCompleted('mailer', [{ position: 3, itemId: 'c' }], fence('cp', 5)), (e: unknown) => isEskitError(e, ErrorCode.Fenced));
  });

  it('a fence naming a checkpoint PostgreSQL cannot store is refused before any query', async () => {
    const { deadLetters, completions } = await setup();
    const added = await deadLetters.add(letter());
    await deadLetters.redrive({ id: added.id });
    for (const checkpoint of ['cp\u0000', 'cp\ud800']) {
      await expectCode(() => deadLetters.add(letter(), fence(checkpoint, 1)), ErrorCode.InvalidArgument, /fence\.checkpoint contains U\+0000/);
      await expectCode(() => deadLetters.settleRedrive(added.id, { ok: true }, fence(checkpoint, 1)), ErrorCode.InvalidArgument);
      await expectCode(() => completions.markCompleted('mailer', [{ position: 1, itemId: 'x' }], fence(checkpoint, 1)), ErrorCode.InvalidArgument);
    }
    assert.equal(await deadLetters.count(), 1);
    assert.equal((await deadLetters.get(added.id))?.status, 'redrive');
    assert.deepEqual(await completions.completedAfter('mailer', 0), new Set());
  });

  it('stores of several schemas share one pool: the named statements do not collide', async () => {
    const one = await freshSchema({ poolSize: 1 });
    const two = `${one.name}_b`;
    cleanups.push(() => one.pool.query(`DROP SCHEMA IF EXISTS "${two}" CASCADE`));
    const a = new PostgresDeadLetterStore({ pool: one.pool, schema: one.name });
    const b = new PostgresDeadLetterStore({ pool: one.pool, schema: two });
    const ca = new PostgresCompletionStore({ pool: one.pool, schema: one.name });
    const cb = new PostgresCompletionStore({ pool: one.pool, schema: two });
    const inA = await a.add(letter({ key: 'in a' }));
    const inB = await b.add(letter({ key: 'in b' }));
    assert.deepEqual(await a.list(), [inA]);
    assert.deepEqual(await b.list(), [inB]);
    await ca.markCompleted('mailer', [{ position: 1, itemId: 'a' }]);
    await cb.markCompleted('mailer', [{ position: 1, itemId: 'b' }]);
    assert.deepEqual(await ca.completedAfter('mailer', 0), new Set(['1/a']));
    assert.deepEqual(await cb.completedAfter('mailer', 0), new Set(['1/b']));
  });
});

describe('PostgresCompletionStore', () => {
  it('records a large batch in one statement, skipping what was recorded before and duplicates within it', async () => {
    const { completions } = await setup();
    const items = Array.from({ length: 20_000 }, (_, i) => ({ position: 1 + Math.floor(i / 4), itemId: `item-${i % 4}` }));
    await completions.markCompleted('mailer', items.slice(0, 100));
    await completions.markCompleted('mailer', [...items, ...items.slice(0, 10)]);
    const done = await completions.completedAfter('mailer', 0);
    assert.equal(done.size, 20_000);
    assert.ok(done.has('5000/item-3') && done.has('1/item-0'));
    await completions.prune('mailer', 4999);
    assert.deepEqual(await completions.completedAfter('mailer', 0), new Set(['5000/item-0', '5000/item-1', '5000/item-2', '5000/item-3']));
  });

  it('item ids with quotes, braces, commas, backslashes and NULL-looking text round-trip', async () => {
    const { completions } = await setup();
    const ids = ['', 'NULL', 'null', '"quoted"', '{a,b}', 'back\\slash', 'comma,here', ' spaced ', 'ünï 🎉', 'line\nbreak'];
    await completions.markCompleted('mailer', ids.map((itemId, i) => ({ position: i + 1, itemId })));
    assert.deepEqual(await completions.completedAfter('mailer', 0), new Set(ids.map((itemId, i) => `${i + 1}/${itemId}`)));
  });
});

describe('PostgresDeadLetterStore: damaged rows', () => {
  it('reports attempts changed outside eskit with the letter id, and still lets the operator discard it', async () => {
    const { schema, deadLetters } = await setup();
    const bad = await deadLetters.add(letter());
    const good = await deadLetters.add(letter({ key: 'good' }));
    await schema.pool.query(`UPDATE "${schema.name}".dead_letters SET attempts = '{"at": 1}' WHERE id = $1`, [bad.id]);
    await expectCode(() => deadLetters.get(bad.id), ErrorCode.Serialization, new RegExp(`dead letter ${bad.id} cannot be read: its attempts are not a JSON array.*discard`));
    await expectCode(() => deadLetters.list(), ErrorCode.Serialization);
    assert.deepEqual(await deadLetters.list({ afterId: bad.id }), [good]);
    assert.equal(await deadLetters.discard({ id: bad.id }), 1);
    assert.deepEqual(await deadLetters.list(), [good]);
  });
});

describe('PostgresDeadLetterStore and PostgresCompletionStore: connections and lifecycle', () => {
  it('need exactly one of store, pool or connectionString, and check schema and migrate', async () => {
    const schema = await freshSchema();
    const store = new PostgresEventStore({ pool: schema.pool, schema: schema.name });
    cleanups.push(() => store.close());
    const invalid = (e: unknown): boolean => isEskitError(e, ErrorCode.InvalidArgument);
    for (const Store of [PostgresDeadLetterStore, PostgresCompletionStore]) {
      assert.throws(() => new Store({}), (e: unknown) => invalid(e) && /exactly one of/.test((e as Error).message));
      assert.throws(() => new Store({ store, pool: schema.pool }), invalid);
      assert.throws(() => new Store({ connectionString: '' }), invalid);
      assert.throws(() => new Store(null as unknown as { pool: pg.Pool }), invalid);
      assert.throws(() => new Store({ pool: schema.pool, schema: 'Bad-Name' }), invalid);
      assert.throws(() => new Store({ pool: schema.pool, migrate: 'yes' as unknown as boolean }), invalid);
      assert.throws(() => new Store({ store, schema: 'another_schema' }), (e: unknown) => invalid(e) && /shares the event store's schema/.test((e as Error).message));
      assert.equal(new Store({ store }).schema, schema.name);
      assert.equal(new Store({ pool: schema.pool }).schema, 'eskit', 'the default schema');
      assert.equal(new Store({ pool: schema.pool, schema: 'x' }).schema, 'x');
    }
  });

  it('with migrate: false on a new schema, says to migrate; works once migrated', async () => {
    const schema = await freshSchema({ create: true });
    const deadLetters = new PostgresDeadLetterStore({ pool: schema.pool, schema: schema.name, migrate: false });
    const completions = new PostgresCompletionStore({ pool: schema.pool, schema: schema.name, migrate: false });
    await expectCode(() => deadLetters.add(letter()), ErrorCode.Migration, /migrate\(\)/);
    await expectCode(() => deadLetters.list(), ErrorCode.Migration);
    await expectCode(() => completions.completedAfter('mailer', 0), ErrorCode.Migration);
    await expectCode(() => completions.markCompleted('mailer', [{ position: 1, itemId: 'x' }]), ErrorCode.Migration);
    await migratePostgres(schema.pool, schema.name);
    assert.equal(await deadLetters.count(), 0);
    await deadLetters.add(letter());
    assert.equal(await deadLetters.count(), 1);
    assert.deepEqual(await completions.completedAfter('mailer', 0), new Set());
  });

  it('close() ends a pool it created and leaves yours open; every call after it fails with ESKIT_STORE_CLOSED', async () => {
    const schema = await freshSchema();
    const deadLetters = new PostgresDeadLetterStore({ connectionString: schema.connectionString, schema: schema.name });
    const completions = new PostgresCompletionStore({ pool: schema.pool, schema: schema.name });
    const added = await deadLetters.add(letter());
    await completions.markCompleted('mailer', [{ position: 1, itemId: 'x' }]);
    await deadLetters.close();
    await deadLetters.close();
    await completions.close();
    assert.equal(deadLetters.pool.ended, true, 'its own pool is ended');
    assert.equal(schema.pool.ended, false, 'a pool you own is left open');
    await expectCode(() => deadLetters.add(letter()), ErrorCode.StoreClosed);
    await expectCode(() => deadLetters.get(added.id), ErrorCode.StoreClosed);
    await expectCode(() => deadLetters.list(), ErrorCode.StoreClosed);
    await expectCode(() => deadLetters.redrive({ id: added.id }), ErrorCode.StoreClosed);
    await expectCode(() => deadLetters.settleRedrive(added.id, { ok: true }), ErrorCode.StoreClosed);
    await expectCode(() => completions.completedAfter('mailer', 0), ErrorCode.StoreClosed);
    await expectCode(() => completions.markCompleted('mailer', [{ position: 2, itemId: 'x' }]), ErrorCode.StoreClosed);
    const reopened = new PostgresDeadLetterStore({ pool: schema.pool, schema: schema.name });
    assert.deepEqual(await reopened.list(), [added], 'what was written is durable');
    assert.deepEqual(await new PostgresCompletionStore({ pool: schema.pool, schema: schema.name }).completedAfter('mailer', 0), new Set(['1/x']));
  });
});
