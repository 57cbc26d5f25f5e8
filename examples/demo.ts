// The ticket-shop demo: `npm start`. Runs on SQLite under ./data with nothing to set up.
//
// Shoppers buy and refund tickets for three concerts through a decider (with optimistic concurrency:
// they race on the same streams). Two subscriptions follow the log: a sales view in a SQLite table,
// and a confirmation mailer whose fake mail server fails now and then (watch the retries).
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { CommandHandler, Subscription, silentLogger } from '../src/index.js';
import { SqliteCheckpointStore, SqliteEventStore } from '../src/sqlite/index.js';
import { concert, registry, CAPACITY } from './ticket-shop/domain.js';
import type { ConcertEvent } from './ticket-shop/domain.js';

const ORDERS = 400;
const CONCERTS = ['concert-jazz', 'concert-rock', 'concert-folk'];
const dataDir = process.env.ESKIT_DEMO_DIR ?? 'data';
const file = join(dataDir, 'demo.db');

mkdirSync(dataDir, { recursive: true });
for (const suffix of ['', '-wal', '-shm']) rmSync(file + suffix, { force: true });

const store = new SqliteEventStore<ConcertEvent>({ path: file, registry });
const checkpoints = new SqliteCheckpointStore({ store });
const handler = new CommandHandler({ store, decider: concert, retry: { maxAttempts: 10 } });

// The sales view: one row per concert, kept by a subscription.
const db = store.database;
db.exec('CREATE TABLE IF NOT EXISTS demo_sales (concert TEXT PRIMARY KEY, sold INTEGER NOT NULL, orders INTEGER NOT NULL)');
const upsert = db.prepare(
  `INSERT INTO demo_sales (concert, sold, orders) VALUES (?, ?, ?)
   ON CONFLICT (concert) DO UPDATE SET sold = sold + excluded.sold, orders = orders + excluded.orders`,
);
const salesView = new Subscription({
  name: 'sales-view',
  store,
  checkpoints,
  logger: silentLogger,
  pollIntervalMs: 50,
  handler: (event) => {
    if (event.type === 'TicketsBought') upsert.run(event.streamId, event.data.quantity, 1);
    else upsert.run(event.streamId, -event.data.quantity, -1);
  },
});

// The mailer: a fake mail server that fails one call in five; the subscription retries with backoff.
let mailsSent = 0;
let mailFailures = 0;
const mailer = new Subscription({
  name: 'confirmation-mailer',
  store,
  checkpoints,
  types: ['TicketsBought'],
  logger: silentLogger,
  pollIntervalMs: 50,
  retry: { maxAttempts: 8, initialDelayMs: 1, maxDelayMs: 20 },
  handler: (event) => {
    if (Math.random() < 0.2) {
      mailFailures++;
      throw new Error('mail server busy');
    }
    mailsSent++;
    void event;
  },
});

await salesView.start();
await mailer.start();

let bought = 0;
let refunded = 0;
let soldOut = 0;
let done = 0;
let lastQuarter = -1;
const progress = (): void => {
  if (!process.stdout.isTTY) {
    // Piped (CI, a log file): a line per quarter instead of redrawing a bar.
    const quarter = Math.floor((done / ORDERS) * 4);
    if (quarter !== lastQuarter) {
      lastQuarter = quarter;
      console.log(`  orders ${done}/${ORDERS}, mails sent ${mailsSent}, mail retries ${mailFailures}`);
    }
    return;
  }
  const width = 30;
  const filled = Math.round((done / ORDERS) * width);
  process.stdout.write(`\r  orders [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${ORDERS}  mails sent ${mailsSent}, mail retries ${mailFailures}   `);
};

console.log(`eskit ticket-shop demo on SQLite (${file})\n`);
const started = performance.now();
const shopper = async (id: number): Promise<void> => {
  for (let i = id; i < ORDERS; i += 8) {
    const streamId = CONCERTS[i % CONCERTS.length] as string;
    const orderId = `order-${i}`;
    try {
      await handler.handle(streamId, { type: 'BuyTickets', orderId, customer: `customer-${i % 37}`, quantity: 1 + (i % 3) });
      bought++;
      if (i % 7 === 0) {
        await handler.handle(streamId, { type: 'RefundOrder', orderId });
        refunded++;
      }
    } catch (error) {
      if ((error as { code?: string }).code !== 'SOLD_OUT') throw error;
      soldOut++;
    }
    done++;
    progress();
    // Orders arrive as separate requests would: let timers (the mailer's retry backoff) run in between.
    await new Promise((resolve) => setImmediate(resolve));
  }
};
await Promise.all(Array.from({ length: 8 }, (_, id) => shopper(id)));

// Wait until both subscriptions have caught up with everything written.
const head = await store.headPosition();
const lastBought = await lastPositionOf('TicketsBought');
for (;;) {
  const [view, mail] = await Promise.all([salesView.status(), mailer.status()]);
  progress();
  if (view.state === 'failed' || mail.state === 'failed') throw view.error ?? mail.error;
  if ((view.position ?? 0) >= head && (mail.position ?? 0) >= lastBought) break;
  await new Promise((resolve) => setTimeout(resolve, 20));
}
progress();
await Promise.all([salesView.stop(), mailer.stop()]);
const seconds = (performance.now() - started) / 1000;

const rows = db.prepare('SELECT concert, sold, orders FROM demo_sales ORDER BY concert').all() as Array<{ concert: string; sold: number; orders: number }>;
console.log('\n\nSales view (a subscription writing to SQLite):');
for (const row of rows) console.log(`  ${row.concert.padEnd(14)} ${String(row.sold).padStart(3)}/${CAPACITY} tickets in ${row.orders} orders`);
console.log(`\nSummary: ${bought} orders bought, ${refunded} refunded, ${soldOut} refused (sold out);`);
console.log(`${head} events in the log; ${mailsSent} confirmation mails sent after ${mailFailures} failed attempts were retried;`);
console.log(`done in ${seconds.toFixed(1)} s. Inspect it: sqlite3 ${file} 'select * from eskit_events limit 5'`);

const totalSold = rows.reduce((sum, row) => sum + row.sold, 0);
const expectedMails = bought;
await store.close();
if (mailsSent !== expectedMails || totalSold > CAPACITY * CONCERTS.length) {
  console.error(`inconsistent: ${mailsSent} mails for ${expectedMails} orders, ${totalSold} tickets sold`);
  process.exit(1);
}

async function lastPositionOf(type: string): Promise<number> {
  let last = 0;
  for await (const event of store.readAll({ types: [type] })) last = event.position;
  return last;
}
