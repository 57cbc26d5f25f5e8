// `eskit status` shows what the runners publish about themselves: every node's row, with a standby
// that was denied its lock (nothing in the database's locks shows one), stale rows of nodes that went
// silent, an automation's to-do list, and the kind each runner declared.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { StatusReport } from '../../src/cli/commands/status.js';
import type { Admin } from '../../src/core/admin.js';
import type { Backend } from '../../src/core/backend.js';
import { postgres } from '../../src/postgres/index.js';
import { sqlite } from '../../src/sqlite/index.js';
import { StatusPublisher } from '../../src/subscription/status-publisher.js';
import { waitUntil } from '../../src/testing/wait.js';
import { createTestSchema } from '../support/postgres.js';
import { cli, parseJson } from './helpers.js';

interface Subject {
  backend: Backend & { admin: Admin };
  db: string[];
  close(): Promise<void>;
}

async function open(kind: 'sqlite' | 'postgres'): Promise<Subject> {
  if (kind === 'sqlite') {
    const dir = mkdtempSync(join(tmpdir(), 'eskit-status-runners-'));
    const path = join(dir, 'app.db');
    const backend = sqlite({ path });
    return { backend, db: ['--db', `sqlite:${path}`], close: async () => (await backend.close(), rmSync(dir, { recursive: true, force: true })) };
  }
  const schema = await createTestSchema({ create: false, prefix: 'eskit_cli', poolSize: 1 });
  const backend = postgres({ connectionString: schema.connectionString, schema: schema.name, leaderElection: false });
  await backend.migrate();
  return { backend, db: ['--db', schema.connectionString, '--schema', schema.name], close: async () => (await backend.close(), await schema.drop()) };
}

for (const kind of ['sqlite', 'postgres'] as const) {
  describe(`eskit status on ${kind}: the runners' status rows`, () => {
    it('shows every node (a denied standby too), stale rows, the to-do list, and takes KIND from the rows', async () => {
      const { backend, db, close } = await open(kind);
      const publishers: StatusPublisher[] = [];
      try {
        await backend.store.append('order-1', [{ type: 'OrderPlaced', data: {} }]);
        await backend.checkpoints.save('mailer', 1);
        await backend.checkpoints.save('audit', 1);
        const runners = backend.admin.runners;
        const leader = new StatusPublisher({
          store: runners,
          name: 'mailer',
          kind: 'automation',
          nodeId: 'node-a',
          snapshot: () => ({
            state: 'running',
            role: 'leader',
            fencingToken: 3,
            position: 1,
            work: { pending: 2, running: 1, hung: 0, retrying: 1, unrecorded: 0, oldestPendingMs: 4000 },
          }),
        });
        const standby = new StatusPublisher({
          store: runners,
          name: 'mailer',
          kind: 'automation',
          nodeId: 'node-b',
          snapshot: () => ({ state: 'running', role: 'denied-standby', fencingToken: undefined, position: undefined }),
        });
        publishers.push(leader, standby);
        leader.handled(1);
        leader.start();
        standby.start();
        await Promise.all([leader.flush(), standby.flush()]);
        // A node that went silent: its last row says running, but no heartbeat came for 3 intervals.
        await runners.publish({
          name: 'audit',
          kind: 'subscription',
          nodeId: 'node-c',
          state: 'running',
          role: 'unelected',
          fencingToken: undefined,
          position: 1,
          handled: 1,
          lastEvent: undefined,
          work: undefined,
          lastError: 'connection reset',
          heartbeatMs: 1,
        });
        await waitUntil(async () => (await runners.list()).some((row) => row.name === 'audit' && row.stale), { message: 'the audit row to go stale' });

        const report = parseJson<StatusReport>(await cli(['status', '--json', ...db]));
        const mailer = report.entries.find((entry) => entry.name === 'mailer');
        const audit = report.entries.find((entry) => entry.name === 'audit');
        assert.equal(mailer?.kind, 'automation', 'from the status rows: no dead letters or completions say so');
        assert.equal(audit?.kind, 'subscription', 'from its status row');
        assert.deepEqual(
          mailer?.nodes.map((node) => [node.nodeId, node.state, node.role, node.stale]),
          [
            ['node-a', 'running', 'leader', false],
            ['node-b', 'running', 'denied-standby', false],
          ],
        );
        assert.deepEqual(mailer?.nodes[0]?.work, { pending: 2, running: 1, hung: 0, retrying: 1, unrecorded: 0, oldestPendingMs: 4000 });
        assert.equal(mailer?.nodes[0]?.lastEvent?.position, 1);
        assert.deepEqual(audit?.nodes.map((node) => [node.nodeId, node.stale, node.lastError]), [['node-c', true, 'connection reset']]);

        const table = await cli(['status', ...db]);
        assert.equal(table.code, 0, table.stderr);
        assert.match(table.stdout, /^mailer\s+automation\s+1\s+0\s+.*leader, 1 denied standby/m);
        assert.match(table.stdout, /^audit\s+subscription\s+1\s+0\s+.*1 stale/m);
        assert.match(table.stdout, /^mailer\s+node-b\s+running\s+denied standby\s/m, 'the denied standby has a line of its own');
        assert.match(table.stdout, /^mailer\s+node-a\s+running\s+leader\s+1\s+1\s+#1 .*2 pending, 1 running, 1 retrying, oldest 4\.0 s/m);
        assert.match(table.stdout, /^audit\s+node-c\s+running \(stale\)\s+unelected\s.*connection reset/m);
        assert.match(table.stdout, /stale: no heartbeat for 3 intervals/);

        await standby.stop();
        const stopped = parseJson<StatusReport>(await cli(['status', 'mailer', '--json', ...db]));
        assert.deepEqual(stopped.entries[0]?.nodes.map((node) => [node.nodeId, node.state, node.role]), [
          ['node-a', 'running', 'leader'],
          ['node-b', 'stopped', 'none'],
        ]);
      } finally {
        await Promise.all(publishers.map((publisher) => publisher.stop()));
        await close();
      }
    });
  });
}
