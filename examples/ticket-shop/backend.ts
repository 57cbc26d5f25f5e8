// Picks the database from the environment and opens eskit's backend on it with one call:
// `sqlite({ path })` under ./data by default, `postgres({ pool, schema })` when DATABASE_URL=postgres://...
// is set; and the demo's own tables (the fake mailbox) next to the events.
// This is the only file of the demo that knows which backend it runs on.
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { consoleLogger } from '../../src/index.js';
import type { Logger, SqlView } from '../../src/index.js';
import { postgres } from '../../src/postgres/index.js';
import type { PostgresBackend } from '../../src/postgres/index.js';
import { sqlite } from '../../src/sqlite/index.js';
import type { SqliteBackend } from '../../src/sqlite/index.js';
import { registry } from './domain.js';
import type { ConcertEvent } from './domain.js';
import type { Confirmation, Mailbox } from './mailer.js';
import { salesView } from './views.js';
import type { SalesViewOptions } from './views.js';

/** A mistake in how the demo was started (exit code 2). */
export class UsageError extends Error {
  readonly code = 'DEMO_USAGE';
}

export type DemoConfig =
  | { kind: 'sqlite'; dir: string; file: string }
  | { kind: 'postgres'; url: string; schema: string };

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * DATABASE_URL=postgres://... selects PostgreSQL (schema ESKIT_DEMO_SCHEMA, default eskit_demo);
 * otherwise SQLite in ESKIT_DEMO_DIR (default ./data).
 */
export function configFromEnv(env: NodeJS.ProcessEnv = process.env): DemoConfig {
  const url = env.DATABASE_URL;
  if (url !== undefined && url !== '') {
    if (!/^postgres(ql)?:\/\//.test(url)) {
      throw new UsageError(`DATABASE_URL must be a PostgreSQL URL (postgres://user@host:5432/db), got "${url}". Unset it to run on SQLite.`);
    }
    const schema = env.ESKIT_DEMO_SCHEMA ?? 'eskit_demo';
    if (!SCHEMA_NAME.test(schema)) throw new UsageError(`ESKIT_DEMO_SCHEMA must be a lower-case identifier such as eskit_demo, got "${schema}".`);
    return { kind: 'postgres', url, schema };
  }
  const dir = env.ESKIT_DEMO_DIR ?? 'data';
  return { kind: 'sqlite', dir, file: join(dir, 'demo.db') };
}

/** The URL without its password, for messages. */
export function safeUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return 'DATABASE_URL';
  }
}

export interface MailRow {
  orderId: string;
  recipient: string;
  /** How many times the mail was delivered: 1 is right, more is a duplicate. */
  sends: number;
  sentBy: string;
}

export interface SalesRow {
  concert: string;
  sold: number;
  orders: number;
}

export interface OrderRow {
  orderId: string;
  concert: string;
  customer: string;
  quantity: number;
  status: string;
}

/** eskit's backend for the demo's database, and the demo's own tables next to it. */
export interface Backend {
  readonly config: DemoConfig;
  /** "SQLite (data/demo.db)" or "PostgreSQL (schema eskit_demo at postgres://...)". */
  readonly label: string;
  /** Where to look afterwards, as a command line. */
  readonly inspect: string;
  /** What subscriptions, automations, views and command handlers run on: one call, closed by `close()`. */
  readonly eskit: SqliteBackend<ConcertEvent> | PostgresBackend<ConcertEvent>;
  readonly mailbox: Mailbox & { rows(): Promise<MailRow[]>; count(): Promise<number>; to(recipient: string): Promise<MailRow[]> };
  /**
   * The addresses the fake mail server was told to accept since the start, `.invalid` ones included
   * (`--dashboard` creates one, so that a dead letter can be retried): its table `demo_mailboxes`.
   */
  readonly mailboxes: { create(address: string): Promise<void>; exists(address: string): Promise<boolean> };
  salesView(options?: SalesViewOptions): SqlView<ConcertEvent>;
  readSales(view: SqlView<ConcertEvent>): Promise<SalesRow[]>;
  readOrder(view: SqlView<ConcertEvent>, orderId: string): Promise<OrderRow | undefined>;
  close(): Promise<void>;
}

export interface OpenOptions {
  /** Start from an empty database (the process that owns the run does this, once). */
  reset: boolean;
  /**
   * Turns leader election on, naming this process in the locks (the cluster's workers): one worker
   * runs each of the view and the mailer, the others stand by. Without it, this process runs them.
   */
  holderId?: string;
  logger?: Logger;
}

