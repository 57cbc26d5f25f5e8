// Red team of the partitioned-runner core (issue 17): each test attacks one way the partition set,
// the shared reader, the layout check or the facades could lose, repeat or stall work. Each failed
// before the fix named in its comment.
import { test } from 'node:test';
import { memory } from '../../src/memory/index.js';
import { Subscription } from '../../src/subscription/subscription.js';
import type { Recorded } from '../../src/core/event.js';
import { silentLogger } from '../../src/core/logger.js';
import { waitUntil } from '../../src/testing/wait.js';

type Ev = { type: 'Happened'; data: { n: number; customer: string } };

async function leading(subscription: Subscription<Ev>): Promise<number> {
  return ((await subscription.status()).partitions ?? []).filter((partition) => partition.state === 'leading').length;
}

test('a node that joins when ceil(N / nodes) does not change still gets partitions (4 partitions, 3 nodes: 2, 1, 1)', async () => {
  // Before: every node's share was ceil(4 / 3) = 2; the two first nodes held 2 each, at their share,
  // so none let go, and the third node held nothing for good (and warned that it was short, forever).
  const backend = memory<Ev>({ leaderElection: true });
  const seen: Recorded<Ev>[] = [];
  const node = (): Subscription<Ev> =>
    new Subscription<Ev>({ backend, name: 'joiner', partitions: 4, rebalanceIntervalMs: 20, logger: silentLogger, handler: (event) => void seen.push(event) });
  const a = node();
  const b = node();
  await a.start();
  await b.start();
  await waitUntil(async () => (await leading(a)) === 2 && (await leading(b)) === 2, { message: '2 and 2' });
  const c = node();
  await c.start();
  await waitUntil(async () => (await leading(c)) >= 1, { timeoutMs: 2_000, message: 'the third node to own a partition within 2 s' });
  await waitUntil(async () => (await leading(a)) + (await leading(b)) + (await leading(c)) === 4, { message: 'all 4 held' });
  await Promise.all([a.stop(), b.stop(), c.stop()]);
  await backend.close();
});
