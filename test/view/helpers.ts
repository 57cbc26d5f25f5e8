// What the view tests share: a counting view (one row per event in `seen`, one per stream in
// `counts`) for SQLite and PostgreSQL, and lock registries that hand out chosen tokens.
import type Database from 'better-sqlite3';
import type pg from 'pg';
import type { Recorded } from '../../src/core/event.js';
import type { Lease, LockRegistry } from '../../src/core/lock.js';
import { silentLogger } from '../../src/core/logger.js';
import type { EventStore } from '../../src/core/store.js';
import { PostgresViews } from '../../src/postgres/index.js';
import type { PostgresStoreHandle, PostgresViewTx } from '../../src/postgres/index.js';
import { SqliteViews } from '../../src/sqlite/index.js';
import type { SqliteViewTx } from '../../src/sqlite/index.js';
import { SqlView } from '../../src/view/index.js';
import type { SqlViewHost, SqlViewOptions } from '../../src/view/index.js';

export type TestEvent =
  | { type: 'Counted'; data: { n: number; bad?: boolean } }
  | { type: 'Other'; data: { note: string } };

export const counted = (n: number, bad?: boolean): TestEvent => ({ type: 'Counted', data: bad ? { n, bad } : { n } });
export const other = (): TestEvent => ({ type: 'Other', data: { note: 'ignored by the view' } });

export interface CounterOptions {
  name?: string;
  /** Prefix of the view's table names, so that two views of the same shape can live side by side. */
  prefix?: string;
  version?: number;
  /** Version 2 also keeps the largest n per stream, to tell a rebuilt view from the old one. */
  withMax?: boolean;
  /** Runs before each event is applied (to block, throw or count). */
  before?: (event: Recorded<TestEvent>) => void;
  /** Throws on events whose data says bad (after writing their `seen` row, which must be rolled back). */
  throwOnBad?: boolean;
}

/** What a counting view runs on: `sqlite()`, or the parts. */
export type SqliteHost = SqlViewHost<TestEvent, SqliteViewTx, void>;
export type SqliteCounter = SqlView<TestEvent, SqliteViewTx, void>;
type Common = Omit<SqlViewOptions<TestEvent, SqliteViewTx, void>, 'name' | 'backend' | 'setup' | 'evolve' | 'evolveBatch'>;

function statements(prefix: string, withMax: boolean) {
  return (t: (name: string) => string): string[] => [
    `CREATE TABLE ${t(`${prefix}counts`)} (stream TEXT PRIMARY KEY, events INTEGER NOT NULL, total INTEGER NOT NULL${withMax ? ', max_n INTEGER NOT NULL' : ''})`,
    `CREATE TABLE ${t(`${prefix}seen`)} (position INTEGER NOT NULL, stream TEXT NOT NULL)`,
    `CREATE INDEX ${t(`${prefix}seen_by_position`)} ON ${t(`${prefix}seen`)} (position)`,
  ];
}

/** A store of one's own gets the adapter's views composed around it. */
type SqliteStore = EventStore<TestEvent> & { readonly database: Database.Database };
type PgStore = EventStore<TestEvent> & PostgresStoreHandle;

export function sqliteCounter(on: SqliteHost | SqliteStore, options: CounterOptions & Common = {}): SqliteCounter {
  const backend: SqliteHost = 'views' in on ? on : { store: on, views: new SqliteViews({ store: on }) };
  const { name = 'counter', prefix = '', version = 1, withMax = false, before, throwOnBad, ...rest } = options;
  return new SqlView({
    name,
    backend,
    types: ['Counted'],
    logger: silentLogger,
    retry: { maxAttempts: 2, initialDelayMs: 1, maxDelayMs: 5 },
    ...rest,
    setup: { version, statements: statements(prefix, withMax) },
    evolve: (event, { prepare, table }) => {
      before?.(event);
      if (event.type !== 'Counted') return;
      prepare(`INSERT INTO ${table(`${prefix}seen`)} (position, stream) VALUES (?, ?)`).run(event.position, event.streamId);
      if (throwOnBad && event.data.bad) throw new Error(`bad event at ${event.position}`);
      if (withMax) {
        prepare(
          `INSERT INTO ${table(`${prefix}counts`)} (stream, events, total, max_n) VALUES (?, 1, ?, ?)
           ON CONFLICT (stream) DO UPDATE SET events = events + 1, total = total + excluded.total, max_n = max(max_n, excluded.max_n)`,
        ).run(event.streamId, event.data.n, event.data.n);
      } else {
        prepare(
          `INSERT INTO ${table(`${prefix}counts`)} (stream, events, total) VALUES (?, 1, ?)
           ON CONFLICT (stream) DO UPDATE SET events = events + 1, total = total + excluded.total`,
        ).run(event.streamId, event.data.n);
      }
    },
  });
}

