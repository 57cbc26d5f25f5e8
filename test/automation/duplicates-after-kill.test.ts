// Issue 13, item 4: how many side effects run twice when a busy leader is SIGKILLed, on PostgreSQL at
// ~300 events/s with concurrency 8 (fixtures/kill-count.ts). With the record window at 8, no more than
// 8 may run twice per kill (the window counts running items too); with the side effect in the
// transaction that records its completion (inTransaction), none may.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { countDuplicatesAfterKills } from './fixtures/kill-count.js';
import { createTestSchema } from '../support/postgres.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function twoKills(transactional: boolean): Promise<number[]> {
  const schema = await createTestSchema({ poolSize: 6 });
  cleanups.push(() => schema.drop());
  return countDuplicatesAfterKills({
    url: schema.connectionString,
    schema: schema.name,
    pool: schema.pool,
    kills: 2,
    rate: 300,
    busyFor: 150,
    transactional,
    recordWindow: 8,
    concurrency: 8,
  });
}

describe('Side effects run twice after a SIGKILL of a busy leader (PostgreSQL, ~300 events/s, concurrency 8)', { timeout: 120_000 }, () => {
  it('at most the record window (8) per kill', { timeout: 60_000 }, async () => {
    const twice = await twoKills(false);
    for (const count of twice) assert.ok(count <= 8, `${count} side effects ran twice after one kill (${twice.join(', ')})`);
  });

  it('none with the side effect in the transaction that records its completion (inTransaction)', { timeout: 60_000 }, async () => {
    assert.deepEqual(await twoKills(true), [0, 0]);
  });
});
