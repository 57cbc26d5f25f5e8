import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { silentLogger } from '../../src/core/logger.js';
import type { LiveMember } from '../../src/core/members.js';
import { postgres, PostgresEventStore, PostgresMemberRegistry } from '../../src/postgres/index.js';
import type { PostgresBackend } from '../../src/postgres/index.js';
import { memberRegistryConformance, waitUntil } from '../../src/testing/index.js';
import { createTestSchema, POSTGRES_URL } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';

/** A node: a backend of its own on the schema, with leader election (so a lock connection) and quick LISTEN teardown. */
function node(schema: TestSchema, options: { leaderElection?: boolean } = {}): PostgresBackend {
  return postgres({
    connectionString: POSTGRES_URL,
    schema: schema.name,
    logger: silentLogger,
    listenLingerMs: 0,
    leaderElection: options.leaderElection === false ? false : { logger: silentLogger, sessionTimeoutMs: 2_000 },
  });
}

memberRegistryConformance<PostgresMemberRegistry>({
  name: 'postgres',
  create: async () => {
    // A schema of the test's own, created by the first node's migration and dropped after it.
    const schema = await createTestSchema({ create: false, poolSize: 2 });
    const nodes: PostgresBackend[] = [];
    return {
      registry() {
        const backend = node(schema);
        nodes.push(backend);
        assert.ok(backend.members, 'leader election brings a member registry');
        return backend.members;
      },
      async close() {
        try {
          for (const backend of nodes.reverse()) await backend.close();
        } finally {
          await schema.drop();
        }
      },
    };
  },
});

const ids = (members: LiveMember[]): string[] => members.map((m) => m.id);
const member = (id: string, ttlMs = 60_000) => ({ id, partitions: 4, ttlMs });

