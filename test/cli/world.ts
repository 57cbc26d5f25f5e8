// A small application for the CLI tests, on SQLite or PostgreSQL: a few events, subscriptions with and
// without leader election, an automation with a dead letter, and a view; the CLI then inspects and
// operates it. `cartsView` is also what test/cli/fixtures/eskit.config.ts hands to `view rebuild`.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Automation } from '../../src/automation/index.js';
import type { Backend as EskitBackend } from '../../src/core/backend.js';
import type { Recorded } from '../../src/core/event.js';
import type { LockRegistry } from '../../src/core/lock.js';
import { silentLogger } from '../../src/core/logger.js';
import type { Logger } from '../../src/core/logger.js';
import { EventRegistry } from '../../src/core/registry.js';
import { postgres } from '../../src/postgres/index.js';
import type { PostgresEventStore, PostgresViews, PostgresViewTx } from '../../src/postgres/index.js';
import { sqlite } from '../../src/sqlite/index.js';
import type { SqliteEventStore, SqliteViews, SqliteViewTx } from '../../src/sqlite/index.js';
import { Subscription } from '../../src/subscription/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { SqlView } from '../../src/view/index.js';
import { createTestSchema } from '../support/postgres.js';

export type ShopEvent = { type: 'ItemAdded'; data: { sku: string } } | { type: 'OrderPlaced'; data: { total: number } };

export const registry = new EventRegistry<ShopEvent>({ ItemAdded: {}, OrderPlaced: {} });

export const HOLDER = 'cli-test-node';

/** What the carts view runs on: a config's context, or the world's store with its views. */
type CartsHost =
  | { backend: 'sqlite'; store: SqliteEventStore<ShopEvent>; views: SqliteViews<ShopEvent> }
  | { backend: 'postgres'; store: PostgresEventStore<ShopEvent>; views: PostgresViews<ShopEvent> };

const cartsStatements = (t: (name: string) => string): string[] => [`CREATE TABLE ${t('carts')} (id TEXT PRIMARY KEY, items INTEGER NOT NULL)`];

function evolveSqlite(event: Recorded<ShopEvent>, { prepare, table }: SqliteViewTx): void {
  prepare(`INSERT INTO ${table('carts')} (id, items) VALUES (?, 1) ON CONFLICT (id) DO UPDATE SET items = items + 1`).run(event.streamId);
}

async function evolvePostgres(event: Recorded<ShopEvent>, { client, table }: PostgresViewTx): Promise<void> {
  await client.query(`INSERT INTO ${table('carts')} (id, items) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET items = ${table('carts')}.items + 1`, [event.streamId]);
}

/** The view `view rebuild` works on: one row per cart with its item count. */
export function cartsView(context: CartsHost, options: { leaderLock?: LockRegistry; logger?: Logger } = {}): SqlView<ShopEvent> {
  const common = { name: 'carts', types: ['ItemAdded'] as const, logger: options.logger ?? silentLogger, leaderLock: options.leaderLock, pollIntervalMs: 50 };
  if (context.backend === 'sqlite') {
    return new SqlView({ ...common, types: ['ItemAdded'], backend: context, setup: { version: 1, statements: cartsStatements }, evolve: evolveSqlite });
  }
  return new SqlView({ ...common, types: ['ItemAdded'], backend: context, setup: { version: 1, statements: cartsStatements }, evolve: evolvePostgres });
}

/**
 * What a rebuild of carts whose process died after its first `count` events leaves: shadow tables
 * built by cartsView's code, and their checkpoint, which it returns (the next rebuild resumes there).
 */
export async function deadCartsRebuild(host: CartsHost, count: number): Promise<number> {
  const spec = { name: 'carts', types: ['ItemAdded'] as const, setup: { version: 1, statements: cartsStatements } };
  const backend = host.backend === 'sqlite' ? host.views.create({ ...spec, evolve: evolveSqlite }) : host.views.create({ ...spec, evolve: evolvePostgres });
  const rebuildId = 'a rebuild that died';
  const { generation } = await backend.beginRebuild(rebuildId);
  const events: Recorded<ShopEvent>[] = [];
  for await (const event of host.store.readAll({ types: ['ItemAdded'], limit: count })) events.push(event);
  await backend.applyShadow(events, rebuildId, generation);
  return (events[events.length - 1] as Recorded<ShopEvent>).position;
}