/** What a counting view runs on: `postgres()`, or the parts. */
export type PgHost = SqlViewHost<TestEvent, PostgresViewTx, void | Promise<void>>;
export type PgCounter = SqlView<TestEvent, PostgresViewTx, void | Promise<void>>;
type PgCommon = Omit<SqlViewOptions<TestEvent, PostgresViewTx, void | Promise<void>>, 'name' | 'backend' | 'setup' | 'evolve' | 'evolveBatch'>;

function pgStatements(prefix: string, withMax: boolean) {
  return (t: (name: string) => string): string[] => [
    `CREATE TABLE ${t(`${prefix}counts`)} (stream text PRIMARY KEY, events bigint NOT NULL, total bigint NOT NULL${withMax ? ', max_n bigint NOT NULL' : ''})`,
    `CREATE TABLE ${t(`${prefix}seen`)} (position bigint NOT NULL, stream text NOT NULL)`,
    `CREATE INDEX ${t(`${prefix}seen_by_position`)} ON ${t(`${prefix}seen`)} (position)`,
  ];
}

export function pgCounter(
  on: PgHost | PgStore,
  options: Omit<CounterOptions, 'before'> & {
    before?: (event: Recorded<TestEvent>) => void | Promise<void>;
    /** Use evolveBatch (one multi-row statement per table and batch) instead of evolve. */
    batched?: boolean;
  } & PgCommon = {},
): PgCounter {
  const backend: PgHost = 'views' in on ? on : { store: on, views: new PostgresViews({ store: on }) };
  const { name = 'counter', prefix = '', version = 1, withMax = false, before, throwOnBad, batched, ...rest } = options;
  const common = {
    name,
    backend,
    types: ['Counted'] as const,
    logger: silentLogger,
    retry: { maxAttempts: 2, initialDelayMs: 1, maxDelayMs: 5 },
    ...rest,
    setup: { version, statements: pgStatements(prefix, withMax) },
  };
  if (batched) {
    // The same view, one round trip per table per batch (unnest), not per event.
    return new SqlView({
      ...common,
      evolveBatch: async (events, { client, table }) => {
        for (const event of events) await before?.(event);
        const mine = events.filter((event) => event.type === 'Counted');
        const positions = mine.map((event) => event.position);
        const streams = mine.map((event) => event.streamId);
        const ns = mine.map((event) => (event.type === 'Counted' ? event.data.n : 0));
        await client.query(`INSERT INTO ${table(`${prefix}seen`)} (position, stream) SELECT * FROM unnest($1::bigint[], $2::text[])`, [positions, streams]);
        if (throwOnBad && mine.some((event) => event.type === 'Counted' && event.data.bad)) throw new Error('bad event in the batch');
        const counts = table(`${prefix}counts`);
        await client.query(
          withMax
            ? `INSERT INTO ${counts} (stream, events, total, max_n) SELECT stream, count(*), sum(n), max(n) FROM unnest($1::text[], $2::bigint[]) AS t(stream, n) GROUP BY stream
               ON CONFLICT (stream) DO UPDATE SET events = ${counts}.events + excluded.events, total = ${counts}.total + excluded.total, max_n = greatest(${counts}.max_n, excluded.max_n)`
            : `INSERT INTO ${counts} (stream, events, total) SELECT stream, count(*), sum(n) FROM unnest($1::text[], $2::bigint[]) AS t(stream, n) GROUP BY stream
               ON CONFLICT (stream) DO UPDATE SET events = ${counts}.events + excluded.events, total = ${counts}.total + excluded.total`,
          [streams, ns],
        );
      },
    });
  }
  return new SqlView({
    ...common,
    evolve: async (event, { client, table }) => {
      await before?.(event);
      if (event.type !== 'Counted') return;
      await client.query(`INSERT INTO ${table(`${prefix}seen`)} (position, stream) VALUES ($1, $2)`, [event.position, event.streamId]);
      if (throwOnBad && event.data.bad) throw new Error(`bad event at ${event.position}`);
      const counts = table(`${prefix}counts`);
      await client.query(
        withMax
          ? `INSERT INTO ${counts} (stream, events, total, max_n) VALUES ($1, 1, $2, $2)
             ON CONFLICT (stream) DO UPDATE SET events = ${counts}.events + 1, total = ${counts}.total + excluded.total, max_n = greatest(${counts}.max_n, excluded.max_n)`
          : `INSERT INTO ${counts} (stream, events, total) VALUES ($1, 1, $2)
             ON CONFLICT (stream) DO UPDATE SET events = ${counts}.events + 1, total = ${counts}.total + excluded.total`,
        [event.streamId, event.data.n],
      );
    },
  });
}

