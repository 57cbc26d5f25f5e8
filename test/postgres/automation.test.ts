// The automation engine end to end on PostgreSQL: events, checkpoint, lease, dead letters and
// completion records all in one schema, through the PostgreSQL adapters only.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { Automation } from '../../src/automation/automation.js';
import type { AutomationOptions } from '../../src/automation/automation.js';
import type { EventShape, Recorded } from '../../src/core/event.js';
import { silentLogger } from '../../src/core/logger.js';
import {
  PostgresLockRegistry,
  PostgresCheckpointStore,
  PostgresCompletionStore,
  PostgresDeadLetterStore,
  PostgresEventStore,
} from '../../src/postgres/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { createTestSchema } from '../support/postgres.js';

const NAME = 'mailer';
const TEST_TIMEOUT = 60_000;
const WAIT = { timeoutMs: 15_000 };

type Payload = { n: number };
interface Run {
  key: string;
  n: number;
  attempt: number;
  redrive: boolean;
  token: number | undefined;
}

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((resolve) => (open = resolve));
  return { wait, open };
}

async function setup() {
  const schema = await createTestSchema({ create: false, poolSize: 8 });
  cleanups.push(() => schema.drop());
  const store = new PostgresEventStore({ pool: schema.pool, schema: schema.name, logger: silentLogger });
  cleanups.push(() => store.close());
  const checkpoints = new PostgresCheckpointStore({ store });
  const deadLetters = new PostgresDeadLetterStore({ store });
  const completions = new PostgresCompletionStore({ store });
  const runs: Run[] = [];
  const base: AutomationOptions<EventShape, Payload> = {
    name: NAME,
    store,
    checkpoints,
    deadLetters,
    completions,
    logger: silentLogger,
    pollIntervalMs: 20,
    retry: { maxAttempts: 3, initialDelayMs: 1, maxDelayMs: 5 },
    trigger: (event) => ({ key: (event.data as { key: string }).key, payload: { n: event.position } }),
    execute: () => undefined,
  };
  const automation = (overrides: Partial<AutomationOptions<EventShape, Payload>>): Automation<EventShape, Payload> => {
    const runner = new Automation<EventShape, Payload>({ ...base, ...overrides });
    cleanups.push(() => runner.stop());
    return runner;
  };
  const record = (item: { key: string; payload: Payload }, ctx: { attempt: number; redrive: boolean; fencingToken: number | undefined }): void => {
    runs.push({ key: item.key, n: item.payload.n, attempt: ctx.attempt, redrive: ctx.redrive, token: ctx.fencingToken });
  };
  const append = async (keys: string[]): Promise<void> => {
    for (const key of keys) await store.append(`order-${key}`, [{ type: 'OrderPlaced', data: { key } }]);
  };
  const eventAt = async (position: number): Promise<Recorded | undefined> => {
    for await (const event of store.readAll({ after: position - 1, limit: 1 })) return event;
    return undefined;
  };
  const checkpointAt = (position: number) => waitUntil(async () => (await checkpoints.load(NAME)) === position, { ...WAIT, message: `checkpoint ${position}` });
  return { schema, store, checkpoints, deadLetters, completions, runs, automation, record, append, eventAt, checkpointAt };
}

