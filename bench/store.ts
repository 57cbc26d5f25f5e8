// The `store` group: each event-store adapter beside its raw driver doing the same work.
//
// Both sides get the same events (same JSON, a fresh UUIDv7 per event) and the same stream pattern
// (a new stream per append call, expectedVersion 'any' on the eskit side). Both sides of one adapter
// write to tables of the same layout: the PostgreSQL baseline table is `LIKE events INCLUDING ALL`
// plus a bigserial default, the SQLite baseline file is created by the adapter's own migrations and
// then written with plain SQL. The concurrent-writer figures are in store-concurrent.ts.
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { v7 as uuidv7 } from 'uuid';
import type { NewEvent } from '../src/core/event.js';
import type { EventStore } from '../src/core/store.js';
import { MemoryEventStore } from '../src/memory/index.js';
import { PostgresEventStore } from '../src/postgres/index.js';
import { migrateSqlite, SqliteEventStore } from '../src/sqlite/index.js';
import type { BenchContext, BenchGroup } from './lib/context.js';
import { sequential } from './lib/measure.js';
import type { Op } from './lib/measure.js';
import { createRawEvents, DATA, EVENT, METADATA, rawInsertMany, rawInsertOne, TYPE } from './lib/store-workload.js';
import { concurrentFigures, concurrentPostgres, concurrentSqlite, WRITERS } from './store-concurrent.js';
import { readCategoryFigure } from './store-category.js';
import { encryptedFigures } from './store-encrypted.js';

/** Events per read page, given to the stores explicitly so that both sides page alike. */
const PAGE_SIZE = 500;
const BATCH = 100;
const STREAM_LENGTH = 1000;
const EVENT_BATCH: NewEvent[] = Array.from({ length: BATCH }, () => EVENT);

type Adapter = 'memory' | 'sqlite' | 'postgres';
type Figure = 'append.single' | 'append.batch100' | 'readAll' | 'readStream';
const FIGURES: readonly Figure[] = ['readAll', 'readStream', 'append.single', 'append.batch100'];

/** The raw-driver side of one adapter. Every op returns the number of events it handled. */
interface Baseline {
  labels: Record<Figure, string>;
  /** One event to a new stream. */
  appendOne: Op;
  /** BATCH events to a new stream, in one statement or transaction. */
  appendBatch: Op;
  /** Every event, in pages of PAGE_SIZE by position, data and metadata parsed. */
  readAll: Op;
  /** The events of one stream, by version, data and metadata parsed. */
  readStream(streamId: string): number | Promise<number>;
  /** Writes `perStream` events to each stream. */
  seed(streams: readonly string[], perStream: number): Promise<void>;
  /** Called after both sides are seeded (PostgreSQL: VACUUM ANALYZE both tables alike). */
  afterSeed?(): Promise<void>;
}

interface Subject {
  adapter: Adapter;
  store: EventStore;
  baseline: Baseline;
  /** Operations per measured round: [quick, full]. */
  ops: Record<Figure, [number, number]>;
  targets: Partial<Record<Figure, number>>;
  notes?: Partial<Record<Figure, string>>;
  /** Adapter-specific figures (store-concurrent.ts), run after the common ones. */
  extra?(ctx: BenchContext): Promise<void>;
  /** Closes the store and the baseline, drops the schema or file. */
  close(): Promise<void>;
}

export const storeBench: BenchGroup = async (ctx) => {
  const openers: Record<Adapter, (ctx: BenchContext) => Promise<Subject>> = { memory: openMemory, sqlite: openSqlite, postgres: openPostgres };
  for (const adapter of Object.keys(openers) as Adapter[]) {
    const names = [...FIGURES.map((f) => `store.${f}.${adapter}`), ...concurrentFigures(adapter)];
    if (!names.some((name) => ctx.selected(name))) continue;
    let subject: Subject | undefined;
    try {
      subject = await openers[adapter](ctx);
      await runSubject(ctx, subject);
    } catch (error) {
      ctx.fail(`store (${adapter})`, error);
    } finally {
      // Each adapter's files, schema and pools go before the next adapter runs (and on Ctrl-C).
      await subject?.close();
    }
  }
  try {
    await readCategoryFigure(ctx);
  } catch (error) {
    ctx.fail('store (category read)', error);
  }
  try {
    await encryptedFigures(ctx);
  } catch (error) {
    ctx.fail('store (personal data)', error);
  }
};

