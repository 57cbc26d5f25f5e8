// `eskit status` on a partitioned runner: its partitions' checkpoints, locks, dead letters and status
// rows (each named `<name>#<partition>/<count>`) are shown under one entry, one line per partition with
// its owner, token, checkpoint and lag, and one line per node saying which partitions it leads. A
// count used before is marked superseded; the layout lock is not a runner. Then the same with a real
// partitioned automation on two PostgreSQL nodes.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Automation } from '../../src/automation/index.js';
import { partitionList } from '../../src/cli/commands/status.js';
import type { StatusEntry, StatusReport } from '../../src/cli/commands/status.js';
import type { Admin } from '../../src/core/admin.js';
import type { Backend } from '../../src/core/backend.js';
import type { Lease } from '../../src/core/lock.js';
import { silentLogger } from '../../src/core/logger.js';
import { postgres } from '../../src/postgres/index.js';
import { sqlite } from '../../src/sqlite/index.js';
import { StatusPublisher } from '../../src/subscription/status-publisher.js';
import { waitUntil } from '../../src/testing/wait.js';
import { createTestSchema } from '../support/postgres.js';
import { cli, parseJson } from './helpers.js';

type Node = Backend & { admin: Admin; locks: NonNullable<Backend['locks']> };

interface Subject {
  /** Two nodes on one database, their locks held as node-a and node-b. */
  a: Node;
  b: Node;
  db: string[];
  close(): Promise<void>;
}

async function open(kind: 'sqlite' | 'postgres'): Promise<Subject> {
  if (kind === 'sqlite') {
    const dir = mkdtempSync(join(tmpdir(), 'eskit-status-partitions-'));
    const path = join(dir, 'app.db');
    const node = (holderId: string): Node => sqlite({ path, leaderElection: { holderId, ttlMs: 5_000, logger: silentLogger } }) as Node;
    const a = node('node-a');
    const b = node('node-b');
    return { a, b, db: ['--db', `sqlite:${path}`], close: async () => (await b.close(), await a.close(), rmSync(dir, { recursive: true, force: true })) };
  }
  const schema = await createTestSchema({ create: false, prefix: 'eskit_cli', poolSize: 1 });
  const node = (holderId: string): Node =>
    postgres({ connectionString: schema.connectionString, schema: schema.name, logger: silentLogger, leaderElection: { holderId, logger: silentLogger } }) as Node;
  const a = node('node-a');
  await a.migrate();
  const b = node('node-b');
  return { a, b, db: ['--db', schema.connectionString, '--schema', schema.name], close: async () => (await b.close(), await a.close(), await schema.drop()) };
}

const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

it('partition numbers are listed with runs shortened', () => {
  assert.equal(partitionList([0, 1, 2, 3, 6, 9, 10]), '#0-3 #6 #9-10');
  assert.equal(partitionList([5]), '#5');
  assert.equal(partitionList([]), '');
});

