import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { afterEach, describe, it } from 'node:test';
import pg from 'pg';
import { v7 as uuidv7 } from 'uuid';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import type { ConcurrencyError, DuplicateEventIdError } from '../../src/core/errors.js';
import type { NewEvent, Recorded } from '../../src/core/event.js';
import { advisoryKey, PostgresEventStore } from '../../src/postgres/index.js';
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
  return { schema, store };
}

async function readAll(store: PostgresEventStore): Promise<Recorded[]> {
  const out: Recorded[] = [];
  for await (const event of store.readAll({ raw: true })) out.push(event);
  return out;
}

const code = (wanted: string) => (error: unknown) => isEskitError(error, wanted);

describe('PostgresEventStore options', () => {
  it('needs exactly one of pool and connectionString', async () => {
    const pool = new pg.Pool({ connectionString: POSTGRES_URL });
    try {
      assert.throws(() => new PostgresEventStore({}), code(ErrorCode.InvalidArgument));
      assert.throws(() => new PostgresEventStore({ pool, connectionString: POSTGRES_URL }), code(ErrorCode.InvalidArgument));
      assert.throws(() => new PostgresEventStore({ connectionString: '' }), code(ErrorCode.InvalidArgument));
      assert.throws(() => new PostgresEventStore(undefined as never), code(ErrorCode.InvalidArgument));
      assert.throws(() => new PostgresEventStore({ pool, migrate: 'yes' as never }), code(ErrorCode.InvalidArgument));
    } finally {
      await pool.end();
    }
  });

  it('validates the schema name as a lower-case identifier', async () => {
    const pool = new pg.Pool({ connectionString: POSTGRES_URL });
    try {
      for (const schema of ['', 'Eskit', '1abc', 'a-b', 'a b', 'x"; DROP SCHEMA public; --', 'a'.repeat(64), 'é', 42]) {
        assert.throws(() => new PostgresEventStore({ pool, schema: schema as string }), code(ErrorCode.InvalidArgument), `schema ${String(schema)}`);
      }
      for (const schema of ['eskit', '_x', 'tenant_42', 'a'.repeat(63)]) {
        assert.equal(new PostgresEventStore({ pool, schema }).schema, schema);
      }
    } finally {
      await pool.end();
    }
  });

  it('close() ends a pool made from connectionString, and leaves a given pool open', async () => {
    const schema = await createTestSchema({ create: false });
    cleanups.push(() => schema.drop());
    const applicationName = `eskit_close_${randomBytes(4).toString('hex')}`;
    const url = new URL(POSTGRES_URL);
    url.searchParams.set('application_name', applicationName);
    const owned = new PostgresEventStore({ connectionString: url.toString(), schema: schema.name });
    await Promise.all([owned.append('a', [{ type: 'A', data: 1 }]), owned.headPosition(), owned.streamVersion('a')]);
    const connections = async (): Promise<number> =>
      Number((await schema.pool.query('SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1', [applicationName])).rows[0].n);
    assert.ok((await connections()) > 0, 'the store connected with its own pool');
    await owned.close();
    await waitUntil(async () => (await connections()) === 0, { message: "the store's own connections to close" });

    const given = new PostgresEventStore({ pool: schema.pool, schema: schema.name });
    assert.equal(await given.headPosition(), 1);
    await given.close();
    assert.equal((await schema.pool.query('SELECT 1 AS one')).rows[0].one, 1, 'the given pool still works');
  });

  it('stores of different schemas share one pool without mixing (named statements carry the schema)', async () => {
    const a = await setup();
    const bSchema = await createTestSchema({ create: false });
    cleanups.push(() => bSchema.drop());
    const b = new PostgresEventStore({ pool: a.schema.pool, schema: bSchema.name });
    cleanups.push(() => b.close());
    await a.store.append('s', [{ type: 'InA', data: 1 }]);
    await b.append('s', [{ type: 'InB', data: 1 }, { type: 'InB', data: 2 }]);
    await a.store.append('s', [{ type: 'InA', data: 2 }]);
    assert.deepEqual((await readAll(a.store)).map((e) => [e.type, e.position, e.streamVersion]), [['InA', 1, 1], ['InA', 2, 2]]);
    assert.deepEqual((await readAll(b)).map((e) => [e.type, e.position, e.streamVersion]), [['InB', 1, 1], ['InB', 2, 2]]);
  });
});

