// Start-up order of partitioned runners: the membership check comes before anything is written, and
// a stop() during a SQL view's start wins over the start.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { silentLogger } from '../../src/core/logger.js';
import { memory } from '../../src/memory/index.js';
import { sqlite } from '../../src/sqlite/index.js';
import { Subscription } from '../../src/subscription/subscription.js';
import { removeDatabase, tempDatabasePath } from '../sqlite/helpers.js';
import { appendSales, salesView } from './view-fixture.js';
import type { SaleEvent } from './view-fixture.js';

test('a node started with another count than a live node is refused before it writes any checkpoint', async () => {
  const backend = memory({ leaderElection: true });
  await backend.store.append('s', [{ type: 'Happened', data: {} }]);
  // A node of the old count (4) is alive but holds no partition now (its lock connection dropped, say).
  for (let partition = 0; partition < 4; partition++) await backend.checkpoints.save(`mixed#${partition}/4`, 1);
  const members = backend.members as NonNullable<typeof backend.members>;
  await members.heartbeat('mixed', { id: 'old-node', partitions: 4, ttlMs: 60_000 });
  const subscription = new Subscription({ backend, name: 'mixed', partitions: 8, rebalanceIntervalMs: 50, logger: silentLogger, handler: () => undefined });
  await subscription.start();
  await assert.rejects(subscription.done, (error: Error & { code?: string }) => error.code === 'ESKIT_PARTITION_COUNT');
  const names = (await backend.checkpoints.list()).map((checkpoint) => checkpoint.name);
  assert.deepEqual(names.filter((name) => name.endsWith('/8')), [], 'no checkpoint of the refused count was written');
  await backend.close();
});

test("a SQL view stopped while its start settles a count change does not start its partitions afterwards", async () => {
  const path = tempDatabasePath('start-stop-view');
  const backend = sqlite<SaleEvent>({ path });
  try {
    await appendSales(backend.store, 8, 3);
    const four = salesView(backend, { partitions: 4 });
    await four.start();
    await four.waitFor(await backend.store.headPosition());
    await four.stop();
    const two = salesView(backend, { partitions: 2 });
    const starting = two.start();
    await two.stop();
    await starting;
    const status = await two.status();
    assert.ok(status.state !== 'leading' && status.state !== 'standby', `the view runs after stop(): ${status.state}`);
  } finally {
    await backend.close();
    removeDatabase(path);
  }
});
