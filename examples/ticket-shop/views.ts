// The read side: a state view with two tables, `sales` (one row per concert) and `orders` (one row per
// order, what an "your order" page would read). The tables and what each event changes are written
// once, as upserts, the same on SQLite and PostgreSQL (where a batch's upserts are written together).
import type { LockRegistry, Logger, Recorded, SqlViewSetup, Upsert } from '../../src/index.js';
import { SqlView } from '../../src/view/index.js';
import type { SqlViewHost } from '../../src/view/index.js';
import type { ConcertEvent } from './domain.js';

export const SALES_VIEW = 'sales';

/** The same DDL on both databases. Raise `version` when the tables or the evolve code change. */
const setup: SqlViewSetup = {
  version: 2,
  statements: (t) => [
    `CREATE TABLE ${t('sales')} (concert TEXT PRIMARY KEY, sold INTEGER NOT NULL, orders INTEGER NOT NULL)`,
    // customer: a refund's upsert does not carry it (the row exists by then; the column keeps its value).
    `CREATE TABLE ${t('orders')} (order_id TEXT PRIMARY KEY, concert TEXT NOT NULL, customer TEXT, quantity INTEGER NOT NULL, status TEXT NOT NULL)`,
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

/** What one event writes, the same on both databases. */
export function applySale(event: Recorded<ConcertEvent>, upsert: Upsert): void {
  const { concert, sold, orders, order } = salesChange(event);
  upsert('sales', { concert, sold, orders }, { key: ['concert'], increment: ['sold', 'orders'] });
  if (order.status === 'bought') {
    upsert('orders', { order_id: order.orderId, concert, customer: order.customer, quantity: order.quantity, status: 'bought' }, { key: ['order_id'] });
  } else {
    upsert('orders', { order_id: order.orderId, concert, quantity: -sold, status: 'refunded' }, { key: ['order_id'] });
  }
}

/**
 * The sales view on either database: `sqlite({ path })` or `postgres({ connectionString })` (the tables
 * live next to the events, updated in the view's transaction). Its evolve uses only `upsert`, which
 * both backends' transactions have, so one definition serves both.
 */
export function salesView(backend: SqlViewHost<ConcertEvent>, options: SalesViewOptions & { pollIntervalMs?: number } = {}): SqlView<ConcertEvent> {
  return new SqlView<ConcertEvent>({
    name: SALES_VIEW,
    backend,
    setup,
    keysOf: (event) => event.streamId,
    ...options,
    evolve: (event, { upsert }) => applySale(event, upsert),
  });
}
