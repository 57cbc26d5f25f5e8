// Red team of stream lifecycle (issue 19): deletes and truncates racing appends and readers, across
// several stores (pools) on one PostgreSQL schema; migrations; categories. Each test states what it
// checks; FOUND notes say what broke before its fix.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { Recorded } from '../../src/core/event.js';
import { isEskitError, ErrorCode } from '../../src/core/errors.js';
import { PostgresEventStore } from '../../src/postgres/index.js';
import { createTestSchema } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';
import { categoryOf } from '../../src/core/store.js';
import { MemoryEventStore } from '../../src/memory/index.js';
import { SqliteEventStore } from '../../src/sqlite/index.js';
import type { EventStore } from '../../src/core/store.js';
import { databasesAfterEach } from '../sqlite/helpers.js';
import { MemoryView } from '../../src/view/index.js';
import { silentLogger } from '../../src/core/logger.js';
import { memory } from '../../src/memory/index.js';
import { sqlite } from '../../src/sqlite/index.js';
import Database from 'better-sqlite3';
import { migrateSqlite, SQLITE_MIGRATIONS } from '../../src/sqlite/migrations.js';
import { migratePostgres, POSTGRES_MIGRATIONS } from '../../src/postgres/migrations.js';
import pg from 'pg';
import { sqliteCounter } from '../view/helpers.js';
import { Subscription } from '../../src/subscription/index.js';
import { waitUntil } from '../../src/testing/wait.js';

let cleanups: Array<() => unknown> = [];
afterEach(async () => {
  const pending = cleanups.reverse();
  cleanups = [];
  for (const cleanup of pending) await cleanup();
});

async function pgSchema(): Promise<TestSchema> {
  const schema = await createTestSchema({ create: false, poolSize: 3 });
  cleanups.push(() => schema.drop());
  return schema;
}

function pgStore(schema: TestSchema, pageSize = 500): PostgresEventStore {
  const store = new PostgresEventStore({ connectionString: schema.connectionString, schema: schema.name, pageSize });
  cleanups.push(() => store.close());
  return store;
}

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) out.push(item);
  return out;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('red team: stream lifecycle on PostgreSQL, several stores', () => {
  it('a reader paging by position while other stores append, delete and truncate never skips a live event nor goes back; positions are never reused', async () => {
    const schema = await pgSchema();
    const setup = pgStore(schema);
    await setup.migrate();
    const writers = [pgStore(schema), pgStore(schema), pgStore(schema)];
    const reader = pgStore(schema, 7);
    const streams = Array.from({ length: 6 }, (_, i) => `s${i}-x`);
    const handedOut: number[] = [];
    let stop = false;
    const failures: unknown[] = [];
    const tolerated = (error: unknown): boolean =>
      isEskitError(error, ErrorCode.Concurrency) || isEskitError(error, ErrorCode.StreamNotFound) || isEskitError(error, ErrorCode.InvalidArgument);
    const appender = async (store: PostgresEventStore, seed: number): Promise<void> => {
      let n = seed;
      while (!stop) {
        const stream = streams[n++ % streams.length] as string;
        const count = 1 + (n % 3);
        try {
          // Several appends at once so the group commit sends append_group as well as the lone paths.
          const results = await Promise.all(
            Array.from({ length: 1 + (n % 2) }, () => store.append(stream, Array.from({ length: count }, (_, k) => ({ type: 'A', data: k })))),
          );
          for (const r of results) for (const e of r.events) handedOut.push(e.position);
        } catch (error) {
          if (!tolerated(error)) failures.push(error);
        }
      }
    };
    const lifecycler = async (store: PostgresEventStore): Promise<void> => {
      let n = 0;
      while (!stop) {
        const stream = streams[n++ % streams.length] as string;
        try {
          if (n % 3 === 0) handedOut.push((await store.truncateStream(stream, 2)).position);
          else handedOut.push((await store.deleteStream(stream, { hard: n % 2 === 0 })).position);
        } catch (error) {
          if (!tolerated(error)) failures.push(error);
        }
        await sleep(3);
      }
    };
    const seen: Recorded[] = [];
    let last = 0;
    const readLoop = async (): Promise<void> => {
      while (!stop) {
        for await (const event of reader.readAll({ after: last, raw: true })) {
          assert.ok(event.position > last, `went back: ${event.position} after ${last}`);
          last = event.position;
          seen.push(event);
        }
        await sleep(1);
      }
    };
    const running = [appender(writers[0]!, 0), appender(writers[1]!, 1), lifecycler(writers[2]!), readLoop()];
    await sleep(2500);
    stop = true;
    await Promise.all(running);
    assert.deepEqual(failures, []);
    // Positions handed out (appends and lifecycle events) are unique.
    assert.equal(new Set(handedOut).size, handedOut.length, 'a position was handed out twice');
    // Every event still in the log at or below the last position the reader saw was seen by it.
    const seenPositions = new Set(seen.map((e) => e.position));
    const final = await collect(setup.readAll({ raw: true }));
    const skipped = final.filter((e) => e.position <= last && !seenPositions.has(e.position));
    assert.deepEqual(skipped.map((e) => e.position), [], 'the reader skipped live events');
    // Each stream's events have consecutive versions, ending at its version.
    for (const stream of streams) {
      const events = await collect(setup.readStream(stream));
      const version = await setup.streamVersion(stream);
      if (events.length === 0) continue;
      assert.equal(events[events.length - 1]!.streamVersion, version);
      events.forEach((e, i) => assert.equal(e.streamVersion, events[0]!.streamVersion + i));
    }
    assert.ok(seen.length > 50, `the run did something (${seen.length} events seen)`);
  });
});