export function openBackend(config: DemoConfig, options: OpenOptions): Promise<Backend> {
  return config.kind === 'sqlite' ? openSqlite(config, options) : openPostgres(config, options);
}

const MAILS_TABLE = (table: string): string =>
  `CREATE TABLE IF NOT EXISTS ${table} (order_id TEXT PRIMARY KEY, recipient TEXT NOT NULL, sends INTEGER NOT NULL, sent_by TEXT NOT NULL)`;
const DELIVER = (table: string, p: (n: number) => string): string =>
  `INSERT INTO ${table} AS m (order_id, recipient, sends, sent_by) VALUES (${p(1)}, ${p(2)}, 1, ${p(3)})
   ON CONFLICT (order_id) DO UPDATE SET sends = m.sends + 1, sent_by = m.sent_by || ',' || excluded.sent_by`;
const MAIL_ROWS = (table: string): string => `SELECT order_id AS "orderId", recipient, sends, sent_by AS "sentBy" FROM ${table} ORDER BY order_id`;
const MAILS_TO = (table: string, p: string): string =>
  `SELECT order_id AS "orderId", recipient, sends, sent_by AS "sentBy" FROM ${table} WHERE recipient = ${p} ORDER BY order_id`;
const MAILBOXES_TABLE = (table: string): string => `CREATE TABLE IF NOT EXISTS ${table} (address TEXT PRIMARY KEY)`;
const CREATE_MAILBOX = (table: string, p: string): string => `INSERT INTO ${table} (address) VALUES (${p}) ON CONFLICT (address) DO NOTHING`;
const SALES_ROWS = (table: string): string => `SELECT concert, sold, orders FROM ${table} ORDER BY concert`;
const ORDER_ROW = (table: string, p: string): string =>
  `SELECT order_id AS "orderId", concert, customer, quantity, status FROM ${table} WHERE order_id = ${p}`;

async function openSqlite(config: Extract<DemoConfig, { kind: 'sqlite' }>, options: OpenOptions): Promise<Backend> {
  const logger = options.logger ?? consoleLogger('error');
  mkdirSync(config.dir, { recursive: true });
  if (options.reset) for (const suffix of ['', '-wal', '-shm']) rmSync(config.file + suffix, { force: true });
  // Waiters in other processes poll for a released lease; 20 ms keeps the handoff quick.
  const leaderElection = options.holderId === undefined ? false : { holderId: options.holderId, pollIntervalMs: 20, logger };
  const eskit = sqlite<ConcertEvent>({ path: config.file, registry, leaderElection });
  const db = eskit.database;
  db.exec(MAILS_TABLE('demo_mails'));
  db.exec(MAILBOXES_TABLE('demo_mailboxes'));
  const deliver = db.prepare(DELIVER('demo_mails', () => '?'));
  return {
    config,
    label: `SQLite (${config.file})`,
    inspect: `sqlite3 ${config.file} "select key, attempts from eskit_dead_letters"`,
    eskit,
    mailbox: {
      deliver: async (mail: Confirmation, sentBy: string) => void deliver.run(mail.orderId, mail.to, sentBy),
      rows: async () => db.prepare(MAIL_ROWS('demo_mails')).all() as MailRow[],
      count: async () => db.prepare('SELECT count(*) FROM demo_mails').pluck().get() as number,
      to: async (recipient) => db.prepare(MAILS_TO('demo_mails', '?')).all(recipient) as MailRow[],
    },
    mailboxes: {
      create: async (address) => void db.prepare(CREATE_MAILBOX('demo_mailboxes', '?')).run(address),
      exists: async (address) => db.prepare('SELECT 1 FROM demo_mailboxes WHERE address = ?').get(address) !== undefined,
    },
    salesView: (viewOptions) => salesView(eskit, { logger, pollIntervalMs: 100, ...viewOptions }),
    readSales: async (view) => db.prepare(SALES_ROWS(view.table('sales'))).all() as SalesRow[],
    readOrder: async (view, orderId) => db.prepare(ORDER_ROW(view.table('orders'), '?')).get(orderId) as OrderRow | undefined,
    close: () => eskit.close(),
  };
}

/**
 * Marks a schema as the demo's (a comment on it), so that a run drops only a schema an earlier run
 * created: ESKIT_DEMO_SCHEMA may name any schema of a shared database, and dropping is CASCADE.
 */
export const DEMO_SCHEMA_MARKER = 'eskit demo: created by npm start (examples/demo.ts), which drops and recreates it on every run';