async function runSubject(ctx: BenchContext, subject: Subject): Promise<void> {
  const { adapter, store, baseline } = subject;
  const name = (figure: Figure): string => `store.${figure}.${adapter}`;
  const ops = (figure: Figure): number => ctx.pick(...subject.ops[figure]);
  // More, shorter rounds in a full run: the median of 7 alternating rounds shrugs off a burst of load.
  const rounds = ctx.pick(3, 7);

  // Reads first, while each log holds exactly the seeded events.
  if (ctx.selected(name('readAll')) || ctx.selected(name('readStream'))) {
    const total = ctx.pick(10_000, 20_000);
    const streams = Array.from({ length: total / STREAM_LENGTH }, (_, i) => `read-${i}`);
    ctx.log(`${adapter}: seeding ${total} events on each side`);
    for (const streamId of streams) {
      for (let written = 0; written < STREAM_LENGTH; written += PAGE_SIZE) {
        await store.append(streamId, Array.from({ length: Math.min(PAGE_SIZE, STREAM_LENGTH - written) }, () => EVENT));
      }
    }
    await baseline.seed(streams, STREAM_LENGTH);
    await baseline.afterSeed?.();

    const expect = (what: string, wanted: number) => (n: number): number => {
      // A short read would make a side look fast for the wrong reason.
      if (n !== wanted) throw new Error(`${what} read ${n} events, expected ${wanted}`);
      return n;
    };
    // The baseline's count checked the same way, its op still synchronous for a synchronous driver.
    const checked = (op: Op, check: (n: number) => number): Op => () => {
      const n = op();
      return typeof n === 'number' ? check(n) : n.then(check);
    };
    const eskitAll = expect(`eskit ${adapter} readAll`, total);
    await ctx.measure({
      bench: name('readAll'),
      unit: 'events/s',
      ops: ops('readAll'),
      warmupOps: 1,
      rounds,
      eskit: sequential(async () => eskitAll(await count(store.readAll()))),
      baseline: sequential(checked(baseline.readAll, expect(`baseline ${adapter} readAll`, total))),
      baselineLabel: baseline.labels.readAll,
      target: subject.targets.readAll,
      note: subject.notes?.readAll ?? `op = one scan of ${total} events (p50/p99 are per scan); page size ${PAGE_SIZE} on both sides`,
    });

    const streamId = streams[0] as string;
    const eskitStream = expect(`eskit ${adapter} readStream`, STREAM_LENGTH);
    await ctx.measure({
      bench: name('readStream'),
      unit: 'events/s',
      ops: ops('readStream'),
      rounds,
      eskit: sequential(async () => eskitStream(await count(store.readStream(streamId)))),
      baseline: sequential(checked(() => baseline.readStream(streamId), expect(`baseline ${adapter} readStream`, STREAM_LENGTH))),
      baselineLabel: baseline.labels.readStream,
      target: subject.targets.readStream,
      note: subject.notes?.readStream,
    });
  }

  let eskitStreams = 0;
  await ctx.measure({
    bench: name('append.single'),
    unit: 'events/s',
    ops: ops('append.single'),
    rounds,
    eskit: sequential(async () => (await store.append(`one-${eskitStreams++}`, [EVENT])).events.length),
    baseline: sequential(baseline.appendOne),
    baselineLabel: baseline.labels['append.single'],
    target: subject.targets['append.single'],
    note: subject.notes?.['append.single'],
  });
  await ctx.measure({
    bench: name('append.batch100'),
    unit: 'events/s',
    ops: ops('append.batch100'),
    rounds,
    eskit: sequential(async () => (await store.append(`batch-${eskitStreams++}`, EVENT_BATCH)).events.length),
    baseline: sequential(baseline.appendBatch),
    baselineLabel: baseline.labels['append.batch100'],
    target: subject.targets['append.batch100'],
    note: subject.notes?.['append.batch100'] ?? `op = one call of ${BATCH} events to a new stream (p50/p99 are per call)`,
  });
  await subject.extra?.(ctx);
}

