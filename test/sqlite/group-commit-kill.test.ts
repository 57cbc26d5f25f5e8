// Group commit under SIGKILL on SQLite: see test/support/group-commit-kill.ts.
import assert from 'node:assert/strict';
import { afterEach, it } from 'node:test';
import { SqliteEventStore } from '../../src/sqlite/index.js';
import { collect } from '../../src/testing/conformance/context.js';
import { killMidGroups } from '../support/group-commit-kill.js';
import type { GroupWriterLine } from '../support/group-commit-kill.js';
import { killAll } from '../support/processes.js';
import type { ChildNode } from '../support/processes.js';
import { removeDatabase, tempDatabasePath } from './helpers.js';

const nodes: ChildNode<GroupWriterLine>[] = [];
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  await killAll(nodes.splice(0));
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

it('SQLite: a writer SIGKILLed in the middle of group commits leaves every acknowledged append, and only whole appends', { timeout: 60_000 }, async (t) => {
  const path = tempDatabasePath('group-kill');
  cleanups.push(() => removeDatabase(path));
  const store = new SqliteEventStore({ path });
  cleanups.push(() => store.close());
  const reports = await killMidGroups({
    adapter: 'sqlite',
    target: path,
    readAll: () => collect(store.readAll({ raw: true }), Number.MAX_SAFE_INTEGER),
    // A transaction the process did not commit is gone with it: SQLite rolls it back on the next open.
    settled: async () => undefined,
    track: (node) => nodes.push(node),
  });
  for (const report of reports) t.diagnostic(JSON.stringify(report));
  assert.equal(reports.length, 3);
});