describe('Automation on PostgreSQL', () => {
  it(
    'runs the items under a PostgreSQL lease, dead-letters the one that keeps failing, reaches the head; redrives run it again',
    { timeout: TEST_TIMEOUT },
    async () => {
      const db = await setup();
      const leaderLock = new PostgresLockRegistry({ connectionString: db.schema.connectionString, schema: db.schema.name, logger: silentLogger });
      cleanups.push(() => leaderLock.close());
      let healthy = false;
      const automation = db.automation({
        leaderLock,
        execute: (item, ctx) => {
          if (item.key === 'bad' && !healthy) throw new Error(`bounce ${ctx.attempt}${ctx.redrive ? ' (redrive)' : ''}`);
          db.record(item, ctx);
        },
      });
      await db.append(['a', 'b', 'bad', 'a', 'c']);
      await automation.start();
      await db.checkpointAt(5);

      assert.deepEqual(
        sortedRuns(db.runs),
        [
          ['a', 1, 1, false, 1],
          ['a', 4, 1, false, 1],
          ['b', 2, 1, false, 1],
          ['c', 5, 1, false, 1],
        ],
        'each item once, on its first attempt, with the lease token',
      );
      assert.deepEqual(
        db.runs.filter((r) => r.key === 'a').map((r) => r.n),
        [1, 4],
        'one key runs in event order',
      );
      assert.deepEqual(
        (await db.checkpoints.list()).map((c) => [c.name, c.position, c.fencingToken]),
        [[NAME, 5, 1]],
        'the checkpoint was saved with the lease token',
      );

      const event = await db.eventAt(3);
      const letters = await db.deadLetters.list({ source: NAME });
      assert.equal(letters.length, 1);
      const [letter] = letters;
      assert.deepEqual(
        { ...letter, id: undefined, createdAt: undefined, updatedAt: undefined, attempts: letter?.attempts.map((a) => a.error) },
        {
          id: undefined,
          source: NAME,
          stage: 'execute',
          key: 'bad',
          payload: { n: 3 },
          eventId: event?.id,
          eventType: 'OrderPlaced',
          eventPosition: 3,
          streamId: 'order-bad',
          attempts: ['Error: bounce 1', 'Error: bounce 2', 'Error: bounce 3'],
          status: 'dead',
          createdAt: undefined,
          updatedAt: undefined,
        },
      );
      assert.ok(letter?.attempts.every((a) => a.at instanceof Date));

      // It keeps going with new events.
      await db.append(['d', 'e']);
      await db.checkpointAt(7);
      assert.deepEqual(
        db.runs.filter((r) => r.n > 5).map((r) => r.key).sort(),
        ['d', 'e'],
      );

      // A redrive that fails again puts the letter back to 'dead' with this round's attempts appended.
      const id = letter?.id as string;
      assert.equal(await db.deadLetters.redrive({ id }), 1);
      await waitUntil(async () => (await db.deadLetters.get(id))?.attempts.length === 6, { ...WAIT, message: 'the failed redrive settled' });
      const failedAgain = await db.deadLetters.get(id);
      assert.equal(failedAgain?.status, 'dead');
      assert.deepEqual(failedAgain?.attempts.slice(3).map((a) => a.error), [
        'Error: bounce 1 (redrive)',
        'Error: bounce 2 (redrive)',
        'Error: bounce 3 (redrive)',
      ]);

      // Once the system is healthy, a redrive runs it and removes the letter.
      healthy = true;
      assert.equal(await db.deadLetters.redrive({ source: NAME }), 1);
      await waitUntil(async () => (await db.deadLetters.count({ source: NAME })) === 0, { ...WAIT, message: 'the redrive succeeded' });
      assert.deepEqual(
        db.runs.filter((r) => r.redrive).map((r) => [r.key, r.n, r.token]),
        [['bad', 3, 1]],
      );
      assert.equal(db.runs.filter((r) => r.key === 'bad').length, 1, 'the item ran successfully exactly once');

      await automation.stop();
      assert.equal(await db.checkpoints.load(NAME), 7, 'the checkpoint stays at the head');
      assert.equal(db.runs.length, 7);
    },
  );

  it(
    'after a crash, a replay from the checkpoint runs only the items not recorded as completed; the records are pruned once passed',
    { timeout: TEST_TIMEOUT },
    async () => {
      const db = await setup();
      const blocker = gate();
      const first = db.automation({
        concurrency: 4,
        execute: async (item, ctx) => {
          if (item.key === 'slow') await blocker.wait;
          db.record({ key: `first:${item.key}`, payload: item.payload }, ctx);
        },
      });
      // Registered after first.stop, so it runs before: a stop waits for the item in flight.
      cleanups.push(() => blocker.open());
      await db.append(['slow', 'a', 'b', 'c']);
      await first.start();
      await waitUntil(() => db.runs.length === 3, WAIT);
      // The completion records of a, b and c reach PostgreSQL on the next poll tick.
      await waitUntil(async () => (await db.completions.completedAfter(NAME, 0)).size === 3, { ...WAIT, message: 'completions recorded' });
      // Item ids are the automation's business; each names its key.
      const rows = await db.schema.pool.query<{ source: string; position: string; item_id: string }>(
        `SELECT source, position, item_id FROM "${db.schema.name}".completions ORDER BY position`,
      );
      assert.deepEqual(rows.rows.map((r) => [r.source, Number(r.position)]), [[NAME, 2], [NAME, 3], [NAME, 4]]);
      assert.deepEqual(rows.rows.map((r) => r.item_id.includes(['a', 'b', 'c'][Number(r.position) - 2] as string)), [true, true, true]);
      assert.deepEqual(await db.completions.completedAfter(NAME, 0), new Set(rows.rows.map((r) => `${r.position}/${r.item_id}`)));
      assert.equal(await db.checkpoints.load(NAME), undefined, 'nothing checkpointed while slow holds it');

      // The crash: the first node never finishes; a second one starts from the same (empty) checkpoint.
      const second = db.automation({
        execute: (item, ctx) => db.record({ key: `second:${item.key}`, payload: item.payload }, ctx),
      });
      await second.start();
      await db.checkpointAt(4);
      assert.deepEqual(
        db.runs.filter((r) => r.key.startsWith('second:')).map((r) => [r.key, r.n]),
        [['second:slow', 1]],
        'a, b and c had completed: only slow runs again',
      );
      await second.stop();
      blocker.open();
      await first.stop();

      // The next leadership period starts at checkpoint 4: the records at or below it are pruned.
      const third = db.automation({ execute: (item, ctx) => db.record({ key: `third:${item.key}`, payload: item.payload }, ctx) });
      await third.start();
      await waitUntil(async () => (await db.completions.completedAfter(NAME, 0)).size === 0, { ...WAIT, message: 'completions pruned' });
      await db.append(['d']);
      await db.checkpointAt(5);
      assert.deepEqual(db.runs.filter((r) => r.key.startsWith('third:')).map((r) => [r.key, r.n]), [['third:d', 5]]);
    },
  );
});

function sortedRuns(runs: Run[]): Array<[string, number, number, boolean, number | undefined]> {
  return runs
    .map((r): [string, number, number, boolean, number | undefined] => [r.key, r.n, r.attempt, r.redrive, r.token])
    .sort((x, y) => x[0].localeCompare(y[0]) || x[1] - y[1]);
}
