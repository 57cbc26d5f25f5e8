// A partitioned SQL view across real node processes on PostgreSQL (issue 17, item 8): three nodes run
// the sales view of view-fixture.ts with 8 partitions (fixtures/view-node.ts) while writers in this
// process append throughout to 60 order streams; one node is SIGKILLed, one is stopped gracefully, a
// new one joins. Once every partition's checkpoint passed the head, the view must hold exactly the
// rows that one unpartitioned runner builds from the same log, and that a plain replay of the log
// computes: the per-order rows and the per-customer totals that events of many partitions increment.
// That holds because of what the view is: every row is either keyed by the partition key (an order
// stream's row is written by its partition alone, in the stream's order, so it may overwrite) or
// updated only by commuting increments (a customer's total), and each partition commits its checkpoint
// in the transaction of its writes, so the killed node's uncommitted batch is rolled back and applied
// again by the next owner: counted once, never twice.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import { silentLogger } from '../../src/core/logger.js';
import { postgres } from '../../src/postgres/index.js';
import type { PostgresBackend } from '../../src/postgres/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { ChildNode, fixturePath, killAll } from '../support/processes.js';
import { createTestSchema } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';
import { owned, stopGracefully, waitSpread } from './fixtures/cluster.js';
import type { Node } from './fixtures/cluster.js';
import type { Line } from './fixtures/protocol.js';
import type { ViewNodeConfig } from './fixtures/view-node.js';
import { assertSameSales, salesRows, salesView, soldCount } from './view-fixture.js';
import type { SaleEvent, SalesRows, SalesView } from './view-fixture.js';

const VIEW_NODE = fixturePath('./fixtures/view-node.ts', import.meta.url);
const PARTITIONS = 8;
const STREAMS = 60;
const CUSTOMERS = 7;
const READY = { timeoutMs: 20_000 };
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const ms = (value: number): string => `${Math.round(value)} ms`;

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** The rows a replay of the log computes with the view's evolve, in plain maps. */
async function replay(backend: PostgresBackend<SaleEvent>): Promise<SalesRows> {
  const orders = new Map<string, SalesRows['orders'][number]>();
  const customers = new Map<string, SalesRows['customers'][number]>();
  for await (const event of backend.store.readAll({ types: ['Sold'] })) {
    if (event.type !== 'Sold') continue;
    const { customer, amount } = event.data;
    const order = orders.get(event.streamId) ?? { stream: event.streamId, customer, events: 0, amount: 0, last_amount: 0 };
    orders.set(event.streamId, { ...order, customer, events: order.events + 1, amount: order.amount + amount, last_amount: amount });
    const total = customers.get(customer) ?? { customer, total: 0, events: 0 };
    customers.set(customer, { customer, total: total.total + amount, events: total.events + 1 });
  }
  return sorted({ orders: [...orders.values()], customers: [...customers.values()] });
}

/** Rows in the order of a JS sort, whatever the database's collation. */
function sorted(rows: SalesRows): SalesRows {
  const by = <T>(list: T[], key: (row: T) => string): T[] => [...list].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
  return { orders: by(rows.orders, (row) => row.stream), customers: by(rows.customers, (row) => row.customer) };
}

