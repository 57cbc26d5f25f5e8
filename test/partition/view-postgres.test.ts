// Partitioned SQL views on PostgreSQL: the shared suite with leader election on (one node holding
// every partition), and two nodes (two backends, each with its own lock session and member row, in
// this process) sharing the partitions of one view, through a stop of one of them and a rebuild.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { silentLogger } from '../../src/core/logger.js';
import { postgres } from '../../src/postgres/index.js';
import type { PostgresBackend } from '../../src/postgres/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { createTestSchema } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';
import { appendSales, assertSameSales, salesRows, salesView, soldCount } from './view-fixture.js';
import type { SaleEvent, SalesView } from './view-fixture.js';
import { partitionedViewSuite } from './view-suite.js';

function node(schema: TestSchema): PostgresBackend<SaleEvent> {
  return postgres<SaleEvent>({ connectionString: schema.connectionString, schema: schema.name, logger: silentLogger });
}

partitionedViewSuite('postgres', async (cleanup) => {
  const schema = await createTestSchema({ create: false });
  cleanup(() => schema.drop());
  const backend = node(schema);
  cleanup(() => backend.close());
  return {
    host: backend,
    query: async (sql) => (await schema.pool.query(sql)).rows as Array<Record<string, unknown>>,
    checkpoints: () => backend.checkpoints.list(),
  };
});

describe('partitioned SQL view on two PostgreSQL nodes', () => {
  const cleanups: Array<() => unknown> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  const leading = async (view: SalesView): Promise<number> => ((await view.status()).partitions ?? []).filter((partition) => partition.state === 'leading').length;

  it('share the partitions, take over from a node that stops, and come out equal to one unpartitioned runner, through a rebuild', async () => {
    const schema = await createTestSchema({ create: false });
    cleanups.push(() => schema.drop());
    const [one, two] = [node(schema), node(schema)];
    cleanups.push(() => one.close(), () => two.close());
    const query = async (sql: string) => (await schema.pool.query(sql)).rows as Array<Record<string, unknown>>;
    await appendSales(one.store, 30, 3);

    const options = { prefix: 'split_', partitions: 4, rebalanceIntervalMs: 50 };
    const plain = salesView(one, { prefix: 'plain_' });
    const a = salesView(one, options);
    const b = salesView(two, options);
    cleanups.push(() => plain.stop(), () => a.stop(), () => b.stop());
    await plain.start();
    await a.start();
    await waitUntil(async () => (await leading(a)) === 4, { timeoutMs: 10_000, message: 'the first node to hold all 4' });
    await b.start();
    await waitUntil(async () => (await leading(a)) === 2 && (await leading(b)) === 2, { timeoutMs: 10_000, message: '2 and 2' });

    let writing = true;
    const writer = (async () => {
      for (let round = 0; writing || round < 10; round++) {
        await appendSales(one.store, 8, 1, round * 2);
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    })();
    await new Promise((resolve) => setTimeout(resolve, 300));
    // A rebuild from a third instance that runs nothing, while both nodes write.
    const rebuilt = await salesView(two, options).rebuild({ batchSize: 100 });
    assert.equal(rebuilt.generation, 1);
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.ok((await b.status()).handled > 0 && (await a.status()).handled > 0, 'both nodes applied events');
    await b.stop();
    await waitUntil(async () => (await leading(a)) === 4, { timeoutMs: 10_000, message: 'a to take the stopped node\'s partitions' });
    await new Promise((resolve) => setTimeout(resolve, 200));
    writing = false;
    await writer;

    const head = await one.store.headPosition();
    await plain.waitFor(head, { timeoutMs: 20_000 });
    await a.waitFor(head, { timeoutMs: 20_000 });
    // The stopped node's instance reads the checkpoints from the database.
    await b.waitFor(head, { timeoutMs: 20_000 });
    const status = await a.status();
    assert.ok(status.partitions?.every((partition) => partition.state === 'leading' && partition.fencingToken !== undefined));
    assertSameSales(await salesRows(a, 'split_', query), await salesRows(plain, 'plain_', query), await soldCount(one.store));
  });
});