interface Backend {
  backend: 'sqlite' | 'postgres';
  /** The CLI arguments that name this database. */
  db: string[];
  /** What the runners are built on: `sqlite()` or `postgres()`, leader election on, the lock holder HOLDER. */
  eskit: EskitBackend<ShopEvent>;
  /** The view's host: the backend's store and SQL views. */
  host: CartsHost;
  store: SqliteEventStore<ShopEvent> | PostgresEventStore<ShopEvent>;
  checkpoints: EskitBackend['checkpoints'];
  deadLetters: EskitBackend['deadLetters'];
  completions: EskitBackend['completions'];
  locks: LockRegistry;
  /** The backend pid and application name of the PostgreSQL lock connection. */
  lockSession?: () => { pid: number | undefined; applicationName: string };
  close(): Promise<void>;
}

async function sqliteBackend(): Promise<Backend> {
  const dir = mkdtempSync(join(tmpdir(), 'eskit-cli-'));
  const path = join(dir, 'app.db');
  const eskit = sqlite<ShopEvent>({ path, registry, leaderElection: { holderId: HOLDER, ttlMs: 3000, logger: silentLogger } });
  const locks = eskit.locks;
  if (locks === undefined) throw new Error('leader election is on');
  return {
    backend: 'sqlite',
    db: ['--db', `sqlite:${path}`],
    eskit,
    host: { backend: 'sqlite', store: eskit.store, views: eskit.views },
    ...eskit,
    locks,
    async close() {
      await eskit.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function postgresBackend(): Promise<Backend> {
  const schema = await createTestSchema({ create: false, prefix: 'eskit_cli' });
  const eskit = postgres<ShopEvent>({
    connectionString: schema.connectionString,
    schema: schema.name,
    registry,
    logger: silentLogger,
    leaderElection: { holderId: HOLDER, logger: silentLogger },
  });
  await eskit.migrate();
  const locks = eskit.locks;
  if (locks === undefined) throw new Error('leader election is on');
  return {
    backend: 'postgres',
    db: ['--db', schema.connectionString, '--schema', schema.name],
    eskit,
    host: { backend: 'postgres', store: eskit.store, views: eskit.views },
    ...eskit,
    locks,
    lockSession: () => ({ pid: locks.connectionPid, applicationName: locks.applicationName }),
    async close() {
      await eskit.close();
      await schema.drop();
    },
  };
}

export interface World extends Backend {
  /** Positions the leading 'mailer' subscription handled, in order (a replay shows up twice). */
  mailerSeen: number[];
  /** Turn the notifier's side effect from failing to succeeding. */
  notifier: { failing: boolean; executed: string[] };
  /** The dead letters made in the set-up, by name. */
  letters: { notifier: string; mailer: string; stopped: string[] };
  view: SqlView<ShopEvent>;
  stop(): Promise<void>;
}

/**
 * Five events (cart-1: 3 items, cart-2: 1 item, order-1: an order), then:
 * - 'audit': a subscription without leader election, caught up and stopped (state unknown; its status row says it is a subscription),
 * - 'stopped-sub': with leader election, caught up and stopped (no leader),
 * - 'mailer': with leader election, running (leading),
 * - 'notifier': an automation whose side effect fails: one dead letter (stage execute), running,
 * - 'carts': a view, running, with leader election,
 * - dead letters of stage handler: one of 'mailer', two of 'stopped-sub'.
 */
export async function createWorld(kind: 'sqlite' | 'postgres'): Promise<World> {
  const backend = kind === 'sqlite' ? await sqliteBackend() : await postgresBackend();
  const { eskit, store, checkpoints, deadLetters } = backend;
  const stops: Array<() => Promise<void>> = [];
  try {
    await store.append('cart-1', [
      { type: 'ItemAdded', data: { sku: 'a' } },
      { type: 'ItemAdded', data: { sku: 'b' } },
      { type: 'ItemAdded', data: { sku: 'c' } },
    ]);
    await store.append('cart-2', [{ type: 'ItemAdded', data: { sku: 'd' } }]);
    await store.append('order-1', [{ type: 'OrderPlaced', data: { total: 10 } }]);
    const head = await store.headPosition();

    const runToHead = async (name: string, leaderElection: boolean): Promise<void> => {
      const leaderLock = leaderElection ? undefined : false;
      const subscription = new Subscription<ShopEvent>({ backend: eskit, name, handler: () => undefined, leaderLock, logger: silentLogger, pollIntervalMs: 50 });
      await subscription.start();
      await waitUntil(async () => (await checkpoints.load(name)) === head, { timeoutMs: 10_000, message: `${name} to catch up` });
      await subscription.stop();
    };
    await runToHead('audit', false);
    await runToHead('stopped-sub', true);

    const mailerSeen: number[] = [];
    const mailer = new Subscription<ShopEvent>({
      backend: eskit,
      name: 'mailer',
      handler: (event: Recorded<ShopEvent>) => void mailerSeen.push(event.position),
      logger: silentLogger,
      pollIntervalMs: 50,
      checkpointIntervalMs: 0,
    });
    await mailer.start();
    stops.push(() => mailer.stop());

    const notifier = { failing: true, executed: [] as string[] };
    const automation = new Automation<ShopEvent, { total: number }>({
      backend: eskit,
      name: 'notifier',
      types: ['OrderPlaced'],
      trigger: (event) => (event.type === 'OrderPlaced' ? { key: event.streamId, payload: { total: event.data.total } } : undefined),
      execute: (item) => {
        if (notifier.failing) throw new Error('smtp server down');
        notifier.executed.push(item.key);
      },
      retry: { maxAttempts: 1 },
      logger: silentLogger,
      pollIntervalMs: 50,
    });
    await automation.start();
    stops.push(() => automation.stop());

    const view = cartsView(backend.host, { leaderLock: backend.locks });
    await view.start();
    stops.push(() => view.stop());
    await view.waitFor(head, { timeoutMs: 10_000 });

    await waitUntil(async () => (await deadLetters.count({ source: 'notifier' })) === 1, { timeoutMs: 10_000, message: 'the notifier dead letter' });
    await waitUntil(async () => (await checkpoints.load('mailer')) === head, { timeoutMs: 10_000, message: 'mailer to catch up' });
    await waitUntil(async () => (await checkpoints.load('notifier')) === head, { timeoutMs: 10_000, message: 'notifier to pass the dead letter' });

    const events: Recorded<ShopEvent>[] = [];
    for await (const event of store.readAll()) events.push(event);
    const first = events[0] as Recorded<ShopEvent>;
    const handlerLetter = (source: string, error: string) =>
      deadLetters.add({
        source,
        stage: 'handler',
        key: '',
        payload: null,
        eventId: first.id,
        eventType: first.type,
        eventPosition: first.position,
        streamId: first.streamId,
        attempts: [{ at: new Date(), error }],
      });
    const mailerLetter = await handlerLetter('mailer', 'template missing');
    const stopped = [await handlerLetter('stopped-sub', 'one'), await handlerLetter('stopped-sub', 'two')];
    const [notifierLetter] = await deadLetters.list({ source: 'notifier' });

    return {
      ...backend,
      mailerSeen,
      notifier,
      letters: { notifier: notifierLetter?.id as string, mailer: mailerLetter.id, stopped: stopped.map((letter) => letter.id) },
      view,
      async stop() {
        for (const stop of stops.reverse()) await stop().catch(() => undefined);
        await backend.close();
      },
    };
  } catch (error) {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    await backend.close().catch(() => undefined);
    throw error;
  }
}
