// Issue 13, item 4: exactly once for side effects in the same database. completeWithin runs the effect
// and records the item's completion in one transaction, fenced; an automation's execute made by
// inTransaction uses it. Proven per adapter here, and across a SIGKILL in duplicates-after-kill.test.ts.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type Database from 'better-sqlite3';
import type pg from 'pg';
import { Automation, PermanentFailure, inTransaction, isEskitError, silentLogger } from '../../src/index.js';
import { MemoryLockRegistry } from '../../src/memory/index.js';
import type { CheckpointStore, TransactionalCompletionStore } from '../../src/adapter/index.js';
import type { EventShape, EventStore } from '../../src/index.js';
import { PostgresCheckpointStore, PostgresCompletionStore, PostgresDeadLetterStore, PostgresEventStore } from '../../src/postgres/index.js';
import { SqliteCheckpointStore, SqliteCompletionStore, SqliteDeadLetterStore, SqliteEventStore } from '../../src/sqlite/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { createTestSchema } from '../support/postgres.js';
import { databasesAfterEach } from '../sqlite/helpers.js';

const NAME = 'shipper';
const sqliteFiles = databasesAfterEach('transactional');
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Backend<Tx> {
  store: EventStore;
  checkpoints: CheckpointStore;
  completions: TransactionalCompletionStore<Tx>;
  deadLetters: SqliteDeadLetterStore | PostgresDeadLetterStore;
  /** Writes the effect row of `item` with the transaction's handle. */
  ship(tx: Tx, item: number): unknown;
  shipped(): Promise<number[]>;
}

async function sqlite(): Promise<Backend<Database.Database>> {
  const store = new SqliteEventStore({ path: sqliteFiles.freshPath() });
  sqliteFiles.closeAfterTest(() => store.close());
  store.database.exec('CREATE TABLE shipments (item INTEGER NOT NULL)');
  return {
    store,
    checkpoints: new SqliteCheckpointStore({ store }),
    completions: new SqliteCompletionStore({ store }),
    deadLetters: new SqliteDeadLetterStore({ store }),
    ship: (database, item) => database.prepare('INSERT INTO shipments (item) VALUES (?)').run(item),
    shipped: async () => store.database.prepare('SELECT item FROM shipments ORDER BY item').pluck().all() as number[],
  };
}

async function postgres(): Promise<Backend<pg.PoolClient>> {
  const schema = await createTestSchema({ create: false });
  cleanups.push(() => schema.drop());
  const store = new PostgresEventStore({ pool: schema.pool, schema: schema.name });
  await store.migrate();
  await schema.pool.query(`CREATE TABLE "${schema.name}".shipments (item bigint NOT NULL)`);
  return {
    store,
    checkpoints: new PostgresCheckpointStore({ store }),
    completions: new PostgresCompletionStore({ store }),
    deadLetters: new PostgresDeadLetterStore({ store }),
    ship: (client, item) => client.query(`INSERT INTO "${schema.name}".shipments (item) VALUES ($1)`, [item]),
    shipped: async () => (await schema.pool.query<{ item: string }>(`SELECT item FROM "${schema.name}".shipments ORDER BY item`)).rows.map((r) => Number(r.item)),
  };
}

const backends = { sqlite, postgres } as const;

