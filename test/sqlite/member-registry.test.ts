import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sqlite, SqliteMemberRegistry } from '../../src/sqlite/index.js';
import type { SqliteBackend } from '../../src/sqlite/index.js';
import { memberRegistryConformance, waitUntil } from '../../src/testing/index.js';
import { databasesAfterEach, removeDatabase, tempDatabasePath } from './helpers.js';

memberRegistryConformance<SqliteMemberRegistry>({
  name: 'sqlite',
  create: async () => {
    const path = tempDatabasePath('members-conformance');
    const backends: SqliteBackend[] = [];
    return {
      // A node: a backend of its own on the file, as a process would open it.
      registry() {
        const backend = sqlite({ path, leaderElection: true });
        backends.push(backend);
        assert.ok(backend.members, 'leaderElection brings a member registry');
        return backend.members;
      },
      async close() {
        for (const backend of backends.reverse()) await backend.close();
        removeDatabase(path);
      },
    };
  },
});

describe('SqliteMemberRegistry', () => {
  const { freshPath, closeAfterTest } = databasesAfterEach('members');
  const open = (path: string): SqliteBackend => {
    const backend = sqlite({ path, leaderElection: true });
    closeAfterTest(() => backend.close());
    return backend;
  };
  const member = (id: string, ttlMs = 60_000) => ({ id, partitions: 4, ttlMs });

  it('judges expiry by the database clock: a row whose expires_at is past is dead at once', async () => {
    const a = open(freshPath());
    const members = a.members as SqliteMemberRegistry;
    await members.heartbeat('g', member('a'));
    await members.heartbeat('g', member('b'));
    a.database.prepare("UPDATE eskit_members SET expires_at = CAST(unixepoch('subsec') * 1000 AS INTEGER) - 1 WHERE member = 'a'").run();
    assert.deepEqual(await members.heartbeat('g', member('b')), [{ id: 'b', partitions: 4 }]);
  });

  it('deletes rows of a group dead for more than a minute at a heartbeat, and keeps fresher ones', async () => {
    const a = open(freshPath());
    const members = a.members as SqliteMemberRegistry;
    for (const id of ['old', 'recent', 'other-group']) await members.heartbeat(id === 'other-group' ? 'h' : 'g', member(id));
    const now = "CAST(unixepoch('subsec') * 1000 AS INTEGER)";
    a.database.prepare(`UPDATE eskit_members SET expires_at = ${now} - 61000 WHERE member IN ('old', 'other-group')`).run();
    a.database.prepare(`UPDATE eskit_members SET expires_at = ${now} - 1000 WHERE member = 'recent'`).run();
    await members.heartbeat('g', member('b'));
    const rows = a.database.prepare('SELECT member FROM eskit_members ORDER BY member').pluck().all();
    assert.deepEqual(rows, ['b', 'other-group', 'recent'], "only group g's long-dead row went");
  });

  it("tells listeners on other registries of the same file in this process, not those of another file", async () => {
    const path = freshPath();
    const [a, b, elsewhere] = [open(path), open(path), open(freshPath())];
    const heardB: string[] = [];
    const heardElsewhere: string[] = [];
    b.members?.onChange((group) => heardB.push(group));
    elsewhere.members?.onChange((group) => heardElsewhere.push(group));
    await a.members?.heartbeat('g', member('a'));
    await waitUntil(() => heardB.length === 1, { message: "b to hear a's join" });
    // A join on the other file fences: a's announcement would have reached its listener by then.
    await elsewhere.members?.heartbeat('fence', member('c'));
    await waitUntil(() => heardElsewhere.length === 1, { message: 'the fence' });
    assert.deepEqual(heardElsewhere, ['fence']);
    assert.deepEqual(heardB, ['g']);
  });

  it('is on a SQLite backend exactly when leader election is, and refuses calls once closed', async () => {
    const path = freshPath();
    const plain = sqlite({ path });
    closeAfterTest(() => plain.close());
    assert.equal(plain.members, undefined);
    const backend = sqlite({ path, leaderElection: { ttlMs: 2_000 } });
    assert.ok(backend.members instanceof SqliteMemberRegistry);
    await backend.members.heartbeat('g', member('a'));
    await backend.close();
    await assert.rejects(backend.members.heartbeat('g', member('a')), { code: 'ESKIT_STORE_CLOSED' });
  });

  it('opens a file of its own from a path, and closes it', async () => {
    const path = freshPath();
    const members = new SqliteMemberRegistry({ path });
    closeAfterTest(() => members.close());
    assert.deepEqual(await members.heartbeat('g', member('a')), [{ id: 'a', partitions: 4 }]);
    await members.close();
    assert.equal(members.database.open, false);
  });
});