/** Reads every event of `events`; returns how many there were. */
async function count(events: AsyncIterable<unknown>): Promise<number> {
  let n = 0;
  for await (const _event of events) n++;
  return n;
}

// ---------------------------------------------------------------------------------------------------
// memory

interface MemoryRow {
  id: string;
  type: string;
  data: string;
  metadata: string;
  streamId: string;
  streamVersion: number;
  position: number;
  timestamp: Date;
}

async function openMemory(): Promise<Subject> {
  const store = new MemoryEventStore({ pageSize: PAGE_SIZE });
  // The baseline is what a hand-written log would be: an array and a map of stream arrays, JSON text in
  // and parsed on the way out, and no checks at all (no expected version, no duplicate-id set).
  const log: MemoryRow[] = [];
  const streams = new Map<string, MemoryRow[]>();
  let streamCount = 0;
  const push = (streamId: string, count: number): number => {
    const stream: MemoryRow[] = streams.get(streamId) ?? [];
    const timestamp = new Date();
    for (let i = 0; i < count; i++) {
      const row: MemoryRow = {
        id: uuidv7(),
        type: TYPE,
        data: JSON.stringify(DATA),
        metadata: JSON.stringify(METADATA),
        streamId,
        streamVersion: stream.length + 1,
        position: log.length + 1,
        timestamp,
      };
      log.push(row);
      stream.push(row);
    }
    streams.set(streamId, stream);
    return count;
  };
  const decode = (row: MemoryRow) => ({ ...row, data: JSON.parse(row.data) as unknown, metadata: JSON.parse(row.metadata) as unknown });
  return {
    adapter: 'memory',
    store,
    baseline: {
      labels: {
        'append.single': 'array push + Map (no checks)',
        'append.batch100': 'array push x100 (no checks)',
        readAll: 'array slice pages + JSON.parse',
        readStream: 'Map lookup + JSON.parse',
      },
      appendOne: () => push(`one-${streamCount++}`, 1),
      appendBatch: () => push(`batch-${streamCount++}`, BATCH),
      readAll: () => {
        let n = 0;
        for (let after = 0; ; after += PAGE_SIZE) {
          const page = log.slice(after, after + PAGE_SIZE);
          for (const row of page) if (decode(row)) n++;
          if (page.length < PAGE_SIZE) return n;
        }
      },
      readStream: (streamId) => (streams.get(streamId) ?? []).map(decode).length,
      async seed(streamIds, perStream) {
        for (const streamId of streamIds) push(streamId, perStream);
      },
    },
    ops: {
      'append.single': [5000, 10_000],
      'append.batch100': [200, 500],
      readAll: [3, 5],
      readStream: [50, 150],
    },
    targets: {},
    close: () => store.close(),
    notes: {
      'append.single': 'memory baselines are plain array/Map code, not a driver: the ratio is the cost of the store layer itself',
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// SQLite

/** position, event_id, stream_id, stream_version, type, data, metadata, created_at */
type SqliteRow = [number, string, string, number, string, unknown, unknown, number];

async function openSqlite(ctx: BenchContext): Promise<Subject> {
  const dir = mkdtempSync(join(tmpdir(), 'eskit-bench-'));
  const cleanups: (() => void)[] = [() => rmSync(dir, { recursive: true, force: true })];
  const close = ctx.defer(() => {
    for (const cleanup of cleanups.reverse()) cleanup();
  });
  const store = new SqliteEventStore({ path: join(dir, 'eskit.db'), pageSize: PAGE_SIZE });
  cleanups.push(() => void store.close());

  // Its own file, so neither side's WAL checkpoints land in the other's timings.
  const raw = new Database(join(dir, 'raw.db'));
  cleanups.push(() => raw.close());
  raw.pragma('journal_mode = WAL');
  raw.pragma('synchronous = NORMAL');
  migrateSqlite(raw); // the same eskit_events table, indexes and constraints as the store's
  const insert = raw.prepare<[string, string, number, string, string, string, number]>(
    'INSERT INTO eskit_events (event_id, stream_id, stream_version, type, data, metadata, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)',
  );
  const begin = raw.prepare('BEGIN IMMEDIATE');
  const commit = raw.prepare('COMMIT');
  const rollback = raw.prepare('ROLLBACK');
  const columns = 'position, event_id, stream_id, stream_version, type, data, metadata, created_at';
  // Rows as arrays (the driver's fastest mode, which the store uses too), JSON parsed in place.
  const page = raw.prepare<[number, number], SqliteRow>(`SELECT ${columns} FROM eskit_events WHERE position > ? ORDER BY position LIMIT ?`).raw();
  const byStream = raw.prepare<[string], SqliteRow>(`SELECT ${columns} FROM eskit_events WHERE stream_id = ? ORDER BY stream_version`).raw();
  const parse = (row: SqliteRow): void => {
    row[5] = JSON.parse(row[5] as string);
    row[6] = JSON.parse(row[6] as string);
  };
  const write = (streamId: string, count: number): number => {
    begin.run();
    try {
      const now = Date.now();
      for (let i = 0; i < count; i++) insert.run(uuidv7(), streamId, i + 1, TYPE, JSON.stringify(DATA), JSON.stringify(METADATA), now);
      commit.run();
    } catch (error) {
      rollback.run();
      throw error;
    }
    return count;
  };
  let streamCount = 0;
  return {
    adapter: 'sqlite',
    store,
    baseline: {
      labels: {
        'append.single': 'better-sqlite3 INSERT in BEGIN IMMEDIATE..COMMIT',
        'append.batch100': 'better-sqlite3 100 INSERTs in one tx',
        readAll: 'better-sqlite3 keyset pages, raw rows + JSON.parse',
        readStream: 'better-sqlite3 one SELECT by stream, raw rows + JSON.parse',
      },
      appendOne: () => write(`one-${streamCount++}`, 1),
      appendBatch: () => write(`batch-${streamCount++}`, BATCH),
      readAll: () => {
        let n = 0;
        let after = 0;
        for (;;) {
          const rows = page.all(after, PAGE_SIZE);
          for (const row of rows) parse(row);
          n += rows.length;
          if (rows.length < PAGE_SIZE) return n;
          after = (rows[rows.length - 1] as SqliteRow)[0];
        }
      },
      readStream: (streamId) => {
        const rows = byStream.all(streamId);
        for (const row of rows) parse(row);
        return rows.length;
      },
      async seed(streamIds, perStream) {
        for (const streamId of streamIds) write(streamId, perStream);
      },
    },
    ops: {
      'append.single': [2000, 5000],
      'append.batch100': [60, 150],
      readAll: [3, 5],
      readStream: [50, 150],
    },
    targets: { 'append.single': 0.7, readAll: 0.8 },
    close,
    notes: {
      readStream: `eskit pages by ${PAGE_SIZE}: a ${STREAM_LENGTH}-event stream is ${STREAM_LENGTH / PAGE_SIZE + 1} queries (the last one empty); the baseline is one`,
    },
    extra: (context) => concurrentSqlite(context, store),
  };
}

// ---------------------------------------------------------------------------------------------------
// PostgreSQL

/** position, id, stream_id, stream_version, type, data, metadata, created_at (bigints as text, jsonb parsed by pg) */
type PgRow = [string, string, string, string, string, unknown, unknown, Date];

async function openPostgres(ctx: BenchContext): Promise<Subject> {
  const schema = `bench_${process.pid}`;
  const connect = (): pg.Pool => {
    const pool = new pg.Pool({ connectionString: ctx.postgresUrl, max: WRITERS, connectionTimeoutMillis: 5000 });
    pool.on('error', () => undefined);
    return pool;
  };
  const eskitPool = connect();
  const rawPool = connect();
  // The constructor does not connect; the first call migrates the schema.
  const store = new PostgresEventStore({ pool: eskitPool, schema, pageSize: PAGE_SIZE });
  const close = ctx.defer(async () => {
    await store.close();
    await rawPool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch((error: unknown) => {
      ctx.log(`could not drop schema ${schema}: ${error instanceof Error ? error.message : String(error)}`);
    });
    await Promise.all([eskitPool.end(), rawPool.end()]);
  });
  try {
    await rawPool.query('SELECT 1');
  } catch (cause) {
    throw new Error(
      `PostgreSQL is not reachable at ${ctx.postgresUrl} (${cause instanceof Error ? cause.message : String(cause)}). ` +
        'Start it, or point ESKIT_BENCH_PG_URL at one.',
      { cause },
    );
  }
  await store.migrate();
  await createRawEvents(rawPool, schema);
  const s = `"${schema}"`;
  const columns = 'position, id, stream_id, stream_version, type, data, metadata, created_at';
  // Named statements, as the store uses: parsed once per connection.
  const insertOne = rawInsertOne(schema);
  const insertMany = rawInsertMany(schema);
  // Rows as arrays, as the store reads them; pg parses jsonb with JSON.parse, as the store does with the text it selects.
  const readPage = { name: 'raw_read_page', rowMode: 'array' as const, text: `SELECT ${columns} FROM ${s}.raw_events WHERE position > $1 ORDER BY position LIMIT $2` };
  const readStream = { name: 'raw_read_stream', rowMode: 'array' as const, text: `SELECT ${columns} FROM ${s}.raw_events WHERE stream_id = $1 ORDER BY stream_version` };

  const appendOne = async (streamId: string): Promise<number> => {
    await rawPool.query(insertOne(streamId));
    return 1;
  };
  const appendMany = async (streamId: string, count: number): Promise<number> => {
    await rawPool.query(insertMany(streamId, count));
    return count;
  };
  let streamCount = 0;
  return {
    adapter: 'postgres',
    store,
    baseline: {
      labels: {
        'append.single': 'pg: 1-row INSERT, autocommit',
        'append.batch100': 'pg: one INSERT .. unnest of 100 rows',
        readAll: 'pg: keyset pages, array rows, jsonb parsed',
        readStream: 'pg: one SELECT by stream, array rows, jsonb parsed',
      },
      appendOne: () => appendOne(`one-${streamCount++}`),
      appendBatch: () => appendMany(`batch-${streamCount++}`, BATCH),
      readAll: async () => {
        let n = 0;
        let after = '0';
        for (;;) {
          const { rows } = await rawPool.query<PgRow>({ ...readPage, values: [after, PAGE_SIZE] });
          n += rows.length;
          if (rows.length < PAGE_SIZE) return n;
          after = (rows[rows.length - 1] as PgRow)[0];
        }
      },
      readStream: async (streamId) => (await rawPool.query<PgRow>({ ...readStream, values: [streamId] })).rows.length,
      async seed(streamIds, perStream) {
        for (const streamId of streamIds) await appendMany(streamId, perStream);
      },
      async afterSeed() {
        await rawPool.query(`VACUUM ANALYZE ${s}.events`);
        await rawPool.query(`VACUUM ANALYZE ${s}.raw_events`);
      },
    },
    ops: {
      'append.single': [600, 1500],
      'append.batch100': [40, 100],
      readAll: [3, 5],
      readStream: [40, 100],
    },
    targets: { 'append.single': 0.9, 'append.batch100': 0.9, readAll: 0.8 },
    close,
    notes: {
      readStream: `eskit pages by ${PAGE_SIZE}: a ${STREAM_LENGTH}-event stream is ${STREAM_LENGTH / PAGE_SIZE + 1} round trips (the last one empty); the baseline is one`,
    },
    extra: (context) => concurrentPostgres(context, { store, pool: rawPool, schema, connectionString: ctx.postgresUrl, appendOne }),
  };
}
