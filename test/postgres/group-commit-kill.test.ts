// Group commit under SIGKILL on PostgreSQL: see test/support/group-commit-kill.ts.
import assert from 'node:assert/strict';
import { afterEach, it } from 'node:test';
import { PostgresEventStore } from '../../src/postgres/index.js';
import { collect, yieldToEventLoop } from '../../src/testing/conformance/context.js';
import { groupWriterApplicationName, killMidGroups } from '../support/group-commit-kill.js';
import type { GroupWriterLine } from '../support/group-commit-kill.js';
import { createTestSchema } from '../support/postgres.js';
import { killAll } from '../support/processes.js';
import type { ChildNode } from '../support/processes.js';

const nodes: ChildNode<GroupWriterLine>[] = [];
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  await killAll(nodes.splice(0));
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

it('PostgreSQL: a writer SIGKILLed in the middle of group commits leaves every acknowledged append, and only whole appends', { timeout: 60_000 }, async (t) => {
  const schema = await createTestSchema({ create: false });
  cleanups.push(() => schema.drop());
  const store = new PostgresEventStore({ pool: schema.pool, schema: schema.name });
  cleanups.push(() => store.close());
  await store.migrate();
  const applicationName = groupWriterApplicationName(schema.name);
  const reports = await killMidGroups({
    adapter: 'postgres',
    target: schema.name,
    readAll: () => collect(store.readAll({ raw: true }), Number.MAX_SAFE_INTEGER),
    // The server finishes (and may commit) a statement whose client died: wait until the killed
    // writer's sessions are gone, so that the log checked is the one it leaves.
    async settled() {
      const deadline = Date.now() + 10_000;
      for (;;) {
        const { rows } = await schema.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [applicationName]);
        if (rows[0]?.n === 0) return;
        assert.ok(Date.now() < deadline, `the killed writer's ${rows[0]?.n} sessions are still there after 10 s`);
        await yieldToEventLoop();
      }
    },
    track: (node) => nodes.push(node),
  });
  for (const report of reports) t.diagnostic(JSON.stringify(report));
  assert.equal(reports.length, 3);
});