for (const kind of ['sqlite', 'postgres'] as const) {
  describe(`eskit status on ${kind}: a partitioned runner`, () => {
    it('is one entry with a line per partition (owner, token, checkpoint, lag), the nodes by the partitions they lead, an old count superseded', async () => {
      const { a, b, db, close } = await open(kind);
      const leases: Lease[] = [];
      const publishers: StatusPublisher[] = [];
      try {
        for (let n = 1; n <= 10; n++) await a.store.append(`order-${n}`, [{ type: 'OrderPlaced', data: {} }]);
        // Left by the runner before it was re-partitioned: unpartitioned first, then 2 partitions.
        await a.checkpoints.save('mailer', 2);
        await pause(20);
        for (const lane of ['mailer#0/2', 'mailer#1/2']) await a.checkpoints.save(lane, 3);
        await pause(20);
        // The layout lock each node takes to check the count: a lock row (SQLite) that is no runner.
        await (await a.locks.acquire('mailer#layout', { signal: new AbortController().signal })).release();

        // Now 4 partitions: node-a leads #0 and #1, node-b leads #2 (and waits for #3), nobody holds #3.
        const lead = async (node: Node, name: string, position: number): Promise<number> => {
          const lease = await node.locks.acquire(name, { signal: new AbortController().signal });
          leases.push(lease);
          await node.checkpoints.claim(name, lease.fencingToken);
          await node.checkpoints.save(name, position, { fencingToken: lease.fencingToken });
          return lease.fencingToken;
        };
        const tokens = [await lead(a, 'mailer#0/4', 10), await lead(a, 'mailer#1/4', 9), await lead(b, 'mailer#2/4', 7)];
        // #3: node-a led it and let go (a node stopping); nobody took it since.
        await lead(a, 'mailer#3/4', 4);
        await (leases.pop() as Lease).release();
        await a.deadLetters.add({
          source: 'mailer#1/4',
          stage: 'execute',
          key: 'order-3',
          payload: null,
          eventId: '0190e4a8-0000-7000-8000-000000000001',
          eventType: 'OrderPlaced',
          eventPosition: 3,
          streamId: 'order-3',
          attempts: [{ at: new Date(), error: 'smtp down' }],
        });
        const publish = (node: Node, nodeId: string, lane: string, role: 'leader' | 'denied-standby', position?: number, token?: number): void => {
          const publisher = new StatusPublisher({
            store: node.admin.runners,
            name: lane,
            kind: 'automation',
            nodeId,
            snapshot: () => ({ state: 'running', role, fencingToken: token, position, work: { pending: 1, running: 1, hung: 0, retrying: 0, unrecorded: 0, oldestPendingMs: 100 } }),
          });
          if (role === 'leader') publisher.handled(position ?? 0);
          publisher.start();
          publishers.push(publisher);
        };
        publish(a, 'node-a', 'mailer#0/4', 'leader', 10, tokens[0]);
        publish(a, 'node-a', 'mailer#1/4', 'leader', 9, tokens[1]);
        publish(b, 'node-b', 'mailer#2/4', 'leader', 7, tokens[2]);
        publish(b, 'node-b', 'mailer#3/4', 'denied-standby');
        await Promise.all(publishers.map((publisher) => publisher.flush()));

        const report = parseJson<StatusReport>(await cli(['status', '--json', ...db]));
        assert.deepEqual(
          report.entries.map((entry) => [entry.name, entry.partitions?.count ?? null, entry.superseded]),
          [
            ['mailer', 4, false],
            ['mailer', 2, true],
            ['mailer', null, true],
          ],
          'the layout lock is no entry, and the counts used before are superseded',
        );
        const mailer = report.entries[0] as StatusEntry;
        const partitions = mailer.partitions;
        assert.ok(partitions);
        assert.equal(mailer.kind, 'automation');
        assert.equal(mailer.position, 4, 'the lowest checkpoint of its partitions');
        assert.equal(mailer.lag, 6);
        assert.equal(mailer.state, 'no-leader', 'one partition has no leader');
        assert.deepEqual(mailer.deadLetters, { dead: 1, redrive: 0 });
        assert.deepEqual(partitions.owners, [
          { nodeId: 'node-a', partitions: [0, 1] },
          { nodeId: 'node-b', partitions: [2] },
        ]);
        assert.deepEqual(partitions.unowned, [3]);
        assert.deepEqual(
          partitions.entries.map((lane) => [lane.name, lane.partition, lane.owner, lane.state, lane.position, lane.lag]),
          [
            ['mailer#0/4', 0, 'node-a', 'leading', 10, 0],
            ['mailer#1/4', 1, 'node-a', 'leading', 9, 1],
            ['mailer#2/4', 2, 'node-b', 'leading', 7, 3],
            ['mailer#3/4', 3, null, 'no-leader', 4, 6],
          ],
        );
        assert.equal(partitions.entries[2]?.fencingToken.lease ?? partitions.entries[2]?.fencingToken.checkpoint, tokens[2]);
        assert.deepEqual(
          mailer.nodes.map((node) => [node.nodeId, node.state, node.role, node.leads, node.position, node.handled, node.work?.pending]),
          [
            ['node-a', 'running', 'leader', [0, 1], 9, 2, 2],
            ['node-b', 'running', 'leader', [2], 7, 1, 2],
          ],
        );

        const table = await cli(['status', ...db]);
        assert.equal(table.code, 0, table.stderr);
        const text = table.stdout;
        assert.match(text, /^mailer {8}automation, 4 partitions\s+4\s+6\s+3 of 4 led\s+2 leaders\s+-\s+1\s+\S+ \S+ ago\s+node-a: 2, node-b: 1$/m);
        assert.match(text, new RegExp(`^  mailer#0/4\\s+10\\s+0\\s+leading\\s+leader\\s+${tokens[0]}\\s+0\\s+.* ago\\s+node-a$`, 'm'));
        assert.match(text, new RegExp(`^  mailer#2/4\\s+7\\s+3\\s+leading\\s+leader\\s+${tokens[2]}\\s+0\\s+.* ago\\s+node-b$`, 'm'));
        assert.match(text, /^ {2}mailer#1\/4\s+9\s+1\s+leading\s+leader\s+\d+\s+1\s/m, 'its dead letter');
        assert.match(text, /^ {2}mailer#3\/4\s+4\s+6\s+no leader\s+1 denied standby\s+.*\s-$/m);
        assert.match(text, /^mailer\s+automation, 2 partitions\s+3\s+7\s+superseded\s/m, 'the kind of the count in use');
        assert.match(text, /^mailer\s+automation\s+2\s+8\s+superseded\s/m);
        assert.doesNotMatch(text, /mailer#\d\/2/, 'the partitions of a superseded count are not listed');
        assert.doesNotMatch(text, /^unknown: /m);
        assert.match(text, /^superseded: checkpoints left by a partition count used before/m);
        assert.doesNotMatch(text, /#layout/);
        assert.match(text, /^mailer\s+node-a\s+running\s+leads 2: #0-1\s+9\s+2\s+#\d+ .*2 pending, 2 running/m);
        assert.match(text, /^mailer\s+node-b\s+running\s+leads 1: #2\s+7\s+1\s/m);

        // A partition's name picks its runner; an unknown name lists runners, not partitions.
        const picked = parseJson<StatusReport>(await cli(['status', 'mailer#2/4', '--json', ...db]));
        assert.deepEqual([...new Set(picked.entries.map((entry) => entry.name))], ['mailer']);
        const unknown = await cli(['status', 'mailer#9/4', ...db]);
        assert.equal(unknown.code, 1);
        assert.match(unknown.stderr, /no subscription, automation or view "mailer#9\/4" \(known: "mailer"\)/);
      } finally {
        await Promise.all(publishers.map((publisher) => publisher.stop()));
        await Promise.all(leases.map((lease) => lease.release()));
        await close();
      }
    });
  });
}

describe('eskit status on postgres: a partitioned automation on two nodes', () => {
  it('shows every partition led by one of the two, and who leads how many', async () => {
    const { a, b, db, close } = await open('postgres');
    const automations: Automation<{ type: string; data: unknown }, null>[] = [];
    try {
      for (let n = 1; n <= 40; n++) await a.store.append(`order-${n}`, [{ type: 'OrderPlaced', data: {} }]);
      for (const backend of [a, b]) {
        const automation = new Automation<{ type: string; data: unknown }, null>({
          backend,
          name: 'mailer',
          partitions: 8,
          trigger: (event) => ({ key: event.streamId, payload: null }),
          execute: () => undefined,
          logger: silentLogger,
          pollIntervalMs: 50,
          rebalanceIntervalMs: 100,
          statusHeartbeatMs: 200,
        });
        automations.push(automation);
        await automation.start();
      }
      let report: StatusReport | undefined;
      await waitUntil(
        async () => {
          report = parseJson<StatusReport>(await cli(['status', 'mailer', '--json', ...db]));
          const entry = report.entries[0];
          const owners = entry?.partitions?.owners ?? [];
          const rows = entry?.nodes.filter((node) => node.state === 'running') ?? [];
          return (
            entry?.lag === 0 &&
            owners.length === 2 &&
            owners.every((owner) => owner.partitions.length === 4) &&
            rows.length === 2 &&
            rows.every((node) => node.leads?.length === 4) &&
            rows.reduce((sum, node) => sum + node.handled, 0) >= 40
          );
        },
        { timeoutMs: 20_000, message: 'both nodes to lead 4 partitions each (by the locks and by their rows), caught up' },
      );
      const mailer = report?.entries[0] as StatusEntry;
      assert.equal(mailer.state, 'leading');
      assert.deepEqual(mailer.partitions?.unowned, []);
      assert.deepEqual(mailer.partitions?.owners.map((owner) => owner.nodeId), ['node-a', 'node-b']);
      for (const lane of mailer.partitions?.entries ?? []) {
        assert.match(lane.name, /^mailer#\d\/8$/);
        assert.ok(lane.owner === 'node-a' || lane.owner === 'node-b', `${lane.name}: ${String(lane.owner)}`);
        assert.ok((lane.fencingToken.checkpoint ?? 0) > 0, `${lane.name} has its own fencing token`);
      }
      const live = mailer.nodes.filter((node) => node.state === 'running');
      assert.equal(
        live.reduce((sum, node) => sum + node.handled, 0),
        40,
        'the rows of a node summed over its partitions: each event handled once, in its partition',
      );
      const table = await cli(['status', ...db]);
      assert.match(table.stdout, /^mailer\s+automation, 8 partitions\s+40\s+0\s+leading\s+2 leaders\s.*node-a: 4, node-b: 4$/m);
      assert.equal(table.stdout.match(/^ {2}mailer#\d\/8\s+40\s+0\s+leading\s+leader\s+\d+\s+0\s.*node-[ab]$/gm)?.length, 8);
    } finally {
      await Promise.all(automations.map((automation) => automation.stop()));
      await close();
    }
  });
});
