// A connection cut while eskit holds a client from the pool (the socket resets, no answer) must fail the
// call in hand, never end the process: an unheard 'error' event of a checked-out pg client would.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import { PostgresCompletionStore, PostgresEventStore } from '../../src/postgres/index.js';
import type { BlackHoleProxy } from '../support/blackhole.js';
import { blackHoleProxy } from '../support/blackhole.js';
import { createTestSchema } from '../support/postgres.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A store on a fresh schema, reached through a proxy the test can cut. */
async function storeBehindProxy(): Promise<{ store: PostgresEventStore; proxy: BlackHoleProxy }> {
  const schema = await createTestSchema({ create: false });
  cleanups.push(() => schema.drop());
  const proxy = await blackHoleProxy();
  cleanups.push(() => proxy.close());
  const store = new PostgresEventStore({ connectionString: proxy.connectionString, schema: schema.name });
  cleanups.push(() => store.close().catch(() => undefined));
  await store.migrate();
  return { store, proxy };
}

const note = (n: number) => ({ type: 'Noted', data: { n } });

describe('a connection cut while a pooled client is checked out', () => {
  it('under appends (the socket closes, no answer): they fail with ESKIT_CONNECTION, the process lives on', async () => {
    const { store, proxy } = await storeBehindProxy();
    await store.append('warm', [note(0)]);
    proxy.blackHole();
    // A lone append (the lock and its INSERT in one round trip) waits on a connection that answers
    // nothing; a burst queues behind it as the next group.
    const lone = store.append('a', [note(1)]);
    await new Promise((resolve) => setImmediate(resolve));
    const pending = Promise.allSettled([lone, store.append('b', [note(2)]), store.append('c', [note(3)])]);
    await proxy.close();
    for (const result of await pending) {
      assert.equal(result.status, 'rejected');
      assert.ok(isEskitError((result as PromiseRejectedResult).reason, ErrorCode.Connection), String((result as PromiseRejectedResult).reason));
    }
  });

  it('inside a completion transaction: the transaction fails, the process lives on', async () => {
    const { store, proxy } = await storeBehindProxy();
    const completions = new PostgresCompletionStore({ store });
    await completions.completedAfter('cut', 0);
    const outcome = completions.completeWithin('cut', { position: 1, itemId: 'a' }, async (client) => {
      proxy.blackHole();
      const statement = client.query('SELECT 1');
      await proxy.close();
      return statement;
    });
    await assert.rejects(outcome);
  });
});
