// The out-of-order-commit stress test. Writers take their positions, then keep the transaction open for
// a random few milliseconds before committing, so with plain sequences later positions often commit
// first. A reader tails by position the whole time. The same harness runs twice: against the store
// (must see every event exactly once, in order) and against a naive bigserial table (must skip some,
// which proves the harness can catch a skip at all).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { v7 as uuidv7 } from 'uuid';
import { appendOneStatements } from '../../src/postgres/append-functions.js';
import { PostgresEventStore } from '../../src/postgres/index.js';
import { createTestSchema, POSTGRES_URL } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';

const WRITERS = 8;
const APPENDS_PER_WRITER = 30;
const MAX_HOLD_MS = 4;

interface Seen {
  id: string;
  position: number;
}

interface Target {
  /** Inside the writer's open transaction: write `ids` to the writer's stream, which is at `version`. */
  append(client: pg.Client, writer: number, ids: string[], version: number): Promise<void>;
  /** Everything visible after `after`, in position order. */
  readAfter(after: number): Promise<Seen[]>;
}

interface RaceResult {
  written: string[];
  seen: Seen[];
}

async function race(target: Target): Promise<RaceResult> {
  const clients = await Promise.all(
    Array.from({ length: WRITERS }, async () => {
      const client = new pg.Client({ connectionString: POSTGRES_URL });
      await client.connect();
      return client;
    }),
  );
  const written: string[] = [];
  const seen: Seen[] = [];
  let writing = true;
  try {
    const writers = Promise.all(
      clients.map(async (client, writer) => {
        let version = 0;
        for (let i = 0; i < APPENDS_PER_WRITER; i++) {
          const ids = Array.from({ length: 1 + ((writer + i) % 3) }, () => uuidv7());
          await client.query('BEGIN');
          await target.append(client, writer, ids, version);
          // The position is taken; hold the transaction open before committing.
          await client.query('SELECT pg_sleep($1)', [(Math.random() * MAX_HOLD_MS) / 1000]);
          await client.query('COMMIT');
          version += ids.length;
          written.push(...ids);
        }
      }),
    ).finally(() => {
      writing = false;
    });
    const reader = (async () => {
      let last = 0;
      for (;;) {
        // Read once more after the writers are done: that read sees every commit.
        const finished = !writing;
        const page = await target.readAfter(last);
        for (const event of page) {
          seen.push(event);
          last = event.position;
        }
        if (finished && page.length === 0) return;
        if (page.length === 0) await new Promise((resolve) => setImmediate(resolve));
      }
    })();
    await Promise.all([writers, reader]);
  } finally {
    await Promise.all(clients.map((c) => c.end()));
  }
  return { written, seen };
}

