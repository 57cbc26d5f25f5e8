import assert from 'node:assert/strict';
import { test } from 'node:test';
import { memory } from '../../src/memory/index.js';
import { Subscription } from '../../src/subscription/subscription.js';
import type { Recorded } from '../../src/core/event.js';
import type { CheckpointStore } from '../../src/core/checkpoint.js';
import { silentLogger } from '../../src/core/logger.js';
import { partitionOf } from '../../src/subscription/partition/naming.js';
import { waitUntil } from '../../src/testing/wait.js';

type Ev = { type: 'Happened'; data: { n: number; customer: string } };

async function seed(backend: ReturnType<typeof memory<Ev>>, streams: number, perStream: number): Promise<number> {
  let count = 0;
  for (let round = 0; round < perStream; round++) {
    for (let stream = 0; stream < streams; stream++) {
      await backend.store.append(`s-${stream}`, [{ type: 'Happened', data: { n: round, customer: `c-${stream % 3}` } }]);
      count += 1;
    }
  }
  return count;
}

/** Every event once, and each stream's events in their order. */
function checkOnceInOrder(seen: readonly Recorded<Ev>[], total: number): void {
  assert.equal(new Set(seen.map((event) => event.position)).size, seen.length, 'an event was handled twice');
  assert.equal(seen.length, total);
  const last = new Map<string, number>();
  for (const event of seen) {
    assert.ok((last.get(event.streamId) ?? 0) < event.position, `stream ${event.streamId} out of order at ${event.position}`);
    last.set(event.streamId, event.position);
  }
}

