// A connection cut while eskit holds a client from the pool (the socket resets, no answer) must fail the
// call in hand, never end the process: an unheard 'error' event of a checked-out pg client would.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { PostgresCompletionStore, PostgresEventStore } from '../../src/postgres/index.js';
import { blackHoleProxy } from '../support/blackhole.js';
import { createTestSchema } from '../support/postgres.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe('a connection cut while a pooled client is checked out', () => {
  it('inside a completion transaction: the transaction fails, the process lives on', async () => {
    const schema = await createTestSchema({ create: false });
    cleanups.push(() => schema.drop());
    const proxy = await blackHoleProxy();
    cleanups.push(() => proxy.close());
    const store = new PostgresEventStore({ connectionString: proxy.connectionString, schema: schema.name });
    cleanups.push(() => store.close().catch(() => undefined));
    await store.migrate();
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