describe('global order under out-of-order commits (8 writers, transactions held open after the position is taken)', () => {
  let schema: TestSchema;
  let store: PostgresEventStore;

  before(async () => {
    schema = await createTestSchema({ create: false });
    store = new PostgresEventStore({ pool: schema.pool, schema: schema.name });
    await store.migrate();
  });

  after(async () => {
    await store?.close();
    await schema?.drop();
  });

  it('the store: a reader tailing readAll({ after }) sees every event exactly once, in strictly increasing order', { timeout: 60_000 }, async () => {
    const s = `"${schema.name}"`;
    const { written, seen } = await race({
      async append(client, writer, ids, version) {
        // Both append functions: append_one for single events, append for batches.
        const n = ids.length;
        const stream = `writer-${writer}`;
        if (n === 1) {
          await client.query(`SELECT * FROM ${s}.append_one($1, $2, $3, 'Written', $4, $5)`, [stream, version, ids[0], JSON.stringify({ id: ids[0] }), '{}']);
        } else {
          await client.query(`SELECT * FROM ${s}.append($1, $2, $3, $4, $5, $6)`, [
            stream,
            version,
            ids,
            ids.map(() => 'Written'),
            ids.map((id) => JSON.stringify({ id })),
            ids.map(() => JSON.stringify({ n })),
          ]);
        }
      },
      async readAfter(last) {
        const out: Seen[] = [];
        for await (const event of store.readAll({ after: last, raw: true })) out.push({ id: event.id, position: event.position });
        return out;
      },
    });

    assert.equal(written.length, Array.from({ length: WRITERS }, (_, w) => eventsOf(w)).reduce((a, b) => a + b));
    const ids = seen.map((e) => e.id);
    assert.equal(new Set(ids).size, ids.length, 'no event is seen twice');
    const seenIds = new Set(ids);
    assert.deepEqual(written.filter((id) => !seenIds.has(id)), [], 'the tailing reader missed events');
    assert.equal(ids.length, written.length, 'the reader saw exactly what was written');
    for (let i = 1; i < seen.length; i++) {
      assert.ok(seen[i]!.position > seen[i - 1]!.position, `position ${seen[i]!.position} came after ${seen[i - 1]!.position}`);
    }
    for (let writer = 0; writer < WRITERS; writer++) {
      assert.equal(await store.streamVersion(`writer-${writer}`), eventsOf(writer));
    }
  });

  it('the lone append statement pair (the lock, then one INSERT, in one transaction): the tailing reader sees every event exactly once, in order', { timeout: 60_000 }, async () => {
    const statements = appendOneStatements(`"${schema.name}"`, schema.name);
    const before = await store.headPosition();
    const { written, seen } = await race({
      async append(client, writer, ids, version) {
        // One event per statement pair, as the store sends a lone one-event append.
        for (const [k, id] of ids.entries()) {
          await client.query(statements.lock);
          const { rows } = await client.query<{ position: string | null }>(
            statements.insert,
            [`pair-${writer}`, version + k, id, 'Written', JSON.stringify({ id }), '{}'],
          );
          assert.notEqual(rows[0]?.position, null, 'the expected version held');
        }
      },
      async readAfter(last) {
        const out: Seen[] = [];
        for await (const event of store.readAll({ after: Math.max(last, before), raw: true })) out.push({ id: event.id, position: event.position });
        return out;
      },
    });
    const ids = seen.map((e) => e.id);
    assert.equal(new Set(ids).size, ids.length, 'no event is seen twice');
    const seenIds = new Set(ids);
    assert.deepEqual(written.filter((id) => !seenIds.has(id)), [], 'the tailing reader missed events');
    for (let i = 1; i < seen.length; i++) {
      assert.ok(seen[i]!.position > seen[i - 1]!.position, `position ${seen[i]!.position} came after ${seen[i - 1]!.position}`);
    }
  });

  it('a naive bigserial table under the same harness makes the tailing reader skip events (the harness can fail)', { timeout: 60_000 }, async (t) => {
    const table = `"${schema.name}".naive_events`;
    await schema.pool.query(`CREATE TABLE ${table} (position bigserial PRIMARY KEY, id uuid NOT NULL UNIQUE, stream_id text NOT NULL, data jsonb NOT NULL)`);
    const { written, seen } = await race({
      async append(client, writer, ids) {
        await client.query(`INSERT INTO ${table} (id, stream_id, data) SELECT id, $2, '{}' FROM unnest($1::uuid[]) AS u(id)`, [ids, `writer-${writer}`]);
      },
      async readAfter(last) {
        const result = await schema.pool.query<{ id: string; position: string }>(
          `SELECT id, position FROM ${table} WHERE position > $1 ORDER BY position LIMIT 500`,
          [last],
        );
        return result.rows.map((r) => ({ id: r.id, position: Number(r.position) }));
      },
    });

    const seenIds = new Set(seen.map((e) => e.id));
    const missed = written.filter((id) => !seenIds.has(id));
    t.diagnostic(`the naive reader missed ${missed.length} of ${written.length} events`);
    assert.ok(missed.length > 0, `the naive table should have made the tailing reader skip events, but it saw all ${written.length}`);
    // They were committed all right: a read from the start finds every one of them.
    const all = await schema.pool.query<{ id: string }>(`SELECT id FROM ${table}`);
    const stored = new Set(all.rows.map((r) => r.id));
    assert.ok(missed.every((id) => stored.has(id)), 'the skipped events are in the table');
    assert.equal(stored.size, written.length);
  });
});

/** How many events writer `w` appends (batches of 1 to 3). */
function eventsOf(writer: number): number {
  let count = 0;
  for (let i = 0; i < APPENDS_PER_WRITER; i++) count += 1 + ((writer + i) % 3);
  return count;
}
