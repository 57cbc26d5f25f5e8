// What the partitioned view tests share, on SQLite and PostgreSQL alike: a sales view whose evolve
// uses only `upsert` (so one definition runs on both backends), with a row per order (keyed by the
// stream id, the partition key) and a row per customer (updated through increments by events of
// several partitions), and the comparison of two such views built side by side.
import assert from 'node:assert/strict';
import type { Recorded } from '../../src/core/event.js';
import { silentLogger } from '../../src/core/logger.js';
import type { EventStore } from '../../src/core/store.js';
import { SqlView } from '../../src/view/index.js';
import type { SqlViewHost, SqlViewOptions } from '../../src/view/index.js';

export type SaleEvent =
  | { type: 'Sold'; data: { customer: string; amount: number } }
  | { type: 'Noted'; data: { note: string } };

export type SalesView = SqlView<SaleEvent>;

export interface SalesOptions extends Partial<Omit<SqlViewOptions<SaleEvent>, 'backend' | 'setup' | 'evolve' | 'evolveBatch'>> {
  /** Prefix of the view's tables, so that two views can live side by side. */
  prefix?: string;
  version?: number;
  /** Runs before each event is applied (to fail one on purpose). */
  before?: (event: Recorded<SaleEvent>) => void;
}

export function salesView(backend: SqlViewHost<SaleEvent>, options: SalesOptions = {}): SalesView {
  const { prefix = '', version = 1, before, name = `${prefix}sales`, ...rest } = options;
  return new SqlView<SaleEvent>({
    backend,
    name,
    types: ['Sold'],
    logger: silentLogger,
    retry: { maxAttempts: 2, initialDelayMs: 1, maxDelayMs: 5 },
    batchSize: 50,
    pollIntervalMs: 100,
    ...rest,
    setup: {
      version,
      statements: (t) => [
        `CREATE TABLE ${t(`${prefix}orders`)} (stream TEXT PRIMARY KEY, customer TEXT NOT NULL, events INTEGER NOT NULL, amount INTEGER NOT NULL, last_amount INTEGER NOT NULL)`,
        `CREATE TABLE ${t(`${prefix}customers`)} (customer TEXT PRIMARY KEY, total INTEGER NOT NULL, events INTEGER NOT NULL)`,
      ],
    },
    evolve: (event, { upsert }) => {
      before?.(event);
      if (event.type !== 'Sold') return;
      const { customer, amount } = event.data;
      // Keyed by the partition key (the stream id): only this stream's partition writes the row, in
      // the stream's order, so a plain overwrite (last_amount) is right.
      upsert(`${prefix}orders`, { stream: event.streamId, customer, events: 1, amount, last_amount: amount }, { key: ['stream'], increment: ['events', 'amount'] });
      // Written by the events of many streams, thus of many partitions: increments only (they commute).
      upsert(`${prefix}customers`, { customer, total: amount, events: 1 }, { key: ['customer'], increment: ['total', 'events'] });
    },
  });
}

/** Appends `orders` streams of `perStream` sales each (round by round, so that streams interleave), and a note now and then. */
export async function appendSales(store: EventStore<SaleEvent>, orders: number, perStream: number, from = 0): Promise<number> {
  let last = 0;
  for (let round = 0; round < perStream; round++) {
    for (let order = from; order < from + orders; order++) {
      const events: SaleEvent[] = [{ type: 'Sold', data: { customer: `c-${order % 7}`, amount: 1 + ((order * 31 + round * 17) % 50) } }];
      if ((order + round) % 5 === 0) events.push({ type: 'Noted', data: { note: 'not for the view' } });
      last = (await store.append(`order-${order}`, events)).position;
    }
  }
  return last;
}

export interface SalesRows {
  orders: Array<{ stream: string; customer: string; events: number; amount: number; last_amount: number }>;
  customers: Array<{ customer: string; total: number; events: number }>;
}

/** Reads a sales view's tables, through `query` (one per backend), ordered by key. */
export async function salesRows(view: SalesView, prefix: string, query: (sql: string) => Promise<Array<Record<string, unknown>>>): Promise<SalesRows> {
  const orders = await query(`SELECT stream, customer, events, amount, last_amount FROM ${view.table(`${prefix}orders`)} ORDER BY stream`);
  const customers = await query(`SELECT customer, total, events FROM ${view.table(`${prefix}customers`)} ORDER BY customer`);
  const numbers = <T>(row: Record<string, unknown>): T =>
    Object.fromEntries(Object.entries(row).map(([key, value]) => [key, typeof value === 'string' || value === null ? value : Number(value)])) as T;
  return { orders: orders.map((row) => numbers(row)), customers: customers.map((row) => numbers(row)) };
}

/** The two views hold the same rows, and the sums say every event was applied exactly once. */
export function assertSameSales(actual: SalesRows, expected: SalesRows, sold: number): void {
  assert.deepEqual(actual, expected);
  assert.equal(
    actual.customers.reduce((sum, row) => sum + row.events, 0),
    sold,
    'every sale counted once in the customer rows',
  );
  assert.equal(
    actual.orders.reduce((sum, row) => sum + row.events, 0),
    sold,
    'every sale counted once in the order rows',
  );
}

/** The sales in the log up to now. */
export async function soldCount(store: EventStore<SaleEvent>): Promise<number> {
  let count = 0;
  for await (const _event of store.readAll({ types: ['Sold'] })) count += 1;
  return count;
}

/**
 * The host, whose views fail the first checkpoint save of `lane` (as a crash, a lost connection or a
 * stop could leave a partition count change: some new lanes seeded, the others not).
 */
export function failingFirstSave(host: SqlViewHost<SaleEvent>, lane: string): SqlViewHost<SaleEvent> {
  let armed = true;
  const views: SqlViewHost<SaleEvent>['views'] = {
    create: (spec) => {
      const backend = host.views.create(spec);
      return new Proxy(backend, {
        get: (target, key) => {
          if (key === 'saveCheckpoint') {
            return (...args: Parameters<typeof backend.saveCheckpoint>) => {
              if (armed && args[0] === lane) {
                armed = false;
                return Promise.reject(new Error(`injected: saving ${lane} failed`));
              }
              return target.saveCheckpoint(...args);
            };
          }
          const value: unknown = Reflect.get(target, key, target);
          return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
        },
      });
    },
  };
  return new Proxy(host, { get: (target, key) => (key === 'views' ? views : Reflect.get(target, key, target)) });
}