for (const [kind, open] of Object.entries(backends)) {
  describe(`completeWithin and inTransaction (${kind})`, () => {
    it('the effect and the completion record commit together; a throwing effect commits neither', async () => {
      const b = (await open()) as Backend<unknown>;
      await b.completions.completeWithin(NAME, { position: 1, itemId: '1:a' }, (tx) => b.ship(tx, 1));
      await assert.rejects(
        b.completions.completeWithin(NAME, { position: 2, itemId: '1:b' }, (tx) => {
          const wrote = b.ship(tx, 2);
          if (kind === 'sqlite') throw new Error('after the write');
          return Promise.resolve(wrote).then(() => Promise.reject(new Error('after the write')));
        }),
        /after the write/,
      );
      assert.deepEqual(await b.shipped(), [1]);
      assert.deepEqual([...(await b.completions.completedAfter(NAME, 0))], ['1/1:a']);
    });

    it('a stale token commits neither (FencedError)', async () => {
      const b = (await open()) as Backend<unknown>;
      await b.checkpoints.claim(NAME, 5);
      await assert.rejects(
        b.completions.completeWithin(NAME, { position: 1, itemId: '1:a' }, (tx) => b.ship(tx, 1), { fence: { checkpoint: NAME, fencingToken: 4 } }),
        (error: unknown) => isEskitError(error, 'ESKIT_FENCED'),
      );
      await b.completions.completeWithin(NAME, { position: 2, itemId: '1:b' }, (tx) => b.ship(tx, 2), { fence: { checkpoint: NAME, fencingToken: 5 } });
      assert.deepEqual(await b.shipped(), [2]);
      assert.deepEqual([...(await b.completions.completedAfter(NAME, 0))], ['2/1:b']);
    });

    if (kind === 'sqlite') {
      it('refuses work that returns a promise, and commits nothing of it', async () => {
        const b = await sqlite();
        await assert.rejects(
          b.completions.completeWithin(NAME, { position: 1, itemId: '1:a' }, async (database) => {
            b.ship(database, 1);
          }),
          (error: unknown) => isEskitError(error, 'ESKIT_INVALID_ARGUMENT') && /synchronous/.test((error as Error).message),
        );
        assert.deepEqual(await b.shipped(), []);
        assert.equal((await b.completions.completedAfter(NAME, 0)).size, 0);
      });
    }

    it('an automation runs each effect once, in the transaction; a failed attempt leaves no trace; a restart re-runs nothing', async () => {
      const b = (await open()) as Backend<unknown>;
      for (let n = 1; n <= 6; n++) await b.store.append(`order-${n}`, [{ type: 'Ordered', data: { n } }]);
      let failures = 0;
      const make = (checkpoints: CheckpointStore): Automation<EventShape, { n: number }> => {
        const automation = new Automation<EventShape, { n: number }>({
          name: NAME,
          store: b.store,
          checkpoints,
          stopCallTimeoutMs: 50,
          deadLetters: b.deadLetters,
          leaderLock: new MemoryLockRegistry(),
          logger: silentLogger,
          pollIntervalMs: 10,
          retry: { maxAttempts: 3, initialDelayMs: 1, maxDelayMs: 1 },
          trigger: (event) => ({ key: event.streamId, payload: { n: (event.data as { n: number }).n } }),
          execute: inTransaction(b.completions, (item, tx) => {
            const wrote = b.ship(tx, item.payload.n);
            // The first attempt of item 3 fails after its write: that write must not survive.
            if (item.payload.n === 3 && failures++ === 0) {
              if (kind === 'sqlite') throw new Error('transient');
              return Promise.resolve(wrote).then(() => Promise.reject(new Error('transient')));
            }
            if (item.payload.n === 6) throw new PermanentFailure('cannot ship');
            return wrote;
          }),
        });
        cleanups.push(() => automation.stop());
        return automation;
      };
      // As if the first node died before any checkpoint save landed: only the completion records,
      // written with each effect, can keep the next one from shipping again.
      const neverSaved: CheckpointStore = {
        load: (name) => b.checkpoints.load(name),
        claim: (name, token) => b.checkpoints.claim(name, token),
        list: () => b.checkpoints.list(),
        save: () => new Promise(() => undefined),
      };
      const first = make(neverSaved);
      await first.start();
      await waitUntil(async () => (await b.deadLetters.count({ source: NAME })) === 1 && (await b.shipped()).length === 5, { message: 'five shipped, one dead-lettered' });
      await first.stop();
      assert.deepEqual(await b.shipped(), [1, 2, 3, 4, 5]);
      assert.equal(await b.checkpoints.load(NAME), undefined);
      const second = make(b.checkpoints);
      await second.start();
      await waitUntil(async () => (await b.checkpoints.load(NAME)) === 6, { message: 'the restart catches up' });
      assert.deepEqual(await b.shipped(), [1, 2, 3, 4, 5], 'nothing ran twice');
    });
  });
}