describe('red team: appends to deleted streams through every PostgreSQL write path (held)', () => {
  it("append_group, the lone one-event statement pair and append(): 'refuse' wins over any expected version; 'restart' numbers from 1 within a group", async () => {
    const schema = await pgSchema();
    const store = pgStore(schema);
    const other = pgStore(schema);
    await store.append('refused-1', [{ type: 'A', data: 1 }]);
    await store.append('restart-1', [{ type: 'A', data: 1 }, { type: 'A', data: 2 }]);
    await store.deleteStream('refused-1', { appends: 'refuse' });
    await store.deleteStream('restart-1');
    const outcome = (p: Promise<{ nextExpectedVersion: number }>) => p.then((r) => `v${r.nextExpectedVersion}`, (e: { code?: string }) => `${e.code}`);
    // Made in one turn: one group (append_group).
    const grouped = await Promise.all([
      outcome(other.append('refused-1', [{ type: 'A', data: 1 }])),
      outcome(other.append('restart-1', [{ type: 'A', data: 1 }], { expectedVersion: 'no_stream' })),
      outcome(other.append('refused-1', [{ type: 'A', data: 1 }, { type: 'A', data: 2 }], { expectedVersion: 'no_stream' })),
      outcome(other.append('restart-1', [{ type: 'A', data: 1 }], { expectedVersion: 'no_stream' })),
      outcome(other.append('restart-1', [{ type: 'A', data: 1 }, { type: 'A', data: 1 }], { expectedVersion: 1 })),
      outcome(other.append('refused-1', [{ type: 'A', data: 1 }], { expectedVersion: 3 })),
    ]);
    assert.deepEqual(grouped, ['ESKIT_STREAM_DELETED', 'v1', 'ESKIT_STREAM_DELETED', 'ESKIT_CONCURRENCY', 'v3', 'ESKIT_STREAM_DELETED']);
    // Alone: the statement pair (one event) and append() (several).
    assert.equal(await outcome(other.append('refused-1', [{ type: 'A', data: 1 }], { expectedVersion: 0 })), 'ESKIT_STREAM_DELETED');
    assert.equal(await outcome(other.append('refused-1', [{ type: 'A', data: 1 }, { type: 'B', data: 1 }])), 'ESKIT_STREAM_DELETED');
    assert.equal(await store.streamVersion('refused-1'), 0);
  });
});

// ---------------------------------------------------------------------------------------------------
// Categories: awkward stream ids read the same on every adapter as categoryOf says.

const files = databasesAfterEach('lifecycle-redteam');

const awkwardIds = [
  'order-1', 'order--2', 'order-a-b-c', 'Order-1', 'ORDER-1', 'order', 'orders-1', 'order_-1', 'order%-1', 'ord%-1', 'ord_r-1',
  'ordér-1', 'orde\u0301r-1', '注文-1', '🧾-1', '🧾🧾-x', 'a b-1', ' -1', 'x\u2011y-1', 'tab\t-1', 'new\nline-1', 'quote\'s-1', 'back\\slash-1', '*-1', '.-1',
];

const categoryAdapters: Array<[string, () => Promise<EventStore>]> = [
  ['memory', async () => new MemoryEventStore()],
  [
    'SQLite',
    async () => {
      const store = new SqliteEventStore({ path: files.freshPath(), pageSize: 3 });
      cleanups.push(() => store.close());
      return store;
    },
  ],
  ['PostgreSQL', async () => pgStore(await pgSchema(), 3)],
];

