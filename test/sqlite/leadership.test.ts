// Leader election end to end: three processes run the same Subscription (SqliteEventStore +
// SqliteCheckpointStore + SqliteLockRegistry) on one file; fixtures/leader.ts is one node. The test
// appends events, stops, kills and freezes nodes, and judges from the `handled` table, the checkpoint
// and lease rows, and the nodes' JSON lines. It waits on those, never on sleeps.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import { SqliteEventStore } from '../../src/sqlite/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import type { LeaderConfig, Line } from './fixtures/leader.js';
import { ChildNode, firstOf, fixturePath, killAll } from '../support/processes.js';
import { removeDatabase, tempDatabasePath } from './helpers.js';

type LeaderNode = ChildNode<Line>;

interface HandledRow {
  node: string;
  position: number;
  token: number;
  at: number;
}

const LEADER = fixturePath('./fixtures/leader.ts', import.meta.url);
const NAME = 'leadership';
const TEST_TIMEOUT = 30_000;

const started: LeaderNode[] = [];
const stores: SqliteEventStore[] = [];
const files: string[] = [];

afterEach(async () => {
  await killAll(started.splice(0));
  for (const store of stores.splice(0)) await store.close();
  for (const path of files.splice(0)) removeDatabase(path);
});

const now = (): number => performance.timeOrigin + performance.now();
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

function setup() {
  const path = tempDatabasePath('leadership');
  files.push(path);
  const store = new SqliteEventStore({ path });
  stores.push(store);
  const db = store.database;
  db.exec(`
    CREATE TABLE handled (id INTEGER PRIMARY KEY AUTOINCREMENT, node TEXT NOT NULL, position INTEGER NOT NULL, fencing_token INTEGER, at INTEGER NOT NULL);
    CREATE TABLE control (key TEXT PRIMARY KEY);
  `);
  const rowsStatement = db.prepare('SELECT node, position, fencing_token AS token, at FROM handled ORDER BY id');
  const checkpointStatement = db.prepare('SELECT position, fencing_token AS token FROM eskit_checkpoints WHERE name = ?');
  const leaseStatement = db.prepare('SELECT fencing_token AS token, holder, expires_at AS expiresAt FROM eskit_leases WHERE name = ?');
  let appended = 0;
  return {
    path,
    store,
    rows: () => rowsStatement.all() as HandledRow[],
    rowsOf: (node: LeaderNode) => (rowsStatement.all() as HandledRow[]).filter((row) => row.node === node.label),
    checkpoint: () => checkpointStatement.get(NAME) as { position: number | null; token: number } | undefined,
    lease: () => leaseStatement.get(NAME) as { token: number; holder: string | null; expiresAt: number | null } | undefined,
    thaw: () => db.prepare("INSERT INTO control (key) VALUES ('thaw')").run(),
    /** Appends `count` events in calls of `perCall` (one transaction each). */
    async append(count: number, perCall = count): Promise<void> {
      for (let done = 0; done < count; done += perCall) {
        const events = range(1, Math.min(perCall, count - done)).map(() => ({ type: 'Tick', data: { n: ++appended } }));
        await store.append(`s-${appended % 4}`, events);
      }
    },
    async waitForCheckpoint(position: number, token: number): Promise<void> {
      await waitUntil(() => {
        const row = checkpointStatement.get(NAME) as { position: number | null; token: number } | undefined;
        return row?.position === position && row.token === token;
      }, { timeoutMs: 10_000, message: `checkpoint ${position} with token ${token}` });
    },
  };
}

function startNodes(path: string, overrides: Partial<LeaderConfig> = {}, count = 3): LeaderNode[] {
  const nodes = range(1, count).map((i) => {
    const config: LeaderConfig = {
      path,
      node: `n${i}`,
      ttlMs: 500,
      renewIntervalMs: 100,
      lockPollMs: 10,
      pollMs: 20,
      batchSize: 10,
      ...overrides,
    };
    return new ChildNode<Line>(config.node, LEADER, [JSON.stringify(config)]);
  });
  started.push(...nodes);
  return nodes;
}

/** Waits until one node leads and every other one stands by; returns them. */
async function elected(nodes: LeaderNode[]): Promise<{ leader: LeaderNode; standbys: LeaderNode[] }> {
  const { node: leader, line } = await firstOf(nodes, (l) => l.ev === 'leading', 'a leader', 20_000);
  assert.equal(line.token, 1, 'the first leader of a fresh file holds token 1');
  const standbys = nodes.filter((node) => node !== leader);
  await Promise.all(standbys.map((node) => node.waitFor((l) => l.ev === 'standby', 'standing by', { timeoutMs: 20_000 })));
  return { leader, standbys };
}