describe('Partitioned SQL view across processes (PostgreSQL)', () => {
  it('8 partitions on 3 nodes, one SIGKILLed, one stopped, one started, under appends: equal row for row to the view built by one node, the per-customer totals included', { timeout: 90_000 }, async (t: TestContext) => {
    const started = performance.now();
    const schema: TestSchema = await createTestSchema({ create: false, poolSize: 6 });
    cleanups.push(() => schema.drop());
    // This process's node: the writers, the reads, and the unpartitioned view (no leader election).
    const backend = postgres<SaleEvent>({ pool: schema.pool, schema: schema.name, logger: silentLogger, leaderElection: false });
    cleanups.push(() => backend.close());
    await backend.migrate();
    const query = async (sql: string): Promise<Array<Record<string, unknown>>> => (await schema.pool.query(sql)).rows as Array<Record<string, unknown>>;

    const nodes: Node[] = [];
    cleanups.push(() => killAll(nodes));
    const start = (label: string): Node => {
      const config: ViewNodeConfig = {
        connectionString: schema.connectionString,
        schema: schema.name,
        node: label,
        prefix: 'split_',
        partitions: PARTITIONS,
        rebalanceIntervalMs: 100,
        sessionTimeoutMs: 1_500,
        lockPollMs: 50,
      };
      const node = new ChildNode<Line>(label, VIEW_NODE, [JSON.stringify(config)]);
      nodes.push(node);
      return node;
    };
    const outputs = (): string => nodes.map((node) => node.output()).join('\n');

    // Not started here: it reads the partitions' checkpoints (waitFor) and names the tables.
    const reader: SalesView = salesView(backend, { prefix: 'split_', partitions: PARTITIONS });
    const [n1, n2, n3] = [start('n1'), start('n2'), start('n3')];
    await Promise.all([n1, n2, n3].map((node) => node.waitFor((line) => line.ev === 'ready', 'ready', READY)));
    await waitSpread([n1, n2, n3], PARTITIONS, 3, 'the 8 partitions shared out');

    // Writers: one sale per append to a random order stream (its customer fixed by the stream, so a
    // customer's row gets the events of several streams, of several partitions), now and then with an
    // event the view does not take.
    let writing = true;
    let appends = 0;
    const writers = Array.from({ length: 3 }, async () => {
      while (writing) {
        const order = Math.floor(Math.random() * STREAMS);
        const events: SaleEvent[] = [{ type: 'Sold', data: { customer: `c-${order % CUSTOMERS}`, amount: 1 + Math.floor(Math.random() * 50) } }];
        if (appends++ % 5 === 0) events.push({ type: 'Noted', data: { note: 'not for the view' } });
        await backend.store.append(`order-${order}`, events);
        await sleep(5);
      }
    });
    cleanups.push(async () => {
      writing = false;
      await Promise.allSettled(writers);
    });
    const applied = async (): Promise<number> => {
      const rows = await query(`SELECT coalesce(sum(events), 0)::int AS n FROM ${reader.table('split_customers')}`);
      return Number(rows[0]?.n ?? 0);
    };
    const waitApplied = async (least: number, what: string): Promise<void> => {
      await waitUntil(async () => (await applied()) >= least, { timeoutMs: 15_000, intervalMs: 25, message: what }).catch((error: unknown) => {
        throw new Error(`${(error as Error).message}\n${outputs()}`);
      });
    };
    await waitApplied(150, '150 sales applied by the 3 nodes');

    // Killed inside a batch's transaction, after its rows were written and before its checkpoint was
    // saved: the server rolls the rows back with it, and the next owner applies the batch again.
    assert.ok(owned(n1).length > 0, 'n1 leads partitions when it is killed');
    n1.send('stall\n');
    const stalled = await n1.waitFor((line) => line.ev === 'stalled', 'a transaction of n1 stalled before its checkpoint', { timeoutMs: 15_000 });
    n1.kill('SIGKILL');
    await n1.exited;
    const killMove = await waitSpread([n2, n3], PARTITIONS, 4, 'the killed node\'s partitions taken over');
    await waitApplied((await applied()) + 100, '100 more sales applied after the kill');

    const n4 = start('n4');
    await n4.waitFor((line) => line.ev === 'ready', 'ready', READY);
    await waitSpread([n2, n3, n4], PARTITIONS, 3, 'the 8 partitions shared out with the new node');
    await waitApplied((await applied()) + 50, '50 more sales applied with the new node');

    // Stopped gracefully: it lets its batches commit and releases its partitions.
    n2.kill('SIGTERM');
    const stopMove = await waitSpread([n3, n4], PARTITIONS, 4, 'the stopped node\'s partitions taken over');
    await stopGracefully(n2, true);
    await waitApplied((await applied()) + 100, '100 more sales applied after the stop');

    writing = false;
    await Promise.all(writers);
    const head = await backend.store.headPosition();
    await reader.waitFor(head, { timeoutMs: 20_000 }).catch((error: unknown) => {
      throw new Error(`${(error as Error).message}\n${outputs()}`);
    });
    for (const node of nodes) assert.deepEqual(node.find((line) => line.ev === 'failed'), [], `${node.label} did not fail\n${node.output()}`);

    // The same view, unpartitioned, built by this process alone from the whole log.
    const plain = salesView(backend, { prefix: 'plain_' });
    cleanups.push(() => plain.stop());
    await plain.start();
    await plain.waitFor(head, { timeoutMs: 20_000 });

    const split = sorted(await salesRows(reader, 'split_', query));
    const one = sorted(await salesRows(plain, 'plain_', query));
    const sold = await soldCount(backend.store);
    // Row for row, and every sale counted once in both tables (a double count after the kill would show here).
    assertSameSales(split, one, sold);
    assert.deepEqual(one, await replay(backend), 'the unpartitioned view is what a replay of the log computes');
    assert.equal(split.orders.length, STREAMS, 'a row per order stream');
    assert.equal(split.customers.length, CUSTOMERS, 'a row per customer');

    const lanes = (await backend.checkpoints.list()).filter((row) => row.name.startsWith('split_sales#'));
    assert.equal(lanes.length, PARTITIONS, 'a checkpoint per partition');
    for (const lane of lanes) assert.ok(lane.position >= head - 1, `${lane.name} at ${lane.position}, head ${head}`);
    t.diagnostic(
      `n1 killed with ${String(stalled.checkpoint)} up to ${String(stalled.position)} written, not committed; ${head} positions, ${sold} sales over ${split.orders.length} orders and ${split.customers.length} customers; ` +
        `partitions moved after SIGKILL in ${ms(killMove)}, after SIGTERM in ${ms(stopMove)}; ${ms(performance.now() - started)} in all`,
    );
  });
});