for (const [adapter, make] of categoryAdapters) {
  describe(`red team: categories of awkward stream ids on ${adapter}`, () => {
    it('readAll({ category }) returns exactly the events whose categoryOf is the category, lifecycle events of the category included when named', async () => {
      const store = await make();
      for (const id of awkwardIds) await store.append(id, [{ type: 'A', data: id }, { type: 'B', data: id }]);
      await store.deleteStream('order-a-b-c');
      await store.truncateStream('ordér-1', 2);
      const all = await collect(store.readAll({ raw: true }));
      const categories = [...new Set(awkwardIds.map(categoryOf))];
      for (const category of categories) {
        const expected = all.filter((e) => categoryOf(e.streamId) === category).map((e) => e.position);
        const got = (await collect(store.readAll({ category, raw: true }))).map((e) => e.position);
        assert.deepEqual(got, expected, `category ${JSON.stringify(category)}`);
        const typed = (await collect(store.readAll({ category, types: ['B', '$stream.deleted'] }))).map((e) => e.position);
        assert.deepEqual(typed, all.filter((e) => categoryOf(e.streamId) === category && (e.type === 'B' || e.type === '$stream.deleted')).map((e) => e.position));
        const after = expected[1] ?? 0;
        const resumed = (await collect(store.readAll({ category, after, limit: 2, raw: true }))).map((e) => e.position);
        assert.deepEqual(resumed, expected.filter((p) => p > after).slice(0, 2));
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------------
// Views: waitFor the position of an event whose stream is deleted while the view is behind it.

describe('red team: waitFor and a stream deleted while the view is behind', () => {
  // FOUND, FIXED: waitFor(p) worked out once, when it began, the last event of the view up to p and
  // waited for the checkpoint to reach it. When that event's stream was deleted (or truncated) before
  // the view got to it, the view never applied it and its checkpoint never reached it: waitFor timed
  // out ("is the view started ...?") although the view was up to date. It now looks again every second.
  it('memory view: waitFor(p) resolves once the view is past what is left of the log, when the event at p was deleted after waitFor began', async () => {
    const backend = memory();
    const view = new MemoryView<number>({ name: 'v', backend, types: ['Counted'], initialState: 0, evolve: (s) => s + 1, logger: silentLogger, checkpointPollMs: 10 });
    cleanups.push(() => view.stop());
    await backend.store.append('keep-1', [{ type: 'Counted', data: { n: 1 } }]);
    const { position } = await backend.store.append('doomed-1', [{ type: 'Counted', data: { n: 2 } }]);
    // The view is behind (not started yet: a restart, a deploy, another node lagging) when waitFor begins.
    const waiting = view.waitFor(position, { timeoutMs: 4000 });
    await sleep(50);
    await backend.store.deleteStream('doomed-1');
    await view.start();
    await waiting;
    assert.equal(view.state, 1);
  });

  it('SQLite SQL view: the same', async () => {
    const backend = sqlite({ path: files.freshPath() });
    cleanups.push(() => backend.close());
    const view = sqliteCounter(backend as never, { leaderLock: false, checkpointPollMs: 10 });
    cleanups.push(() => view.stop());
    await backend.store.append('keep-1', [{ type: 'Counted', data: { n: 1 } }]);
    const { position } = await backend.store.append('doomed-1', [{ type: 'Counted', data: { n: 2 } }]);
    const waiting = view.waitFor(position, { timeoutMs: 4000 });
    await sleep(50);
    await backend.store.deleteStream('doomed-1');
    await view.start();
    await waiting;
  });
});

// ---------------------------------------------------------------------------------------------------
// Subscriptions of every type at the end of a log whose tail is lifecycle events.

/** A memory store that counts the rows its reads of the log fetch. */
class CountingStore extends MemoryEventStore {
  rowsRead = 0;
  protected override async readAllRows(after: number, limit: number, filter: Parameters<MemoryEventStore['readAllRows']>[2]) {
    const rows = await super.readAllRows(after, limit, filter);
    this.rowsRead += rows.length;
    return rows;
  }
}

describe('red team: a subscription idle behind a tail of lifecycle events', () => {
  // FOUND, FIXED: a subscription (or view, automation) without `types` whose log ends with lifecycle
  // events (a purge that deleted many streams, and nothing appended since) re-read that whole tail on
  // every poll and every wake-up, for as long as nothing else was appended. Its typed readAll skips the
  // $stream.* rows (keepsLifecycleEvents), so the page held no event, `through` stayed at the last
  // event handled (LogReader and SharedLog took the last *event's* position), and the next read started
  // below the tail again; the checkpoint never passed it either, so a restart read it again. Here 2,000
  // deleted streams and a 20 ms poll: ~90,000 rows fetched per idle second on the memory store. Now
  // readAll's iterable tells how far it looked (LOOKED_THROUGH) and the runners go on from there.
  for (const partitions of [undefined, 3]) {
    it(`re-reads no lifecycle tail on each idle poll, and delivers what comes after it (${partitions === undefined ? 'plain' : 'partitioned'})`, async () => {
      const store = new CountingStore();
      const backend = { ...memory(), store };
      await store.append('live-1', [{ type: 'A', data: 1 }]);
      for (let i = 0; i < 2000; i++) {
        await store.append(`gone-${i}`, [{ type: 'A', data: i }]);
        await store.deleteStream(`gone-${i}`);
      }
      const head = await store.headPosition();
      const seen: number[] = [];
      const subscription = new Subscription({
        name: 'all',
        backend,
        leaderLock: false,
        logger: silentLogger,
        pollIntervalMs: 20,
        ...(partitions === undefined ? {} : { partitions }),
        handler: (event) => void seen.push(event.position),
      });
      cleanups.push(() => subscription.stop());
      await subscription.start();
      await waitUntil(async () => (partitions === undefined ? await backend.checkpoints.load('all') : head) === head, { message: 'the checkpoint to pass the tail' });
      await sleep(100);
      assert.equal(seen.length, 1);
      const before = store.rowsRead;
      await sleep(1000);
      const idle = store.rowsRead - before;
      assert.ok(idle < 2000, `an idle second re-read ${idle} rows of a 2,000-row lifecycle tail`);
      const { position } = await store.append('live-2', [{ type: 'A', data: 2 }]);
      await waitUntil(() => seen.includes(position), { message: 'the event after the tail' });
      assert.equal(seen.length, 2);
    });
  }
});

// ---------------------------------------------------------------------------------------------------
// Migrations of logs written before lifecycle events: positions stay monotonic (these held).
describe('red team: upgrading a log written before stream lifecycle', () => {
  it('SQLite: the v7 rebuild keeps the AUTOINCREMENT high-water mark when the newest events were deleted by hand before upgrading', async () => {
    const path = files.freshPath();
    const db = new Database(path);
    migrateSqlite(db, SQLITE_MIGRATIONS.slice(0, 6));
    const insert = db.prepare("INSERT INTO eskit_events (event_id, stream_id, stream_version, type, data, metadata, created_at) VALUES (?, 's-1', ?, 'A', '1', '{}', 0)");
    for (let i = 1; i <= 5; i++) insert.run(`00000000-0000-4000-8000-00000000000${i}`, i);
    db.prepare('DELETE FROM eskit_events WHERE position >= 4').run();
    db.close();
    const store = new SqliteEventStore({ path });
    cleanups.push(() => store.close());
    assert.equal((await store.append('s-1', [{ type: 'A', data: 1 }])).position, 6);
    assert.equal((await store.deleteStream('s-1', { hard: true })).position, 7);
    assert.equal((await store.append('t-1', [{ type: 'A', data: 1 }])).position, 8);
  });

  it('PostgreSQL: two processes migrating a v8 schema with data at once; the sequence goes on past a deleted newest event; version 0 is refused', async () => {
    const schema = await pgSchema();
    await migratePostgres(schema.pool, schema.name, POSTGRES_MIGRATIONS.slice(0, 8));
    const s = `"${schema.name}"`;
    for (let i = 0; i < 5; i++) await schema.pool.query(`SELECT * FROM ${s}.append_one('s-1', -1, gen_random_uuid(), 'A', '1', '{}')`);
    await schema.pool.query(`DELETE FROM ${s}.events WHERE position = 5`);
    const pools = [new pg.Pool({ connectionString: schema.connectionString, max: 1 }), new pg.Pool({ connectionString: schema.connectionString, max: 1 })];
    cleanups.push(() => Promise.all(pools.map((p) => p.end())));
    const applied = await Promise.all(pools.map((p) => migratePostgres(p, schema.name)));
    assert.deepEqual(applied.flat().sort((a, b) => a - b), POSTGRES_MIGRATIONS.slice(8).map((migration) => migration.version), 'every later step, each by one process');
    const store = new PostgresEventStore({ pool: pools[0]!, schema: schema.name });
    cleanups.push(() => store.close());
    const appended = await store.append('s-1', [{ type: 'A', data: 1 }]);
    assert.deepEqual([appended.position, appended.nextExpectedVersion], [6, 5]);
    assert.equal((await store.deleteStream('s-1', { hard: true })).position, 7);
    await assert.rejects(schema.pool.query(`INSERT INTO ${s}.events VALUES (100, gen_random_uuid(), 'z', 0, 'A', '1', '{}', now())`), /events_stream_version_check/);
  });
});