describe('PostgresMemberRegistry', () => {
  const cleanups: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  const schema = async (): Promise<TestSchema> => {
    const made = await createTestSchema({ create: false, poolSize: 2 });
    cleanups.push(() => made.drop());
    return made;
  };
  const open = (on: TestSchema, options?: { leaderElection?: boolean }): PostgresBackend => {
    const backend = node(on, options);
    cleanups.push(() => backend.close());
    return backend;
  };

  it("a member whose lock session is terminated (a killed node) is dead for the others at their next heartbeat, long before its ttl", async () => {
    const s = await schema();
    const [a, b] = [open(s), open(s)];
    const heard: string[] = [];
    b.members?.onChange((group) => heard.push(group));
    // Holding a lock keeps a's lock connection up; its heartbeat records that session.
    const lease = await a.locks?.acquire('some-runner');
    const pid = a.locks?.connectionPid;
    assert.ok(lease && pid !== undefined, 'a holds a lock on its lock connection');
    await a.members?.heartbeat('g', member('a'));
    const recorded = await s.pool.query(`SELECT session_pid FROM "${s.name}".members WHERE member = 'a'`);
    assert.equal(recorded.rows[0]?.session_pid, pid);
    assert.deepEqual(ids((await b.members?.heartbeat('g', member('b'))) ?? []), ['a', 'b']);
    await waitUntil(() => heard.length >= 2, { message: 'both joins to be announced' });

    const terminated = await s.pool.query<{ ok: boolean }>('SELECT pg_terminate_backend($1) AS ok', [pid]);
    assert.equal(terminated.rows[0]?.ok, true);
    // Waits at most 10 s, against a ttl of 60 s: only the ended session can make a dead this soon.
    const alone = await waitUntil(async () => {
      const live = (await b.members?.heartbeat('g', member('b'))) ?? [];
      return live.length === 1 ? live : undefined;
    }, { timeoutMs: 10_000, message: "a to be dead once its session ended" });
    assert.deepEqual(ids(alone), ['b']);
    await waitUntil(() => lease.signal.aborted, { message: "a's lease to end with its session" });

    // Its next heartbeat (on a new lock session, or none) brings it back, announced as a join.
    const before = heard.length;
    assert.deepEqual(ids((await a.members?.heartbeat('g', member('a'))) ?? []), ['a', 'b']);
    await waitUntil(() => heard.length > before, { message: 'the return of a to be announced' });
    assert.deepEqual(ids((await b.members?.heartbeat('g', member('b'))) ?? []), ['a', 'b']);
  });

  it('records no session while the lock connection is down: the ttl alone decides', async () => {
    const s = await schema();
    const a = open(s);
    assert.equal(a.locks?.connectionPid, undefined, 'no lock taken yet, so no lock connection');
    await a.members?.heartbeat('g', member('a'));
    const recorded = await s.pool.query(`SELECT session_pid FROM "${s.name}".members WHERE member = 'a'`);
    assert.equal(recorded.rows[0]?.session_pid, null);
  });

  it('deletes rows of a group dead for more than a minute at a heartbeat, and keeps fresher ones', async () => {
    const s = await schema();
    const a = open(s);
    for (const id of ['old', 'recent']) await a.members?.heartbeat('g', member(id));
    await a.members?.heartbeat('h', member('other-group'));
    const table = `"${s.name}".members`;
    await s.pool.query(`UPDATE ${table} SET expires_at = clock_timestamp() - interval '61 seconds' WHERE member IN ('old', 'other-group')`);
    await s.pool.query(`UPDATE ${table} SET expires_at = clock_timestamp() - interval '1 second' WHERE member = 'recent'`);
    assert.deepEqual(ids((await a.members?.heartbeat('g', member('b'))) ?? []), ['b']);
    const rows = await s.pool.query<{ member: string }>(`SELECT member FROM ${table} ORDER BY member`);
    assert.deepEqual(rows.rows.map((r) => r.member), ['b', 'other-group', 'recent'], "only group g's long-dead row went");
  });

  it("keeps the store's one LISTEN connection up while anyone listens, for appends or for members", async () => {
    const s = await schema();
    const [a, b] = [open(s), open(s)];
    await b.store.migrate();
    const store = b.store;
    const heard: string[] = [];
    const stopMembers = store.onMembersChanged((group) => heard.push(group));
    await waitUntil(() => store.listening, { message: 'the LISTEN connection' });
    const appended: number[] = [];
    const stopAppends = store.onAppend((position) => appended.push(position));
    stopAppends();
    // The linger is 0: had the last append listener idled the connection, it would be down now.
    assert.equal(store.listening, true, 'still up for the member listener');
    await a.members?.heartbeat('g', member('a'));
    await waitUntil(() => heard.includes('g'), { message: 'the join, over the LISTEN connection' });

    const stopAppendsAgain = store.onAppend((position) => appended.push(position));
    stopMembers();
    assert.equal(store.listening, true, 'still up for the append listener');
    await a.store.append('s', [{ type: 'A', data: 1 }]);
    await waitUntil(() => appended.includes(1), { message: 'the append, over the same connection' });
    stopAppendsAgain();
    await waitUntil(() => !store.listening, { message: 'the connection to close with its last listener' });
  });

  it('is on a PostgreSQL backend exactly when leader election is, and refuses calls once closed', async () => {
    const s = await schema();
    const plain = open(s, { leaderElection: false });
    assert.equal(plain.members, undefined);
    const backend = node(s);
    assert.ok(backend.members instanceof PostgresMemberRegistry);
    await backend.members.heartbeat('g', member('a'));
    await backend.close();
    await assert.rejects(backend.members.heartbeat('g', member('a')), { code: 'ESKIT_STORE_CLOSED' });
  });

  it('works on a store of its own without a lock registry, migrating the schema on first use', async () => {
    const s = await schema();
    const store = new PostgresEventStore({ connectionString: POSTGRES_URL, schema: s.name, logger: silentLogger });
    cleanups.push(() => store.close());
    const members = new PostgresMemberRegistry({ store });
    assert.deepEqual(await members.heartbeat('g', { id: 'a', partitions: 3, ttlMs: 5_000 }), [{ id: 'a', partitions: 3 }]);
    await members.leave('g', 'a');
    assert.deepEqual(ids(await members.heartbeat('g', member('b'))), ['b']);
  });
});
