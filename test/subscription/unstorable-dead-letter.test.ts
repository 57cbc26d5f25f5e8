// Issue 13, item 5: a failure whose text a database refuses (NUL, a lone surrogate) must still be
// dead-lettered. The queue refusing the letter forever stalled the subscription (it retried the add
// until stopped) and failed a view's rebuild.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { Subscription, silentLogger } from '../../src/index.js';
import type { DeadLetterStore, EventStore, Recorded } from '../../src/index.js';
import { PostgresDeadLetterStore, PostgresEventStore } from '../../src/postgres/index.js';
import { SqliteCheckpointStore, SqliteDeadLetterStore, SqliteEventStore } from '../../src/sqlite/index.js';
import { PostgresCheckpointStore } from '../../src/postgres/index.js';
import type { CheckpointStore } from '../../src/core/checkpoint.js';
import { waitUntil } from '../../src/testing/wait.js';
import { createTestSchema } from '../support/postgres.js';
import { databasesAfterEach } from '../sqlite/helpers.js';
import { appendMany, counted, pgCounter, sqliteCounter } from '../view/helpers.js';
import type { TestEvent } from '../view/helpers.js';

const UNSTORABLE = 'refused: NUL \u0000 and a lone surrogate \ud800 in the text';
const sqliteFiles = databasesAfterEach('unstorable');
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Backend {
  store: EventStore<TestEvent>;
  checkpoints: CheckpointStore;
  deadLetters: DeadLetterStore;
}

async function postgres(): Promise<Backend & { store: PostgresEventStore<TestEvent> }> {
  const schema = await createTestSchema({ create: false });
  cleanups.push(() => schema.drop());
  const store = new PostgresEventStore<TestEvent>({ pool: schema.pool, schema: schema.name });
  await store.migrate();
  return { store, checkpoints: new PostgresCheckpointStore({ store }), deadLetters: new PostgresDeadLetterStore({ store }) };
}

async function sqlite(): Promise<Backend & { store: SqliteEventStore<TestEvent> }> {
  const store = new SqliteEventStore<TestEvent>({ path: sqliteFiles.freshPath() });
  sqliteFiles.closeAfterTest(() => store.close());
  return { store, checkpoints: new SqliteCheckpointStore({ store }), deadLetters: new SqliteDeadLetterStore({ store }) };
}

for (const [name, open] of [['postgres', postgres], ['sqlite', sqlite]] as const) {
  describe(`a failure with unstorable text is dead-lettered (${name})`, () => {
    it('a subscription stores the letter and goes on', async () => {
      const { store, checkpoints, deadLetters } = await open();
      await appendMany(store, 3);
      const seen: Recorded[] = [];
      const subscription = new Subscription<TestEvent>({
        name: 'unstorable',
        store,
        checkpoints,
        deadLetters,
        logger: silentLogger,
        pollIntervalMs: 20,
        retry: { maxAttempts: 1 },
        handler: (event) => {
          if (event.position === 2) throw new Error(UNSTORABLE);
          seen.push(event);
        },
      });
      cleanups.push(() => subscription.stop());
      await subscription.start();
      await waitUntil(() => seen.length === 2, { timeoutMs: 5000, message: 'the events after the failing one are handled' });
      const letters = await deadLetters.list({ source: 'unstorable' });
      assert.equal(letters.length, 1);
      assert.equal(letters[0]?.eventPosition, 2);
      assert.match(letters[0]?.attempts[0]?.error ?? '', /refused: NUL .* and a lone surrogate .* in the text/);
      assert.equal((await subscription.status()).state, 'leading');
    });

    it('a view rebuild stores the letter and finishes', async () => {
      const backend = await open();
      const { deadLetters } = backend;
      await appendMany(backend.store, 2);
      await backend.store.append('bad', [counted(99)]);
      const before = (event: Recorded<TestEvent>): void => {
        if (event.type === 'Counted' && event.data.n === 99) throw new Error(UNSTORABLE);
      };
      const view =
        name === 'postgres'
          ? pgCounter(backend.store as PostgresEventStore<TestEvent>, { deadLetters, before })
          : sqliteCounter(backend.store as SqliteEventStore<TestEvent>, { deadLetters, before });
      cleanups.push(() => view.stop());
      const result = await view.rebuild();
      assert.equal(result.position, 3);
      const letters = await deadLetters.list({ source: 'counter' });
      assert.deepEqual(letters.map((letter) => letter.eventPosition), [3]);
    });
  });
}
