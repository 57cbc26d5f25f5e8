// The read side: a state view with two tables, `sales` (one row per concert) and `orders` (one row per
// order, what an "your order" page would read). The tables and what each event changes are written
// once; SQLite and PostgreSQL each get a small view definition that runs the same change with its
// driver (better-sqlite3 is synchronous, pg is not).
import type { LockRegistry, Logger, Recorded, SqlViewSetup } from '../../src/index.js';
import { PostgresView } from '../../src/postgres/index.js';
import type { PostgresEventStore } from '../../src/postgres/index.js';
import { SqliteView } from '../../src/sqlite/index.js';
import type { SqliteEventStore } from '../../src/sqlite/index.js';
import type { ConcertEvent } from './domain.js';

export const SALES_VIEW = 'sales';

/** The same DDL on both databases. Raise `version` when the tables or the evolve code change. */
const setup: SqlViewSetup = {
  version: 1,
  statements: (t) => [
    `CREATE TABLE ${t('sales')} (concert TEXT PRIMARY KEY, sold INTEGER NOT NULL, orders INTEGER NOT NULL)`,
    `CREATE TABLE ${t('orders')} (order_id TEXT PRIMARY KEY, concert TEXT NOT NULL, customer TEXT NOT NULL, quantity INTEGER NOT NULL, status TEXT NOT NULL)`,
  ],
};

/** What one event changes in the view: the concert's totals, and the order's row. */
export interface SalesChange {
  concert: string;
  /** Tickets sold, and open orders, added (negative for a refund). */
  sold: number;
  orders: number;
  order: { orderId: string; customer: string; quantity: number; status: 'bought' } | { orderId: string; status: 'refunded' };
}

export function salesChange(event: Recorded<ConcertEvent>): SalesChange {
  if (event.type === 'TicketsBought') {
    const { orderId, customer, quantity } = event.data;
    return { concert: event.streamId, sold: quantity, orders: 1, order: { orderId, customer, quantity, status: 'bought' } };
  }
  return { concert: event.streamId, sold: -event.data.quantity, orders: -1, order: { orderId: event.data.orderId, status: 'refunded' } };
}

export interface SalesViewOptions {
  /** Leader election: one process updates the view, the others stand by. */
  leaderLock?: LockRegistry;
  logger?: Logger;
  /** How often a process that does not run the view reads its checkpoint in `waitFor`. */
  checkpointPollMs?: number;
}

// Upserts with an alias on the target table: PostgreSQL needs the existing row named explicitly
// (`sold` alone would be ambiguous next to `excluded.sold`), and SQLite accepts the same form.
const upsertSales = (table: string, p: (n: number) => string): string =>
  `INSERT INTO ${table} AS s (concert, sold, orders) VALUES (${p(1)}, ${p(2)}, ${p(3)})
   ON CONFLICT (concert) DO UPDATE SET sold = s.sold + excluded.sold, orders = s.orders + excluded.orders`;
const insertOrder = (table: string, p: (n: number) => string): string =>
  `INSERT INTO ${table} (order_id, concert, customer, quantity, status) VALUES (${p(1)}, ${p(2)}, ${p(3)}, ${p(4)}, 'bought')`;
const refundOrder = (table: string, p: (n: number) => string): string => `UPDATE ${table} SET status = 'refunded' WHERE order_id = ${p(1)}`;

/** The sales view on SQLite: tables in the event store's file, updated in the view's transaction. */
export function sqliteSalesView(store: SqliteEventStore<ConcertEvent>, options: SalesViewOptions = {}): SqliteView<ConcertEvent> {
  const q = (): string => '?';
  return new SqliteView<ConcertEvent>({
    name: SALES_VIEW,
    store,
    setup,
    keysOf: (event) => event.streamId,
    pollIntervalMs: 100,
    ...options,
    evolve: (event, { prepare, table }) => {
      const change = salesChange(event);
      prepare(upsertSales(table('sales'), q)).run(change.concert, change.sold, change.orders);
      const { order } = change;
      if (order.status === 'bought') prepare(insertOrder(table('orders'), q)).run(order.orderId, change.concert, order.customer, order.quantity);
      else prepare(refundOrder(table('orders'), q)).run(order.orderId);
    },
  });
}

/** The sales view on PostgreSQL: tables in the event store's schema, updated in the view's transaction. */
export function postgresSalesView(store: PostgresEventStore<ConcertEvent>, options: SalesViewOptions = {}): PostgresView<ConcertEvent> {
  const p = (n: number): string => `$${n}`;
  return new PostgresView<ConcertEvent>({
    name: SALES_VIEW,
    store,
    setup,
    keysOf: (event) => event.streamId,
    ...options,
    // One round trip per statement: plenty for a demo. A busy view would use evolveBatch (docs/views.md).
    evolve: async (event, { client, table }) => {
      const change = salesChange(event);
      await client.query(upsertSales(table('sales'), p), [change.concert, change.sold, change.orders]);
      const { order } = change;
      if (order.status === 'bought') await client.query(insertOrder(table('orders'), p), [order.orderId, change.concert, order.customer, order.quantity]);
      else await client.query(refundOrder(table('orders'), p), [order.orderId]);
    },
  });
}