/** Drops the demo's schema if an earlier run created it, and creates it anew with the marker; refuses any other schema. */
async function resetDemoSchema(pool: pg.Pool, config: Extract<DemoConfig, { kind: 'postgres' }>): Promise<void> {
  const s = `"${config.schema}"`;
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const found = await client.query<{ comment: string | null }>(
      "SELECT obj_description(oid, 'pg_namespace') AS comment FROM pg_catalog.pg_namespace WHERE nspname = $1",
      [config.schema],
    );
    const existing = found.rows[0];
    if (existing !== undefined && existing.comment !== DEMO_SCHEMA_MARKER) {
      const where = new URL(config.url);
      throw new UsageError(
        `The schema "${config.schema}" exists in ${where.host}${where.pathname} and was not created by the demo, so the demo will not drop it ` +
          '(each run drops and recreates its schema). Pick another with ESKIT_DEMO_SCHEMA=<a new name>; or, if it is an old demo schema ' +
          `and nothing else is in it, drop it yourself once: DROP SCHEMA ${s} CASCADE.`,
      );
    }
    // Everything the demo writes lives in this schema, so dropping it is a clean slate.
    if (existing !== undefined) await client.query(`DROP SCHEMA ${s} CASCADE`);
    await client.query(`CREATE SCHEMA ${s}`);
    await client.query(`COMMENT ON SCHEMA ${s} IS '${DEMO_SCHEMA_MARKER}'`);
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}

async function openPostgres(config: Extract<DemoConfig, { kind: 'postgres' }>, options: OpenOptions): Promise<Backend> {
  const logger = options.logger ?? consoleLogger('error');
  // A small pool per process: the demo may run four processes on one server.
  const pool = new pg.Pool({ connectionString: config.url, max: 10, connectionTimeoutMillis: 5_000 });
  pool.on('error', () => undefined);
  try {
    await pool.query('SELECT 1');
  } catch (error) {
    await pool.end().catch(() => undefined);
    throw new UsageError(
      `PostgreSQL at ${safeUrl(config.url)} is not reachable (${error instanceof Error ? error.message : String(error)}). ` +
        'Start it or fix DATABASE_URL; unset DATABASE_URL to run on SQLite.',
    );
  }
  const s = `"${config.schema}"`;
  if (options.reset) {
    try {
      await resetDemoSchema(pool, config);
    } catch (error) {
      await pool.end().catch(() => undefined);
      throw error;
    }
  }
  // The lock needs a direct connection of its own: the URL, not the pool.
  const leaderElection = options.holderId === undefined ? false : { holderId: options.holderId, connectionString: config.url, logger };
  const eskit = postgres<ConcertEvent>({ pool, schema: config.schema, registry, logger, leaderElection });
  await eskit.migrate();
  await pool.query(MAILS_TABLE(`${s}.demo_mails`));
  await pool.query(MAILBOXES_TABLE(`${s}.demo_mailboxes`));
  const deliver = DELIVER(`${s}.demo_mails`, (n) => `$${n}`);
  const where = new URL(config.url);
  return {
    config,
    label: `PostgreSQL (schema ${config.schema} at ${where.host}${where.pathname})`,
    inspect: `psql "${safeUrl(config.url)}" -c "select key, attempts from ${config.schema}.dead_letters"`,
    eskit,
    mailbox: {
      deliver: async (mail: Confirmation, sentBy: string) => void (await pool.query(deliver, [mail.orderId, mail.to, sentBy])),
      rows: async () => (await pool.query<MailRow>(MAIL_ROWS(`${s}.demo_mails`))).rows,
      count: async () => Number((await pool.query<{ n: string }>(`SELECT count(*) AS n FROM ${s}.demo_mails`)).rows[0]?.n ?? 0),
      to: async (recipient) => (await pool.query<MailRow>(MAILS_TO(`${s}.demo_mails`, '$1'), [recipient])).rows,
    },
    mailboxes: {
      create: async (address) => void (await pool.query(CREATE_MAILBOX(`${s}.demo_mailboxes`, '$1'), [address])),
      exists: async (address) => ((await pool.query(`SELECT 1 FROM ${s}.demo_mailboxes WHERE address = $1`, [address])).rowCount ?? 0) > 0,
    },
    salesView: (viewOptions) => salesView(eskit, { logger, ...viewOptions }),
    readSales: async (view) => (await pool.query<SalesRow>(SALES_ROWS(view.table('sales')))).rows,
    readOrder: async (view, orderId) => (await pool.query<OrderRow>(ORDER_ROW(view.table('orders'), '$1'), [orderId])).rows[0],
    close: async () => {
      await eskit.close();
      await pool.end();
    },
  };
}
