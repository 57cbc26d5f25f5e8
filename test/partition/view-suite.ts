// The partitioned SQL view tests, run on each backend by view-sqlite.test.ts and view-postgres.test.ts:
// a view with partitions equals the same view built unpartitioned (the customer rows that events of
// several partitions update included), exactly once across a stop and a start, waitFor waiting for
// every partition, rebuilds, and partition count changes.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { CheckpointInfo } from '../../src/core/checkpoint.js';
import type { Recorded } from '../../src/core/event.js';
import type { EventStore } from '../../src/core/store.js';
import { partitionOf } from '../../src/subscription/partition/naming.js';
import { waitUntil } from '../../src/testing/wait.js';
import type { SqlViewHost } from '../../src/view/index.js';
import { appendSales, assertSameSales, failingFirstSave, salesRows, salesView, soldCount } from './view-fixture.js';
import type { SaleEvent, SalesOptions, SalesView } from './view-fixture.js';

/** One database of a backend: a node on it (a backend; call again for another node), and its SQL. */
export interface ViewWorld {
  host: SqlViewHost<SaleEvent> & { readonly store: EventStore<SaleEvent> };
  /** Runs a SELECT on the database. */
  query(sql: string): Promise<Array<Record<string, unknown>>>;
  /** The checkpoint rows of the database. */
  checkpoints(): Promise<CheckpointInfo[]>;
}

