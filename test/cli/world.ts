// A small application for the CLI tests, on SQLite or PostgreSQL: a few events, subscriptions with and
// without leader election, an automation with a dead letter, and a view; the CLI then inspects and
// operates it. `cartsView` is also what test/cli/fixtures/eskit.config.ts hands to `view rebuild`.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Automation } from '../../src/automation/index.js';
import type { CheckpointStore } from '../../src/core/checkpoint.js';
import type { CompletionStore, DeadLetterStore } from '../../src/core/dead-letter.js';
import type { Recorded } from '../../src/core/event.js';
import type { LockRegistry } from '../../src/core/lock.js';
import { silentLogger } from '../../src/core/logger.js';
import type { Logger } from '../../src/core/logger.js';
import { EventRegistry } from '../../src/core/registry.js';
import {
  PgLockRegistry,
  PostgresCheckpointStore,
  PostgresCompletionStore,
  PostgresDeadLetterStore,
  PostgresEventStore,
  PostgresViews,
} from '../../src/postgres/index.js';
import {
  SqliteCheckpointStore,
  SqliteCompletionStore,
  SqliteDeadLetterStore,
  SqliteEventStore,
  SqliteLockRegistry,
  SqliteViews,
} from '../../src/sqlite/index.js';
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

/** The view `view rebuild` works on: one row per cart with its item count. */
export function cartsView(context: CartsHost, options: { leaderLock?: LockRegistry; logger?: Logger } = {}): SqlView<ShopEvent> {
  const common = { name: 'carts', types: ['ItemAdded'] as const, logger: options.logger ?? silentLogger, leaderLock: options.leaderLock, pollIntervalMs: 50 };
  const statements = (t: (name: string) => string): string[] => [`CREATE TABLE ${t('carts')} (id TEXT PRIMARY KEY, items INTEGER NOT NULL)`];
  if (context.backend === 'sqlite') {
    return new SqlView({
      ...common,
      types: ['ItemAdded'],
      backend: context,
      setup: { version: 1, statements },
      evolve: (event, { prepare, table }) => {
        prepare(`INSERT INTO ${table('carts')} (id, items) VALUES (?, 1) ON CONFLICT (id) DO UPDATE SET items = items + 1`).run(event.streamId);
      },
    });
  }
  return new SqlView({
    ...common,
    types: ['ItemAdded'],
    backend: context,
    setup: { version: 1, statements },
    evolve: async (event, { client, table }) => {
      await client.query(`INSERT INTO ${table('carts')} (id, items) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET items = ${table('carts')}.items + 1`, [
        event.streamId,
      ]);
    },
  });
}

interface Backend {
  backend: 'sqlite' | 'postgres';
  /** The CLI arguments that name this database. */
  db: string[];
  store: SqliteEventStore<ShopEvent> | PostgresEventStore<ShopEvent>;
  checkpoints: CheckpointStore;
  deadLetters: DeadLetterStore;
  completions: CompletionStore;
  locks: LockRegistry;
  /** The backend pid and application name of the PostgreSQL lock connection. */
  lockSession?: () => { pid: number | undefined; applicationName: string };
  close(): Promise<void>;
}

async function sqliteBackend(): Promise<Backend> {
  const dir = mkdtempSync(join(tmpdir(), 'eskit-cli-'));
  const path = join(dir, 'app.db');
  const store = new SqliteEventStore<ShopEvent>({ path, registry });
  const locks = new SqliteLockRegistry({ store, holderId: HOLDER, ttlMs: 3000, logger: silentLogger });
  return {
    backend: 'sqlite',
    db: ['--db', `sqlite:${path}`],
    store,
    checkpoints: new SqliteCheckpointStore({ store }),
    deadLetters: new SqliteDeadLetterStore({ store }),
    completions: new SqliteCompletionStore({ store }),
    locks,
    async close() {
      await locks.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function postgresBackend(): Promise<Backend> {
  const schema = await createTestSchema({ create: false, prefix: 'eskit_cli' });
  const store = new PostgresEventStore<ShopEvent>({ connectionString: schema.connectionString, schema: schema.name, registry, logger: silentLogger });
  await store.migrate();
  const locks = new PgLockRegistry({ connectionString: schema.connectionString, schema: schema.name, holderId: HOLDER, logger: silentLogger });
  return {
    backend: 'postgres',
    db: ['--db', schema.connectionString, '--schema', schema.name],
    store,
    checkpoints: new PostgresCheckpointStore({ store }),
    deadLetters: new PostgresDeadLetterStore({ store }),
    completions: new PostgresCompletionStore({ store }),
    locks,
    lockSession: () => ({ pid: locks.connectionPid, applicationName: locks.applicationName }),
    async close() {
      await locks.close();
      await store.close();
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
 * - 'audit': a subscription without leader election, caught up and stopped (state unknown),
 * - 'stopped-sub': with leader election, caught up and stopped (no leader),
 * - 'mailer': with leader election, running (leading),
 * - 'notifier': an automation whose side effect fails: one dead letter (stage execute), running,
 * - 'carts': a view, running, with leader election,
 * - dead letters of stage handler: one of 'mailer', two of 'stopped-sub'.
 */
export async function createWorld(kind: 'sqlite' | 'postgres'): Promise<World> {
  const backend = kind === 'sqlite' ? await sqliteBackend() : await postgresBackend();
  const { store, checkpoints, deadLetters, completions, locks } = backend;
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

    const runToHead = async (name: string, leaderLock?: LockRegistry): Promise<void> => {
      const subscription = new Subscription<ShopEvent>({ name, store, checkpoints, handler: () => undefined, leaderLock, logger: silentLogger, pollIntervalMs: 50 });
      await subscription.start();
      await waitUntil(async () => (await checkpoints.load(name)) === head, { timeoutMs: 10_000, message: `${name} to catch up` });
      await subscription.stop();
    };
    await runToHead('audit');
    await runToHead('stopped-sub', locks);

    const mailerSeen: number[] = [];
    const mailer = new Subscription<ShopEvent>({
      name: 'mailer',
      store,
      checkpoints,
      handler: (event: Recorded<ShopEvent>) => void mailerSeen.push(event.position),
      leaderLock: locks,
      logger: silentLogger,
      pollIntervalMs: 50,
      checkpointIntervalMs: 0,
    });
    await mailer.start();
    stops.push(() => mailer.stop());

    const notifier = { failing: true, executed: [] as string[] };
    const automation = new Automation<ShopEvent, { total: number }>({
      name: 'notifier',
      store,
      checkpoints,
      deadLetters,
      completions,
      types: ['OrderPlaced'],
      trigger: (event) => (event.type === 'OrderPlaced' ? { key: event.streamId, payload: { total: event.data.total } } : undefined),
      execute: (item) => {
        if (notifier.failing) throw new Error('smtp server down');
        notifier.executed.push(item.key);
      },
      retry: { maxAttempts: 1 },
      leaderLock: locks,
      logger: silentLogger,
      pollIntervalMs: 50,
    });
    await automation.start();
    stops.push(() => automation.stop());

    const view =
      backend.backend === 'sqlite'
        ? cartsView({ backend: 'sqlite', store: store as SqliteEventStore<ShopEvent>, views: new SqliteViews({ store: store as SqliteEventStore<ShopEvent> }) }, { leaderLock: locks })
        : cartsView({ backend: 'postgres', store: store as PostgresEventStore<ShopEvent>, views: new PostgresViews({ store: store as PostgresEventStore<ShopEvent> }) }, { leaderLock: locks });
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