describe('PostgresEventStore writes', () => {
  it('returns positions and versions as numbers, also beyond 32 bits', async () => {
    const { schema, store } = await setup();
    await store.migrate();
    const start = 2 ** 40 + 7;
    await schema.pool.query(`ALTER SEQUENCE "${schema.name}".events_position RESTART WITH ${start}`);
    const written = await store.append('s', [{ type: 'A', data: 1 }, { type: 'A', data: 2 }]);
    assert.deepEqual(written.events.map((e) => e.position), [start, start + 1]);
    const read = await readAll(store);
    assert.deepEqual(read.map((e) => [e.position, e.streamVersion]), [[start, 1], [start + 1, 2]]);
    assert.equal(typeof read[0]!.position, 'number');
    assert.ok(read[0]!.timestamp instanceof Date);
    assert.equal(await store.headPosition(), start + 1);
    assert.equal(await store.streamVersion('s'), 2);
  });

  it('a version conflict carries the actual version and uses no position', async () => {
    const { store } = await setup();
    const first = await store.append('s', [{ type: 'A', data: 1 }, { type: 'A', data: 2 }]);
    for (const expectedVersion of [0, 1, 3, 'no_stream'] as const) {
      await assert.rejects(store.append('s', [{ type: 'A', data: 3 }], { expectedVersion }), (e: unknown) => {
        const error = e as ConcurrencyError;
        return isEskitError(e, ErrorCode.Concurrency) && error.actualVersion === 2 && error.expectedVersion === expectedVersion;
      });
    }
    await assert.rejects(store.append('other', [{ type: 'A', data: 3 }], { expectedVersion: 'stream_exists' }), (e: unknown) => {
      return isEskitError(e, ErrorCode.Concurrency) && (e as ConcurrencyError).actualVersion === 0;
    });
    const next = await store.append('s', [{ type: 'A', data: 3 }], { expectedVersion: 2 });
    assert.equal(next.position, first.position + 1, 'refused appends drew no positions');
  });

  it('a duplicate event id (stored before, or twice in one batch) is ESKIT_DUPLICATE_EVENT_ID naming it, and writes nothing', async () => {
    const { store } = await setup();
    const id = uuidv7();
    await store.append('s', [{ type: 'A', data: 1, id }]);
    const fresh = uuidv7();
    const cases: { streamId: string; events: NewEvent[]; duplicate: string }[] = [
      { streamId: 's', events: [{ type: 'A', data: 2 }, { type: 'A', data: 3, id }], duplicate: id },
      { streamId: 't', events: [{ type: 'A', data: 2, id: fresh }, { type: 'A', data: 3, id: fresh }], duplicate: fresh },
      { streamId: 't', events: [{ type: 'A', data: 2, id: id.toUpperCase() }], duplicate: id },
    ];
    for (const { streamId, events, duplicate } of cases) {
      await assert.rejects(store.append(streamId, events), (e: unknown) => {
        return isEskitError(e, ErrorCode.DuplicateEventId) && (e as DuplicateEventIdError).eventId.toLowerCase() === duplicate;
      });
    }
    assert.deepEqual((await readAll(store)).map((e) => e.data), [1]);
    assert.equal(await store.streamVersion('t'), 0);
    assert.equal((await store.append('s', [{ type: 'A', data: 4 }], { expectedVersion: 1 })).nextExpectedVersion, 2);
  });

  it('NUL or a lone surrogate in data, metadata, a stream id or a type is ESKIT_SERIALIZATION naming the event and path; nothing written', async () => {
    const { store } = await setup();
    await store.append('s', [{ type: 'A', data: 'before' }]);
    const serialization = (pattern: RegExp) => (e: unknown) => isEskitError(e, ErrorCode.Serialization) && pattern.test((e as Error).message);
    await assert.rejects(store.append('s', [{ type: 'A', data: 1 }, { type: 'B', data: { t: 'a\u0000b' } }]), serialization(/event 1 \(B\): data\.t .*U\+0000/));
    await assert.rejects(store.append('s', [{ type: 'A', data: 1, metadata: { note: '\u0000' } }]), serialization(/event 0 \(A\): metadata\.note/));
    await assert.rejects(store.append('s', [{ type: 'A', data: 'x\ud800y' }]), serialization(/event 0 \(A\): data .*surrogate/));
    // A backslash followed by the text "u0000" is ordinary text and is stored.
    await store.append('s', [{ type: 'A', data: '\\u0000' }]);
    await assert.rejects(store.append('s\u0000', [{ type: 'A', data: 1 }]), serialization(/streamId/));
    await assert.rejects(store.append('s\udc00', [{ type: 'A', data: 1 }]), serialization(/streamId/));
    await assert.rejects(store.append('s', [{ type: 'A', data: 1 }, { type: 'T\u0000', data: 1 }]), serialization(/event 1: its type/));
    assert.deepEqual((await readAll(store)).map((e) => e.data), ['before', '\\u0000']);
    // Reads with such names find nothing rather than failing: they cannot have been stored.
    assert.equal(await store.streamVersion('s\u0000'), 0);
    for await (const _ of store.readStream('s\u0000')) assert.fail('no such stream');
    for await (const _ of store.readAll({ types: ['T\u0000'] })) assert.fail('no such type');
  });
});

describe('PostgresEventStore serialised appends', () => {
  it('an append whose transaction is still open makes other appends wait (not reads); they land after it commits', { timeout: 30_000 }, async () => {
    const { schema, store } = await setup();
    await store.append('before', [{ type: 'A', data: 0 }]);
    const holder = new pg.Client({ connectionString: POSTGRES_URL });
    await holder.connect();
    cleanups.push(() => holder.end());
    await holder.query('BEGIN');
    const held = await holder.query(`SELECT first_position FROM "${schema.name}".append('held', -1, $1, $2, $3, $4)`, [
      [uuidv7()],
      ['Held'],
      ['{}'],
      ['{}'],
    ]);
    const heldPosition = Number(held.rows[0].first_position);

    const waiting = store.append('waiting', [{ type: 'Waiting', data: 1 }]);
    let settled = false;
    void waiting.then(
      () => (settled = true),
      () => (settled = true),
    );
    const [classId, objId] = advisoryKey('append', schema.name);
    await waitUntil(
      async () => {
        const r = await schema.pool.query(
          `SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 2`,
          [classId >>> 0, objId >>> 0],
        );
        return Number(r.rows[0].n) === 1;
      },
      { message: 'the second append to wait for the append lock' },
    );
    // Readers are not blocked, and do not see the uncommitted append.
    assert.deepEqual((await readAll(store)).map((e) => e.streamId), ['before']);
    assert.equal(await store.headPosition(), heldPosition - 1);
    assert.equal(settled, false, 'the second append is still waiting');

    await holder.query('COMMIT');
    const landed = await waiting;
    assert.ok(landed.position > heldPosition, `the waiting append (${landed.position}) lands after the held one (${heldPosition})`);
    assert.deepEqual((await readAll(store)).map((e) => e.streamId), ['before', 'held', 'waiting']);
  });
});