export function partitionedViewSuite(backendName: string, open: (cleanup: (fn: () => unknown) => void) => Promise<ViewWorld>): void {
  const cleanups: Array<() => unknown> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  const world = (): Promise<ViewWorld> => open((fn) => cleanups.push(fn));
  const started = async (view: SalesView): Promise<SalesView> => {
    cleanups.push(() => view.stop());
    await view.start();
    return view;
  };
  const view = (w: ViewWorld, options: SalesOptions): SalesView => salesView(w.host, options);
  const rows = (w: ViewWorld, v: SalesView, prefix: string) => salesRows(v, prefix, (sql) => w.query(sql));
  const laneRows = async (w: ViewWorld, name: string): Promise<CheckpointInfo[]> =>
    (await w.checkpoints()).filter((row) => row.name === name || row.name.startsWith(`${name}#`));

  describe(`partitioned SQL view (${backendName})`, () => {
    it('with 4 partitions equals the same view built unpartitioned, the rows several partitions increment included', async () => {
      const w = await world();
      await appendSales(w.host.store, 40, 5);
      const plain = await started(view(w, { prefix: 'plain_' }));
      const split = await started(view(w, { prefix: 'split_', partitions: 4 }));
      let head = await w.host.store.headPosition();
      await plain.waitFor(head, { timeoutMs: 20_000 });
      await split.waitFor(head, { timeoutMs: 20_000 });
      assertSameSales(await rows(w, split, 'split_'), await rows(w, plain, 'plain_'), await soldCount(w.host.store));

      const status = await split.status();
      assert.equal(status.partitions?.length, 4);
      assert.ok(status.partitions?.every((partition) => partition.state === 'leading'));
      assert.equal(status.setupVersion, 1);
      const lanes = await laneRows(w, 'split_sales');
      assert.deepEqual(lanes.map((row) => row.name), ['split_sales#0/4', 'split_sales#1/4', 'split_sales#2/4', 'split_sales#3/4']);
      // Every partition's checkpoint passed the other partitions' events too.
      for (const lane of lanes) assert.ok(lane.position >= head - 1, `${lane.name} at ${lane.position}, head ${head}`);

      // More while both run.
      head = await appendSales(w.host.store, 30, 3, 20);
      await plain.waitFor(head, { timeoutMs: 20_000 });
      await split.waitFor(head, { timeoutMs: 20_000 });
      assertSameSales(await rows(w, split, 'split_'), await rows(w, plain, 'plain_'), await soldCount(w.host.store));
    });

    it('applies every event exactly once across a stop and a start in the middle of a stream of appends', async () => {
      const w = await world();
      await appendSales(w.host.store, 20, 2);
      const plain = await started(view(w, { prefix: 'plain_' }));
      let split = await started(view(w, { prefix: 'split_', partitions: 4 }));
      let writing = true;
      const writer = (async () => {
        for (let round = 0; writing || round < 10; round++) {
          await appendSales(w.host.store, 10, 1, round * 3);
          // SQLite's appends settle in microtasks: let timers (and the view) run between rounds.
          await new Promise((resolve) => setTimeout(resolve, 2));
        }
      })();
      await new Promise((resolve) => setTimeout(resolve, 150));
      await split.stop();
      await new Promise((resolve) => setTimeout(resolve, 50));
      split = await started(view(w, { prefix: 'split_', partitions: 4 }));
      await new Promise((resolve) => setTimeout(resolve, 150));
      writing = false;
      await writer;
      const head = await w.host.store.headPosition();
      await plain.waitFor(head, { timeoutMs: 20_000 });
      await split.waitFor(head, { timeoutMs: 20_000 });
      assertSameSales(await rows(w, split, 'split_'), await rows(w, plain, 'plain_'), await soldCount(w.host.store));
      assert.equal((await laneRows(w, 'split_sales')).length, 4, 'a checkpoint per partition');
    });

    it('waitFor resolves once EVERY partition passed the position, also in an instance that does not run the view', async () => {
      const w = await world();
      // A stream of partition 2 whose events fail while `stuck` (retried, never dead-lettered).
      const stuckStream = Array.from({ length: 100 }, (_, n) => `stuck-${n}`).find((stream) => partitionOf(stream, 4) === 2) as string;
      let stuck = true;
      const before = (event: Recorded<SaleEvent>): void => {
        if (stuck && event.streamId === stuckStream) throw new Error('not yet');
      };
      const split = await started(view(w, { prefix: 'split_', partitions: 4, before, retry: { maxAttempts: 10_000, initialDelayMs: 5, maxDelayMs: 10 } }));
      const reader = view(w, { prefix: 'split_', partitions: 4 });
      // Partition 2 is stuck on its first event: it never commits, while the others commit theirs.
      const { position: stuckAt } = await w.host.store.append(stuckStream, [{ type: 'Sold', data: { customer: 'c-1', amount: 5 } }]);
      const after = await appendSales(w.host.store, 12, 1, 100);
      await waitUntil(async () => (await laneRows(w, 'split_sales')).filter((lane) => lane.position >= after).length === 3, {
        timeoutMs: 20_000,
        message: 'the other partitions to pass the stuck position',
      });
      await assert.rejects(split.waitFor(stuckAt, { timeoutMs: 300 }), { code: 'ESKIT_TIMEOUT' });
      await assert.rejects(split.waitFor(after, { timeoutMs: 300 }), { code: 'ESKIT_TIMEOUT' });
      await assert.rejects(reader.waitFor(after, { timeoutMs: 300 }), { code: 'ESKIT_TIMEOUT' });
      const behind = (await laneRows(w, 'split_sales')).find((lane) => lane.name === 'split_sales#2/4');
      assert.ok(behind === undefined || behind.position < stuckAt, 'the stuck partition is behind');
      stuck = false;
      await split.waitFor(after, { timeoutMs: 20_000 });
      await reader.waitFor(after, { timeoutMs: 20_000 });
      for (const lane of await laneRows(w, 'split_sales')) assert.ok(lane.position >= stuckAt, `${lane.name} at ${lane.position}`);
      const order = (await rows(w, split, 'split_')).orders.find((row) => row.stream === stuckStream);
      assert.equal(order?.amount, 5);
      // An append of other types only resolves at once.
      const { position: noted } = await w.host.store.append('notes', [{ type: 'Noted', data: { note: 'x' } }]);
      await reader.waitFor(noted, { timeoutMs: 2_000 });
    });

    it('partitions: 1: waitFor in an instance that does not run the view reads the partition\'s checkpoint, not the plain one', async () => {
      const w = await world();
      await appendSales(w.host.store, 10, 2);
      const one = await started(view(w, { prefix: 'split_', partitions: 1 }));
      const reader = view(w, { prefix: 'split_', partitions: 1 });
      const head = await w.host.store.headPosition();
      await one.waitFor(head, { timeoutMs: 20_000 });
      // It read `split_sales`, which partitions: 1 never writes (its lane is `split_sales#0/1`), and timed out.
      await reader.waitFor(head, { timeoutMs: 5_000 });
    });

    it('rebuilds a partitioned view: every checkpoint of the view goes to the swap position, and the view carries on', async () => {
      const w = await world();
      await appendSales(w.host.store, 30, 3);
      const plain = await started(view(w, { prefix: 'plain_' }));
      // Ran with 2 partitions once: those checkpoints must not confuse a later start.
      const two = await started(view(w, { prefix: 'split_', partitions: 2 }));
      await two.waitFor(await w.host.store.headPosition(), { timeoutMs: 20_000 });
      await two.stop();
      await appendSales(w.host.store, 10, 1, 30);
      const split = await started(view(w, { prefix: 'split_', partitions: 4 }));
      await split.waitFor(await w.host.store.headPosition(), { timeoutMs: 20_000 });
      const result = await split.rebuild({ batchSize: 37 });
      assert.equal(result.generation, 1);
      const lanes = await laneRows(w, 'split_sales');
      assert.deepEqual(
        lanes.map((row) => row.name),
        ['split_sales#0/2', 'split_sales#0/4', 'split_sales#1/2', 'split_sales#1/4', 'split_sales#2/4', 'split_sales#3/4'],
      );
      for (const lane of lanes) assert.equal(lane.position, result.position, `${lane.name} at the swap position`);
      await plain.waitFor(result.position, { timeoutMs: 20_000 });
      assertSameSales(await rows(w, split, 'split_'), await rows(w, plain, 'plain_'), await soldCount(w.host.store));

      // The running partitions carry on against the new tables.
      let head = await appendSales(w.host.store, 25, 2, 5);
      await plain.waitFor(head, { timeoutMs: 20_000 });
      await split.waitFor(head, { timeoutMs: 20_000 });
      assertSameSales(await rows(w, split, 'split_'), await rows(w, plain, 'plain_'), await soldCount(w.host.store));

      // A later start with 2 partitions again takes over exactly where the 4 got.
      await split.stop();
      head = await appendSales(w.host.store, 9, 2, 50);
      const again = await started(view(w, { prefix: 'split_', partitions: 2 }));
      await plain.waitFor(head, { timeoutMs: 20_000 });
      await again.waitFor(head, { timeoutMs: 20_000 });
      assertSameSales(await rows(w, again, 'split_'), await rows(w, plain, 'plain_'), await soldCount(w.host.store));
    });

    it('a changed partition count carries on exactly once, from partitions left at different positions too', async () => {
      const w = await world();
      await appendSales(w.host.store, 20, 3);
      const plain = await started(view(w, { prefix: 'plain_' }));
      // Unpartitioned first.
      const one = await started(view(w, { prefix: 'split_' }));
      await one.waitFor(await w.host.store.headPosition(), { timeoutMs: 20_000 });
      await one.stop();
      // Then 4 partitions, one of which fails for good on an event (no dead letters): the others
      // stop wherever they got, so the 4 checkpoints differ.
      await appendSales(w.host.store, 20, 1, 20);
      const failing = Array.from({ length: 100 }, (_, n) => `failing-${n}`).find((stream) => partitionOf(stream, 4) === 1) as string;
      await w.host.store.append(failing, [{ type: 'Sold', data: { customer: 'c-3', amount: 7 } }]);
      await appendSales(w.host.store, 20, 2, 40);
      const four = view(w, {
        prefix: 'split_',
        partitions: 4,
        before: (event) => {
          if (event.streamId === failing) throw new Error('fails for good');
        },
      });
      cleanups.push(() => four.stop());
      await four.start();
      await assert.rejects(four.done, /fails for good|ESKIT_HANDLER_FAILED/);
      const positions = (await laneRows(w, 'split_sales')).filter((row) => row.name.endsWith('/4')).map((row) => row.position);
      assert.equal(positions.length, 4);
      assert.ok(new Set(positions).size > 1, `the partitions stopped at different positions: ${positions.join(', ')}`);

      // 3 partitions take over: nothing lost, nothing applied twice.
      let head = await appendSales(w.host.store, 10, 1, 60);
      const three = await started(view(w, { prefix: 'split_', partitions: 3 }));
      await plain.waitFor(head, { timeoutMs: 20_000 });
      await three.waitFor(head, { timeoutMs: 20_000 });
      assertSameSales(await rows(w, three, 'split_'), await rows(w, plain, 'plain_'), await soldCount(w.host.store));

      // And back to unpartitioned.
      await three.stop();
      head = await appendSales(w.host.store, 10, 1, 70);
      const back = await started(view(w, { prefix: 'split_' }));
      await plain.waitFor(head, { timeoutMs: 20_000 });
      await back.waitFor(head, { timeoutMs: 20_000 });
      assertSameSales(await rows(w, back, 'split_'), await rows(w, plain, 'plain_'), await soldCount(w.host.store));
    });

    it('partitions: 1 is a count of its own: none, 1, none, 1, 4, 1 and none again carry on exactly once', async () => {
      const w = await world();
      const plain = await started(view(w, { prefix: 'plain_' }));
      let from = 0;
      for (const partitions of [undefined, 1, undefined, 1, 4, 1, undefined]) {
        const head = await appendSales(w.host.store, 10, 2, from);
        from += 10;
        const split = await started(view(w, { prefix: 'split_', partitions }));
        await plain.waitFor(head, { timeoutMs: 20_000 });
        await split.waitFor(head, { timeoutMs: 20_000 });
        const step = `after ${from / 10} starts, with ${String(partitions ?? 'no')} partitions`;
        await assert.doesNotReject(async () => assertSameSales(await rows(w, split, 'split_'), await rows(w, plain, 'plain_'), await soldCount(w.host.store)), step);
        await split.stop();
      }
    });

    const cutShort = [
      [2, 'the same count', true],
      [3, 'another count', false],
      [undefined, 'no partitions', true],
      [4, 'the count before', false],
    ] as const;
    for (const [then, label, former] of cutShort) {
      const unseeded = former ? 'the other left behind by a former run with 2' : 'the other without a checkpoint';
      it(`a count change cut short (4 to 2, one new lane seeded, ${unseeded}) is completed, then ${label} carries on exactly once`, async () => {
        const w = await world();
        await appendSales(w.host.store, 20, 2);
        const plain = await started(view(w, { prefix: 'plain_' }));
        if (former) {
          const two = await started(view(w, { prefix: 'split_', partitions: 2 }));
          await two.waitFor(await w.host.store.headPosition(), { timeoutMs: 20_000 });
          await two.stop();
          await appendSales(w.host.store, 10, 1, 50);
        }
        const four = await started(view(w, { prefix: 'split_', partitions: 4 }));
        await four.waitFor(await w.host.store.headPosition(), { timeoutMs: 20_000 });
        await four.stop();

        // 2 partitions: the old lanes catch up, then saving the second new lane fails (a crash there).
        let head = await appendSales(w.host.store, 10, 2, 20);
        const cut = salesView(failingFirstSave(w.host, 'split_sales#1/2'), { prefix: 'split_', partitions: 2 });
        cleanups.push(() => cut.stop());
        await assert.rejects(cut.start(), /injected/);
        const lanes = await laneRows(w, 'split_sales');
        const at = (name: string): number | undefined => lanes.find((row) => row.name === name)?.position;
        assert.ok((at('split_sales#0/2') ?? 0) > (at('split_sales#1/2') ?? 0), `half seeded: ${lanes.map((row) => `${row.name}@${row.position}`).join(', ')}`);

        head = await appendSales(w.host.store, 10, 1, 30);
        const next = await started(view(w, { prefix: 'split_', partitions: then }));
        await plain.waitFor(head, { timeoutMs: 20_000 });
        await next.waitFor(head, { timeoutMs: 20_000 });
        assertSameSales(await rows(w, next, 'split_'), await rows(w, plain, 'plain_'), await soldCount(w.host.store));

        // And on from there.
        await next.stop();
        head = await appendSales(w.host.store, 10, 1, 40);
        const last = await started(view(w, { prefix: 'split_', partitions: 3 }));
        await plain.waitFor(head, { timeoutMs: 20_000 });
        await last.waitFor(head, { timeoutMs: 20_000 });
        assertSameSales(await rows(w, last, 'split_'), await rows(w, plain, 'plain_'), await soldCount(w.host.store));
      });
    }
  });
}