test('without leader election, one node runs every partition, each event once, in order per stream', async () => {
  const backend = memory<Ev>();
  const total = await seed(backend, 20, 10);
  const seen: Recorded<Ev>[] = [];
  const partitionsOf = new Map<number, Set<number>>();
  const subscription = new Subscription<Ev>({
    backend,
    name: 'orders',
    partitions: 4,
    logger: silentLogger,
    handler: (event, context) => {
      seen.push(event);
      const partition = Number(/#(\d+)\//.exec(context.subscription)?.[1]);
      assert.equal(partition, partitionOf(event.streamId, 4), 'an event reached a partition other than its own');
      let set = partitionsOf.get(partition);
      if (!set) partitionsOf.set(partition, (set = new Set()));
      set.add(event.position);
    },
  });
  await subscription.start();
  await waitUntil(() => seen.length === total, { message: 'every event handled' });
  checkOnceInOrder(seen, total);
  assert.equal(partitionsOf.size, 4);
  const status = await subscription.status();
  assert.equal(status.state, 'leading');
  assert.equal(status.partitions?.length, 4);
  assert.ok(status.partitions?.every((partition) => partition.state === 'leading'));
  await subscription.stop();
  const names = (await backend.checkpoints.list()).map((checkpoint) => checkpoint.name).sort();
  assert.deepEqual(names, ['orders#0/4', 'orders#1/4', 'orders#2/4', 'orders#3/4']);
  // Caught up: every partition's checkpoint passed the other partitions' events too.
  for (const checkpoint of await backend.checkpoints.list()) assert.equal(checkpoint.position, total);
  await backend.close();
});

test('partitionKey picks the partition; events of one key are handled in order', async () => {
  const backend = memory<Ev>();
  const total = await seed(backend, 12, 5);
  const seen: Array<{ partition: number; event: Recorded<Ev> }> = [];
  const subscription = new Subscription<Ev>({
    backend,
    name: 'by-customer',
    partitions: 8,
    partitionKey: (event) => event.data.customer,
    logger: silentLogger,
    handler: (event, context) => {
      seen.push({ partition: Number(/#(\d+)\//.exec(context.subscription)?.[1]), event });
    },
  });
  await subscription.start();
  await waitUntil(() => seen.length === total, { message: 'every event handled' });
  for (const { partition, event } of seen) assert.equal(partition, partitionOf(event.data.customer, 8));
  const last = new Map<string, number>();
  for (const { event } of seen) {
    assert.ok((last.get(event.data.customer) ?? 0) < event.position);
    last.set(event.data.customer, event.position);
  }
  await subscription.stop();
  await backend.close();
});

test('nodes share the partitions out, and take over at once when one stops', async () => {
  const backend = memory<Ev>({ leaderElection: true });
  const seen: Recorded<Ev>[] = [];
  const node = (): Subscription<Ev> =>
    new Subscription<Ev>({ backend, name: 'shared', partitions: 8, rebalanceIntervalMs: 50, logger: silentLogger, handler: (event) => void seen.push(event) });
  const leading = async (subscription: Subscription<Ev>): Promise<number> =>
    ((await subscription.status()).partitions ?? []).filter((partition) => partition.state === 'leading').length;
  const a = node();
  const b = node();
  await a.start();
  await waitUntil(async () => (await leading(a)) === 8, { message: 'the first node to hold all 8' });
  await b.start();
  await waitUntil(async () => (await leading(a)) === 4 && (await leading(b)) === 4, { message: '4 and 4' });
  const c = node();
  await c.start();
  // ceil(8 / 3) = 3: no node holds more than 3, so the counts are 3, 3, 2.
  await waitUntil(async () => {
    const counts = [await leading(a), await leading(b), await leading(c)].sort();
    return counts.join() === '2,3,3';
  }, { message: '3, 3 and 2' });
  const total = await seed(backend, 16, 4);
  await waitUntil(() => seen.length >= total, { message: 'every event handled' });
  await b.stop();
  await waitUntil(async () => (await leading(a)) + (await leading(c)) === 8, { message: 'a and c to hold all 8' });
  const more = await seed(backend, 16, 2);
  await waitUntil(() => seen.length >= total + more, { message: 'every event handled after the stop' });
  checkOnceInOrder(seen, total + more);
  await Promise.all([a.stop(), c.stop()]);
  await backend.close();
});

test('a partition count change starts every new partition at the lowest old checkpoint; refused while an old partition runs', async () => {
  const backend = memory<Ev>({ leaderElection: true });
  const total = await seed(backend, 10, 3);
  const seen: Recorded<Ev>[] = [];
  const make = (partitions: number | undefined): Subscription<Ev> =>
    new Subscription<Ev>({ backend, name: 'change', partitions, rebalanceIntervalMs: 50, logger: silentLogger, handler: (event) => void seen.push(event) });
  const before = make(undefined);
  await before.start();
  await waitUntil(() => seen.length === total);
  await before.stop();
  const four = make(4);
  await four.start();
  const more = await seed(backend, 10, 1);
  await waitUntil(() => seen.length === total + more, { message: 'the new events handled once' });
  checkOnceInOrder(seen, total + more);
  const eight = make(8);
  await eight.start();
  await assert.rejects(eight.done, (error: Error & { code?: string }) => error.code === 'ESKIT_PARTITION_COUNT' && /Stop every node/.test(error.message));
  await four.stop();
  await backend.close();
});

test('a partition whose handler is stuck does not hold the others up, and catches up alone', async () => {
  const backend = memory<Ev>();
  const total = await seed(backend, 40, 30);
  const stuckPartition = partitionOf('s-0', 4);
  let release: () => void = () => undefined;
  const stuck = new Promise<void>((resolve) => (release = resolve));
  const seen: Recorded<Ev>[] = [];
  const subscription = new Subscription<Ev>({
    backend,
    name: 'laggard',
    partitions: 4,
    batchSize: 50,
    logger: silentLogger,
    handler: async (event) => {
      if (partitionOf(event.streamId, 4) === stuckPartition) await stuck;
      seen.push(event);
    },
  });
  await subscription.start();
  let expectedOthers = 0;
  for await (const event of backend.store.readAll({})) if (partitionOf(event.streamId, 4) !== stuckPartition) expectedOthers += 1;
  await waitUntil(() => seen.length === expectedOthers, { message: 'the other partitions to finish while one is stuck' });
  assert.ok(seen.every((event) => partitionOf(event.streamId, 4) !== stuckPartition));
  release();
  await waitUntil(() => seen.length === total, { message: 'the stuck partition to catch up' });
  checkOnceInOrder(seen, total);
  await subscription.stop();
  await backend.close();
});

test('re-partitioning from a layout where a partition never saved a checkpoint starts from the beginning (nothing lost)', async () => {
  const backend = memory<Ev>();
  const total = await seed(backend, 4, 2);
  // Two of four old partitions saved a checkpoint; the other two never ran.
  await backend.checkpoints.save('sparse#0/4', total);
  await backend.checkpoints.save('sparse#1/4', total);
  const seen: Recorded<Ev>[] = [];
  const subscription = new Subscription<Ev>({ backend, name: 'sparse', partitions: 2, logger: silentLogger, handler: (event) => void seen.push(event) });
  await subscription.start();
  await waitUntil(() => seen.length === total, { message: 'every event handled again' });
  await subscription.stop();
  await backend.close();
});

test('going back from partitions to none: the subscription resumes from the lowest partition checkpoint', async () => {
  const backend = memory<Ev>();
  const total = await seed(backend, 8, 3);
  const seen: Recorded<Ev>[] = [];
  const partitioned = new Subscription<Ev>({ backend, name: 'back', partitions: 4, logger: silentLogger, handler: (event) => void seen.push(event) });
  await partitioned.start();
  await waitUntil(() => seen.length === total);
  await partitioned.stop();
  const more = await seed(backend, 8, 1);
  const plain = new Subscription<Ev>({ backend, name: 'back', startFrom: 'end', logger: silentLogger, handler: (event) => void seen.push(event) });
  await plain.start();
  await waitUntil(() => seen.length === total + more, { message: 'the events appended after the partitioned run, not skipped by startFrom end' });
  checkOnceInOrder(seen, total + more);
  await plain.stop();
  await backend.close();
});

test('a partitionKey that returns no string fails the runner, naming the event (all such events in one partition would be quiet)', async () => {
  const backend = memory<Ev>();
  await seed(backend, 2, 1);
  const subscription = new Subscription<Ev>({
    backend,
    name: 'no-key',
    partitions: 4,
    logger: silentLogger,
    partitionKey: (event) => (event.data as unknown as Record<string, string>)['missing'] as string,
    handler: () => undefined,
  });
  await subscription.start();
  await assert.rejects(subscription.done, (error: Error) => /partitionKey/.test(error.message) && /position 1/.test(error.message) && /undefined, not a string/.test(error.message));
  await subscription.stop();
  await backend.close();
});

test('a partition saves its checkpoint for passing over the others\' events at most every few seconds, not at every append', async () => {
  const backend = memory<Ev>();
  const saves = new Map<string, number>();
  const checkpoints = backend.checkpoints;
  const counting: CheckpointStore = {
    load: (name) => checkpoints.load(name),
    claim: (name, token) => checkpoints.claim(name, token),
    list: () => checkpoints.list(),
    save: (name, position, options) => {
      saves.set(name, (saves.get(name) ?? 0) + 1);
      return checkpoints.save(name, position, options);
    },
  };
  const seen: Recorded<Ev>[] = [];
  const subscription = new Subscription<Ev>({
    store: backend.store,
    checkpoints: counting,
    name: 'quiet-saves',
    partitions: 4,
    logger: silentLogger,
    handler: (event) => void seen.push(event),
  });
  await subscription.start();
  const own = partitionOf('hot', 4);
  for (let n = 1; n <= 40; n++) {
    await backend.store.append('hot', [{ type: 'Happened', data: { n, customer: 'c' } }]);
    await waitUntil(() => seen.length === n);
  }
  await waitUntil(() => (saves.get(`quiet-saves#${own}/4`) ?? 0) >= 10, { message: 'the hot partition to save as it goes' });
  for (let partition = 0; partition < 4; partition++) {
    if (partition === own) continue;
    assert.ok((saves.get(`quiet-saves#${partition}/4`) ?? 0) <= 3, `partition ${partition} saved ${saves.get(`quiet-saves#${partition}/4`)} times for events it only passed over`);
  }
  await subscription.stop();
  // At stop, every partition's checkpoint is past everything.
  for (const checkpoint of await checkpoints.list()) assert.equal(checkpoint.position, 40);
  await backend.close();
});

test('a re-partition fences the old partitions: a stale owner of one cannot save its checkpoint afterwards', async () => {
  const backend = memory<Ev>({ leaderElection: true });
  const total = await seed(backend, 4, 2);
  const locks = backend.locks as NonNullable<typeof backend.locks>;
  // The old layout (2 partitions); the owner of #0/2 is about to freeze with its lease.
  const stale = await locks.acquire('fenced#0/2');
  await backend.checkpoints.claim('fenced#0/2', stale.fencingToken);
  await backend.checkpoints.save('fenced#0/2', 2, { fencingToken: stale.fencingToken });
  await backend.checkpoints.save('fenced#1/2', 3);
  locks.revoke('fenced#0/2');
  const seen: Recorded<Ev>[] = [];
  const subscription = new Subscription<Ev>({ backend, name: 'fenced', partitions: 4, rebalanceIntervalMs: 50, logger: silentLogger, handler: (event) => void seen.push(event) });
  await subscription.start();
  await waitUntil(() => seen.length === total - 2, { message: 'the events after the lowest old checkpoint' });
  await assert.rejects(backend.checkpoints.save('fenced#0/2', 8, { fencingToken: stale.fencingToken }), (error: Error & { code?: string }) => error.code === 'ESKIT_FENCED');
  await subscription.stop();
  await backend.close();
});

test('re-partitioning where an old partition never saved starts it where startFrom says, not from the beginning', async () => {
  const backend = memory<Ev>();
  const total = await seed(backend, 4, 4);
  await backend.checkpoints.save('after#0/2', total);
  const seen: Recorded<Ev>[] = [];
  const subscription = new Subscription<Ev>({ backend, name: 'after', partitions: 4, startFrom: { after: 10 }, logger: silentLogger, handler: (event) => void seen.push(event) });
  await subscription.start();
  await waitUntil(() => seen.length === total - 10, { message: 'the events after position 10' });
  assert.ok(seen.every((event) => event.position > 10), 'an event at or before startFrom was delivered');
  await subscription.stop();
  await backend.close();
});