const ev = (name: string) => (line: Line) => line.ev === name;
const positions = (rows: readonly HandledRow[]) => rows.map((row) => row.position);
const tokens = (rows: readonly HandledRow[]) => [...new Set(rows.map((row) => row.token))];
const ms = (value: number) => `${value.toFixed(1)} ms`;

/** Sends SIGTERM (unless already sent) and checks that the node stopped cleanly and exited on its own. */
async function stopGracefully(node: LeaderNode, alreadySent = false): Promise<void> {
  if (!alreadySent) node.kill('SIGTERM');
  const exit = await node.exited;
  assert.deepEqual(exit, { code: 0, signal: null }, `${node.label} exits 0 after SIGTERM:\n${node.stderr}`);
  assert.equal(node.find(ev('stopped')).length, 1, `${node.label} printed "stopped"`);
}

describe('Leadership across processes (SQLite)', () => {
  it('only one of three processes handles events; the others stand by and say so', { timeout: TEST_TIMEOUT }, async () => {
    const db = setup();
    const nodes = startNodes(db.path, { ttlMs: 1000, renewIntervalMs: 200 });
    const { leader, standbys } = await elected(nodes);
    await db.append(30, 5);
    await db.waitForCheckpoint(30, 1);

    const rows = db.rows();
    assert.deepEqual(positions(rows), range(1, 30));
    assert.ok(rows.every((row) => row.node === leader.label && row.token === 1), 'every event handled by the leader with token 1');
    for (const standby of standbys) {
      const standsBy = (l: Line): boolean => l.ev === 'log' && l.level === 'warn' && /another node holds its lock/.test(String(l.msg));
      // A slow-starting process may try the lock only after the leader is done: wait for its attempt.
      await standby.waitFor(standsBy, `${standby.label} logs that it stands by`);
      assert.equal(standby.find(standsBy).length, 1, `${standby.label} logged once that it stands by`);
      assert.equal(standby.find(ev('leading')).length, 0, `${standby.label} never led`);
      assert.equal(standby.find(ev('standby')).length, 1, `${standby.label} was told once that it waits`);
    }
    const lease = db.lease();
    assert.deepEqual([lease?.token, lease?.holder], [1, leader.label]);

    // Standbys first, so that none of them takes over while the test shuts down.
    for (const node of [...standbys, leader]) await stopGracefully(node);
    assert.deepEqual(positions(db.rows()), range(1, 30));
    assert.deepEqual(db.checkpoint(), { position: 30, token: 1 });
    assert.deepEqual(db.lease(), { token: 1, holder: null, expiresAt: null }, 'the leader released its lease on stop');
  });

  it('graceful handoff: SIGTERM → the leader drains, checkpoints and releases; a standby goes on with every event exactly once, in order', { timeout: TEST_TIMEOUT }, async (t: TestContext) => {
    const db = setup();
    const nodes = startNodes(db.path, { ttlMs: 1000, renewIntervalMs: 200 });
    const { leader, standbys } = await elected(nodes);
    await db.append(50, 5);
    await db.waitForCheckpoint(50, 1);

    const termAt = now();
    leader.kill('SIGTERM');
    await db.append(50, 5); // lands before, during and after the handoff
    const { node: next, line: leading } = await firstOf(standbys, ev('leading'), 'the new leader');
    await stopGracefully(leader, true);
    await db.append(50, 5);
    await db.waitForCheckpoint(150, 2);

    const rows = db.rows();
    assert.deepEqual(positions(rows), range(1, 150), 'every event handled exactly once, in global order');
    const byOld = db.rowsOf(leader);
    const byNew = db.rowsOf(next);
    const handedOverAt = byOld.length;
    assert.ok(handedOverAt >= 50, 'the old leader handled at least what was there before SIGTERM');
    assert.deepEqual(positions(byOld), range(1, handedOverAt));
    assert.deepEqual(positions(byNew), range(handedOverAt + 1, 150));
    assert.deepEqual(tokens(byOld), [1]);
    assert.deepEqual(tokens(byNew), [2]);
    assert.equal(leading.token, 2);
    const lastSave = leader.find(ev('saved')).pop();
    assert.equal(lastSave?.position, handedOverAt, 'the old leader checkpointed everything it handled before releasing');
    const claimed = await next.waitFor(ev('claimed'), 'the claim');
    assert.deepEqual([claimed.token, claimed.position], [2, handedOverAt], 'the new leader resumed exactly there');
    const third = standbys.find((node) => node !== next) as LeaderNode;
    assert.equal(db.rowsOf(third).length, 0);
    assert.equal(third.find(ev('leading')).length, 0);

    const released = leader.find(ev('released'))[0] as Line;
    const firstByNew = byNew[0] as HandledRow;
    t.diagnostic(`graceful handoff (release → new leader holds the lease): ${ms(leading.t - released.t)}`);
    t.diagnostic(`SIGTERM → new leader holds the lease: ${ms(leading.t - termAt)}; → its first event handled: ~${ms(firstByNew.at - termAt)}`);
    assert.ok(leading.t - released.t < 1000, 'a released lease is taken within a few polls, not after its ttl');
  });

  it('SIGKILL of the leader: a standby takes over once the lease expires by the database clock; only events above the dead leader\'s checkpoint are handled twice', { timeout: TEST_TIMEOUT }, async (t: TestContext) => {
    const db = setup();
    // The first leader parks at position 25 (mid-batch: 21..24 handled, checkpoint at 20), then dies.
    const nodes = startNodes(db.path, { stall: { mode: 'hang', position: 25, token: 1 } });
    const { leader, standbys } = await elected(nodes);
    await db.append(40); // one transaction: the leader reads it in batches 1-10, 11-20, 21-30
    await leader.waitFor(ev('stalled'), 'the stall at 25');
    assert.deepEqual(db.checkpoint(), { position: 20, token: 1 });
    assert.deepEqual(positions(db.rowsOf(leader)), range(1, 24));

    const lease = db.lease();
    assert.equal(lease?.holder, leader.label);
    const killedAt = now();
    leader.kill('SIGKILL');
    assert.equal((await leader.exited).signal, 'SIGKILL');
    assert.deepEqual(db.checkpoint(), { position: 20, token: 1 }, 'the dead leader saved nothing after 20');
    await db.append(10);
    const { node: next, line: leading } = await firstOf(standbys, ev('leading'), 'the new leader');
    await db.waitForCheckpoint(50, 2);

    const byOld = db.rowsOf(leader);
    const byNew = db.rowsOf(next);
    assert.deepEqual(positions(byOld), range(1, 24));
    assert.deepEqual(tokens(byOld), [1]);
    assert.deepEqual(positions(byNew), range(21, 50), 'the new leader resumed from the checkpoint (20), in order');
    assert.deepEqual(tokens(byNew), [2]);
    const twice = positions(byOld).filter((p) => byNew.some((row) => row.position === p));
    assert.deepEqual(twice, [21, 22, 23, 24], 'duplicates: exactly the events above the dead leader\'s checkpoint');
    assert.deepEqual(positions(db.rows()).length, 24 + 30);
    const claimed = await next.waitFor(ev('claimed'), 'the claim');
    assert.deepEqual([claimed.token, claimed.position], [2, 20]);
    const firstByNew = byNew[0] as HandledRow;
    assert.ok(firstByNew.at > (lease?.expiresAt as number), 'taken over only after the dead lease expired, by the database clock');
    assert.equal(db.rowsOf(standbys.find((node) => node !== next) as LeaderNode).length, 0);

    t.diagnostic(`kill -9 → new leader holds the lease: ${ms(leading.t - killedAt)} (ttl 500 ms, renewed every 100 ms)`);
    t.diagnostic(`kill -9 → first event handled by the new leader: ~${ms(firstByNew.at - killedAt)}`);
    assert.ok(leading.t - killedAt < 500 + 1000, 'taken over within the ttl (plus scheduling slack)');
  });

  it('SIGSTOP of the leader mid-batch: a standby takes over after the ttl; after SIGCONT the stale leader\'s checkpoint write is fenced and it stands by again', { timeout: TEST_TIMEOUT }, async (t: TestContext) => {
    const db = setup();
    // The first leader blocks its thread at position 25 (21..24 handled, checkpoint at 20) and is then
    // stopped, so it wakes up mid-batch believing it still leads: the case fencing exists for.
    const nodes = startNodes(db.path, { stall: { mode: 'freeze', position: 25, token: 1 } });
    const { leader, standbys } = await elected(nodes);
    await db.append(40);
    const frozen = await leader.waitFor(ev('frozen'), 'the freeze at 25');
    leader.kill('SIGSTOP');
    const lease = db.lease();
    assert.deepEqual([lease?.holder, lease?.token], [leader.label, 1]);

    const { node: next, line: leading } = await firstOf(standbys, ev('leading'), 'the new leader');
    assert.equal(leading.token, 2);
    const claimed = await next.waitFor(ev('claimed'), 'the claim');
    assert.equal(claimed.position, 20);
    await db.waitForCheckpoint(40, 2);

    const beforeWake = leader.lines.length;
    leader.kill('SIGCONT');
    db.thaw();
    const fenced = await leader.waitFor(ev('fenced'), 'the rejected checkpoint write', { from: beforeWake });
    assert.deepEqual([fenced.token, fenced.position, fenced.current], [1, 30, 2]);
    const fencedIndex = leader.lines.indexOf(fenced);
    const steppedDown = await leader.waitFor(
      (l) => l.ev === 'log' && /leadership lost/.test(String(l.msg)),
      'the step-down log',
      { from: fencedIndex },
    );
    assert.equal(steppedDown.code, 'ESKIT_FENCED');
    await leader.waitFor(ev('standby'), 'standing by again', { from: fencedIndex });
    assert.deepEqual(db.checkpoint(), { position: 40, token: 2 }, 'the stale leader did not move the checkpoint');

    await db.append(10);
    await db.waitForCheckpoint(50, 2);
    const byOld = db.rowsOf(leader);
    const byNew = db.rowsOf(next);
    // The handler's own side effects for 25..30 did happen under the stale token (nothing can stop a
    // thread that does not run): that is why handlers get the token. The checkpoint never moved with it.
    assert.deepEqual(positions(byOld), range(1, 30));
    assert.deepEqual(tokens(byOld), [1]);
    assert.deepEqual(positions(byNew), range(21, 50));
    assert.deepEqual(tokens(byNew), [2]);
    assert.deepEqual(leader.find(ev('saved')).map((l) => l.position), [10, 20], 'the stale leader saved nothing after it froze');
    assert.equal(leader.find(ev('leading')).length, 1, 'and did not lead again');
    assert.equal(db.rowsOf(standbys.find((node) => node !== next) as LeaderNode).length, 0);
    assert.ok((byNew[0] as HandledRow).at > (lease?.expiresAt as number), 'taken over only after the frozen lease expired, by the database clock');

    t.diagnostic(`freeze (mid-batch) → new leader holds the lease: ${ms(leading.t - frozen.t)} (ttl 500 ms, renewed every 100 ms)`);
  });

  it('SIGSTOP of an idle leader: after SIGCONT its own lease timer tells it the lease is lost before it touches anything', { timeout: TEST_TIMEOUT }, async (t: TestContext) => {
    const db = setup();
    await db.append(20);
    // A long subscription poll keeps the frozen leader asleep in its idle wait, so the lease timer
    // is the first thing that runs when it wakes up.
    const nodes = startNodes(db.path, { pollMs: 60_000 });
    const { leader, standbys } = await elected(nodes);
    await db.waitForCheckpoint(20, 1);

    const lease = db.lease();
    const stoppedAt = now();
    leader.kill('SIGSTOP');
    await db.append(10);
    const { node: next, line: leading } = await firstOf(standbys, ev('leading'), 'the new leader');
    assert.equal(leading.token, 2);
    await db.waitForCheckpoint(30, 2);

    const beforeWake = leader.lines.length;
    leader.kill('SIGCONT');
    const lost = await leader.waitFor(ev('lease-lost'), 'the lost lease', { from: beforeWake });
    assert.match(String(lost.reason), /not renewed within its ttl/);
    const lostIndex = leader.lines.indexOf(lost);
    await leader.waitFor((l) => l.ev === 'log' && /leadership lost/.test(String(l.msg)), 'the step-down log', { from: lostIndex });
    await leader.waitFor(ev('standby'), 'standing by again', { from: lostIndex });

    assert.deepEqual(positions(db.rowsOf(leader)), range(1, 20));
    assert.deepEqual(positions(db.rowsOf(next)), range(21, 30));
    assert.deepEqual(tokens(db.rowsOf(next)), [2]);
    assert.deepEqual(leader.find(ev('saved')).map((l) => l.position), [10, 20]);
    assert.equal(leader.find(ev('fenced')).length, 0, 'it stopped before trying to write');
    assert.deepEqual(db.checkpoint(), { position: 30, token: 2 });
    assert.equal(db.lease()?.holder, next.label);
    assert.ok((db.rowsOf(next)[0] as HandledRow).at > (lease?.expiresAt as number));

    t.diagnostic(`SIGSTOP (idle) → new leader holds the lease: ${ms(leading.t - stoppedAt)} (ttl 500 ms, renewed every 100 ms)`);
  });
});
