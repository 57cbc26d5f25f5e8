import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import { PostgresCheckpointStore, PostgresDeadLetterStore, PostgresEventStore } from '../../src/postgres/index.js';
import { Subscription } from '../../src/subscription/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { connectTestPool, createTestSchema } from '../support/postgres.js';
import { capturingLogger } from './lock-helpers.js';

let cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  const pending = cleanups.reverse();
  cleanups = [];
  for (const cleanup of pending) await cleanup();
});

type Outcome = { failed: unknown } | { stopped: true };

/** How the subscription's run ended, once it has: its error, or that it stopped cleanly. */
function outcomeOf(subscription: Subscription): () => Outcome | undefined {
  let outcome: Outcome | undefined;
  // whenStopped() reads the head for its status, which a closed store refuses: either way the run is over.
  void subscription.whenStopped().then(
    (status) => (outcome = status.error === undefined ? { stopped: true } : { failed: status.error }),
    (error: unknown) => (outcome = { failed: error }),
  );
  return () => outcome;
}

describe('PostgreSQL stores sharing a closed event store', () => {
  it('a subscription started after the event store closed fails with ESKIT_STORE_CLOSED, although its checkpoint store had run queries', async () => {
    const schema = await createTestSchema({ create: false });
    cleanups.push(() => schema.drop());
    const logger = capturingLogger();
    const store = new PostgresEventStore({ connectionString: schema.connectionString, schema: schema.name, logger });
    cleanups.push(() => store.close());
    const checkpoints = new PostgresCheckpointStore({ store });
    await store.append('s', [{ type: 'Noted', data: { n: 1 } }]);

    const seen: number[] = [];
    const first = new Subscription({ name: 'first', store, checkpoints, logger, handler: (event) => void seen.push(event.position) });
    await first.start();
    await waitUntil(async () => (await checkpoints.load('first')) === 1, { message: 'the first subscription to save its checkpoint' });
    await first.stop();
    assert.deepEqual(seen, [1]);

    await store.close();
    const second = new Subscription({ name: 'second', store, checkpoints, logger, handler: () => undefined });
    cleanups.push(() => second.stop());
    await second.start();
    const outcome = await waitUntil(outcomeOf(second), { message: 'the second subscription to fail', timeoutMs: 5_000 });
    assert.ok('failed' in outcome, 'it must fail, not stop cleanly');
    assert.ok(isEskitError(outcome.failed, ErrorCode.StoreClosed), `expected ESKIT_STORE_CLOSED, got ${String(outcome.failed)}`);
    assert.deepEqual(
      logger.lines.filter((line) => /retrying/.test(line.message)).map((line) => line.message),
      [],
      'a closed store is not worth a retry',
    );
  });

  it('every call of a store created with { store } fails with ESKIT_STORE_CLOSED once the event store is closed', async () => {
    const schema = await createTestSchema({ create: false });
    cleanups.push(() => schema.drop());
    const store = new PostgresEventStore({ connectionString: schema.connectionString, schema: schema.name, logger: capturingLogger() });
    cleanups.push(() => store.close());
    const checkpoints = new PostgresCheckpointStore({ store });
    const deadLetters = new PostgresDeadLetterStore({ store });
    await checkpoints.save('a', 1);
    assert.deepEqual(await deadLetters.list(), []);
    await store.close();
    const closed = (error: unknown): boolean => isEskitError(error, ErrorCode.StoreClosed);
    await assert.rejects(checkpoints.load('a'), closed);
    await assert.rejects(checkpoints.save('a', 2), closed);
    await assert.rejects(checkpoints.claim('a', 1), closed);
    await assert.rejects(checkpoints.list(), closed);
    await assert.rejects(deadLetters.list(), closed);
  });

  it('a pool of yours that you ended gives ESKIT_STORE_CLOSED, not a driver error that looks transient', async () => {
    const schema = await createTestSchema({ create: false });
    cleanups.push(() => schema.drop());
    const pool = await connectTestPool(2);
    const store = new PostgresEventStore({ pool, schema: schema.name, logger: capturingLogger() });
    cleanups.push(() => store.close());
    const checkpoints = new PostgresCheckpointStore({ pool, schema: schema.name });
    await store.append('s', [{ type: 'Noted', data: { n: 1 } }]);
    await checkpoints.save('a', 1);
    await pool.end();
    const closed = (error: unknown): boolean => isEskitError(error, ErrorCode.StoreClosed) && /pool/.test((error as Error).message);
    await assert.rejects(checkpoints.load('a'), closed);
    await assert.rejects(store.headPosition(), closed);
    await assert.rejects(store.append('s', [{ type: 'Noted', data: { n: 2 } }]), closed);
  });
});