/** What a counting view holds, read in one statement. */
export interface CounterState {
  seen: number;
  distinct: number;
  events: number;
  total: number;
}

export function readSqliteCounter(db: Database.Database, prefix = ''): CounterState {
  const row = db
    .prepare(
      `SELECT (SELECT count(*) FROM "${prefix}seen"), (SELECT count(DISTINCT position) FROM "${prefix}seen"),
              (SELECT coalesce(sum(events), 0) FROM "${prefix}counts"), (SELECT coalesce(sum(total), 0) FROM "${prefix}counts")`,
    )
    .raw()
    .get() as number[];
  const [seen, distinct, events, total] = row.map(Number) as [number, number, number, number];
  return { seen, distinct, events, total };
}

/** The same, computed from the events (what the view must equal), up to `upTo` (default all). */
export function expectedSqliteCounter(db: Database.Database, upTo = Number.MAX_SAFE_INTEGER): CounterState {
  const row = db
    .prepare(`SELECT count(*), coalesce(sum(json_extract(data, '$.n')), 0) FROM eskit_events WHERE type = 'Counted' AND position <= ?`)
    .raw()
    .get(upTo) as [number, number];
  return { seen: row[0], distinct: row[0], events: row[0], total: row[1] };
}

export async function readPgCounter(pool: pg.Pool, schema: string, prefix = ''): Promise<CounterState> {
  const result = await pool.query<[string, string, string, string]>({
    rowMode: 'array',
    text: `SELECT (SELECT count(*) FROM "${schema}"."${prefix}seen"), (SELECT count(DISTINCT position) FROM "${schema}"."${prefix}seen"),
                  (SELECT coalesce(sum(events), 0) FROM "${schema}"."${prefix}counts"), (SELECT coalesce(sum(total), 0) FROM "${schema}"."${prefix}counts")`,
  });
  const [seen, distinct, events, total] = (result.rows[0] as string[]).map(Number) as [number, number, number, number];
  return { seen, distinct, events, total };
}

export async function expectedPgCounter(pool: pg.Pool, schema: string, upTo = Number.MAX_SAFE_INTEGER): Promise<CounterState> {
  const result = await pool.query<[string, string]>({
    rowMode: 'array',
    text: `SELECT count(*), coalesce(sum((data->>'n')::bigint), 0) FROM "${schema}".events WHERE type = 'Counted' AND position <= $1`,
    values: [upTo],
  });
  const [count, total] = (result.rows[0] as string[]).map(Number) as [number, number];
  return { seen: count, distinct: count, events: count, total };
}

/**
 * A registry that grants the given tokens, one per acquire, and then never grants again. Its leases
 * never report a loss: a node holding one behaves like a leader that has not noticed its lease
 * expired (frozen, partitioned), which is what fencing is for.
 */
export function fixedLeases(tokens: readonly number[]): LockRegistry {
  const queue = [...tokens];
  return {
    async acquire(name, options = {}): Promise<Lease> {
      const token = queue.shift();
      if (token === undefined) {
        return new Promise<Lease>((_resolve, reject) => {
          options.onWaiting?.();
          options.signal?.addEventListener('abort', () => reject(options.signal?.reason), { once: true });
        });
      }
      return { name, fencingToken: token, signal: new AbortController().signal, release: async () => undefined };
    },
    close: async () => undefined,
  };
}

/** Appends `count` events spread over `streams` streams, every `otherEvery`-th one of the ignored type. */
export async function appendMany(store: EventStore<TestEvent>, count: number, options: { streams?: number; otherEvery?: number; batch?: number } = {}): Promise<number> {
  const { streams = 7, otherEvery = 5, batch = 50 } = options;
  let position = 0;
  for (let start = 0; start < count; start += batch) {
    const events: TestEvent[] = [];
    for (let i = start; i < Math.min(count, start + batch); i++) events.push(i % otherEvery === otherEvery - 1 ? other() : counted((i % 13) + 1));
    const result = await store.append(`s-${(start / batch) % streams}`, events);
    position = result.position;
  }
  return position;
}
