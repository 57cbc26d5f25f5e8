// A node's locks share ONE connection (the PostgreSQL lock registry), so a dropped lock connection
// ends every partition lease of that node at once (issue 17, item 7). Real node processes
// (fixtures/partition-node.ts) run a partitioned subscription with fenced side effects while writers
// append; the test terminates one node's lock session from the server side and judges from the nodes'
// JSON lines and the downstream rows: the node loses all its partitions together, gets its share back,
// no stale write lands, and the other nodes go on handling their partitions meanwhile.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import { waitUntil } from '../../src/testing/wait.js';
import { check, Cluster, lostLeases, owned, waitSpread } from './fixtures/cluster.js';
import type { Node } from './fixtures/cluster.js';

const TEST_TIMEOUT = 60_000;

let cluster: Cluster | undefined;
afterEach(async () => {
  await cluster?.close();
  cluster = undefined;
});

describe('A dropped lock connection with partitions (PostgreSQL)', () => {
  it('pg_terminate_backend of one node\'s lock session: it loses every partition at once and takes its share back; no stale write lands; the others do not stall', { timeout: TEST_TIMEOUT }, async (t: TestContext) => {
    const db = (cluster = await Cluster.create({ kind: 'subscription', name: 'cut', partitions: 12, rebalanceIntervalMs: 100, sessionTimeoutMs: 1_500, lockPollMs: 50, delayMs: 1 }));
    const nodes = ['n1', 'n2', 'n3'].map((label) => db.start(label));
    await Promise.all(nodes.map((node) => node.waitFor((line) => line.ev === 'ready', 'ready', { timeoutMs: 20_000 })));
    const [n1, n2, n3] = nodes as [Node, Node, Node];
    await waitSpread(nodes, 12, 4, '4 partitions each');
    db.startWriting(120, 3, 5);
    await db.waitCount(50, 'n2 handled 50 events', 'node = $1', ['n2']);

    const held = owned(n2);
    const tokens = new Map(held.map((partition) => [partition, n2.find((l) => l.ev === 'leading' && l.partition === partition).pop()?.token as number]));
    const from = n2.lines.length;
    const pid = await db.lockPid('n2');
    const cutAt = await db.terminate(pid);

    // Every lease it held ends at once: they all lived on that one session.
    const lost = await Promise.all(
      held.map((partition) => n2.waitFor((l) => l.ev === 'lease-lost' && l.partition === partition && l.token === tokens.get(partition), `lease ${partition} lost`, { from })),
    );
    const spread = Math.max(...lost.map((l) => l.t)) - Math.min(...lost.map((l) => l.t));
    assert.ok(spread < 100, `the ${held.length} leases ended together (within ${Math.round(spread)} ms)`);
    assert.equal(n2.find((l) => l.ev === 'released', from).length, 0, 'nothing was released: the leases were lost');
    // Once the last of them was lost it held nothing of the cut session. (Not necessarily nothing at all:
    // the losses may spread over a few ms, and a lane may take a partition back on the new session
    // before the last one is heard.)
    const lastLost = Math.max(...lost.map((l) => l.t));
    // Its report of what it owns after them may come a moment after the last loss line.
    const afterLoss = await waitUntil(() => n2.find((l) => l.ev === 'owned' && l.t >= lastLost, from)[0], {
      timeoutMs: 10_000,
      message: 'n2 reporting what it owns after the losses',
    });
    const cutTokens = Math.max(...tokens.values());
    assert.ok(afterLoss && (afterLoss.tokens as number[]).every((token) => token > cutTokens), `after the losses it still held a lease of the cut session: ${JSON.stringify(afterLoss)}`);

    // It takes its share back on a new lock connection, with new tokens, and the three are even again.
    const again = await waitUntil(() => n2.find((l) => l.ev === 'owned' && (l.partitions as number[]).length === 4, from)[0], {
      timeoutMs: 10_000,
      message: 'n2 holding 4 partitions again',
    });
    const back = again.t - Math.min(...lost.map((l) => l.t));
    await waitSpread(nodes, 12, 4, '4 partitions each again');
    const regained = n2.find((l) => l.ev === 'leading', from);
    assert.ok(regained.length >= 4 && regained.every((l) => (l.token as number) > Math.max(...tokens.values())), 'new leases, with newer tokens');
    assert.notEqual(await db.lockPid('n2'), pid, 'on a new lock connection');

    // The others never lost a lease, and went on: each writes within a moment of the cut and keeps going.
    for (const node of [n1, n3]) assert.equal(node.find((l) => l.ev === 'lease-lost').length, 0, `${node.label} kept its leases`);
    for (const node of [n1, n3]) await db.waitCount(50, `${node.label} handling 50 events after the cut`, 'node = $1 AND at > to_timestamp($2 / 1000.0)', [node.label, cutAt]);

    const total = await db.stopWriting();
    await db.waitCaughtUp(total);
    const effects = await db.effects();
    const { duplicates, repeated } = check(effects, await db.events(), 12, 'cut');
    // The longest pause between two writes of n1 (and of n3) around the cut: no stall behind n2.
    const window = (node: Node): number => {
      const times = effects.filter((e) => e.node === node.label && e.at > cutAt - 1_000 && e.at < cutAt + 2_000).map((e) => e.at);
      return Math.max(...times.slice(1).map((at, i) => at - (times[i] as number)));
    };
    const gaps = [window(n1), window(n3)];
    assert.ok(gaps.every((gap) => gap < 1_000), `n1 and n3 kept writing around the cut (longest pauses ${gaps.map(Math.round).join(' and ')} ms)`);
    const allowed = lostLeases(db.nodes, []);
    for (const lease of repeated) assert.ok(allowed.has(lease), `a duplicate repeats lease ${lease}, which was not lost`);
    const refused = await db.refused();
    for (const row of refused) assert.equal(row.node, 'n2', 'only the cut node tried stale writes');
    t.diagnostic(
      `${total} events, ${duplicates.length} duplicates, ${refused.length} stale writes refused; the cut node held 4 again ${Math.round(back)} ms after its leases ended; longest pauses of the others ${gaps.map(Math.round).join(' and ')} ms`,
    );
  });
});
