// Leader election on PostgreSQL, end to end, with real processes: each node (fixtures/leader-node.ts)
// runs the same Subscription on PostgresEventStore + PostgresCheckpointStore + PostgresLockRegistry in its own
// process. The test appends events and judges from the `handled` table (one row per handler call, with
// the node and its fencing token), the checkpoint, and the JSON lines the nodes print. It waits on
// those, never on sleeps. Crashes, freezes and dropped connections are in leadership-failover.test.ts.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import { waitUntil } from '../../src/testing/wait.js';
import { assertRun, elected, ev, Harness, ms, now, positions, range, stopGracefully, tokens } from './fixtures/harness.js';
import type { LeaderNode } from './fixtures/harness.js';
import { firstOf } from '../support/processes.js';
import type { Line } from './fixtures/protocol.js';

const TEST_TIMEOUT = 30_000;

let harness: Harness | undefined;
afterEach(async () => {
  await harness?.close();
  harness = undefined;
});
async function setup(): Promise<Harness> {
  harness = await Harness.create();
  return harness;
}

describe('Leadership across processes (PostgreSQL)', () => {
  it('three processes: exactly one leads, the others stand by and say so; the leader handles every event once, in order', { timeout: TEST_TIMEOUT }, async () => {
    const db = await setup();
    const nodes = db.start(3);
    const { leader, standbys, token } = await elected(nodes);
    assert.equal(token, 1, 'the first holder of a fresh schema gets token 1');

    await db.append(60, 5);
    await db.waitForCheckpoint(60, token);
    const rows = await db.rows();
    assertRun(positions(rows), 1, 60, 'handled rows');
    assert.ok(rows.every((row) => row.node === leader.label && row.token === token), 'every event handled by the leader, with its token');

    for (const standby of standbys) {
      assert.equal(standby.find(ev('leading')).length, 0, `${standby.label} never led`);
      assert.equal(standby.find(ev('claimed')).length, 0, `${standby.label} never claimed the checkpoint`);
      assert.equal(standby.find(ev('standby')).length, 1, `${standby.label} was told once that it waits`);
      assert.equal(
        standby.find((l) => l.ev === 'log' && l.level === 'warn' && /another node holds its lock/.test(String(l.msg))).length,
        1,
        `${standby.label} logged that it stands by`,
      );
      const last = standby.find(ev('status')).pop();
      assert.deepEqual([last?.state, last?.lockDenied, last?.token], ['standby', true, null], `${standby.label}'s status says it is denied`);
    }
    assert.deepEqual(
      leader.find(ev('saved')).every((l) => l.token === token),
      true,
      'every checkpoint write carried the token',
    );

    assert.deepEqual(await db.lease(), { token, holder: leader.label }, 'the lease row names the leader');

    // Standbys first, so that none of them takes over while the test shuts down.
    for (const node of [...standbys, leader]) await stopGracefully(node);
    assert.deepEqual(positions(await db.rows()), range(1, 60));
    assert.deepEqual(await db.checkpoint(), { position: 60, token });
    const final = leader.find(ev('status')).pop();
    assert.equal(final?.state, 'stopped');
  });

  it('graceful handoff: SIGTERM mid-stream → the leader drains and checkpoints, a standby goes on; every event exactly once, in order', { timeout: TEST_TIMEOUT }, async (t: TestContext) => {
    const db = await setup();
    // A lock poll far longer than a handoff: only the release notification can explain a fast one.
    const nodes = db.start(3, { handlerDelayMs: 2, lockPollMs: 5_000 });
    const { leader, standbys, token } = await elected(nodes);
    await db.append(50, 5);
    await db.waitForRows((rows) => rows.length >= 20, 'the leader is under way');

    const termAt = now();
    leader.kill('SIGTERM');
    const appending = db.append(100, 5); // lands before, during and after the handoff
    const { node: next, line: leading } = await firstOf(standbys, ev('leading'), 'the new leader');
    await stopGracefully(leader, true);
    await appending;
    assert.ok((leading.token as number) > token, 'the new leader holds a larger token');
    await db.waitForCheckpoint(150, leading.token as number);

    const rows = await db.rows();
    assertRun(positions(rows), 1, 150, 'every event handled exactly once, in global order');
    const byOld = rows.filter((row) => row.node === leader.label);
    const byNew = rows.filter((row) => row.node === next.label);
    const handedOverAt = byOld.length;
    assert.ok(handedOverAt >= 20, 'the old leader handled what it had before SIGTERM');
    assertRun(positions(byOld), 1, handedOverAt, 'the old leader');
    assertRun(positions(byNew), handedOverAt + 1, 150, 'the new leader');
    assert.deepEqual(tokens(byOld), [token]);
    assert.deepEqual(tokens(byNew), [leading.token]);
    const lastSave = leader.find(ev('saved')).pop();
    assert.equal(lastSave?.position, handedOverAt, 'the old leader checkpointed everything it handled before releasing');
    const claimed = await next.waitFor(ev('claimed'), 'the claim');
    assert.deepEqual([claimed.token, claimed.position], [leading.token, handedOverAt], 'the new leader resumed exactly there');
    const released = leader.find(ev('releasing'))[0];
    assert.ok(released && leader.find(ev('released')).length === 1, `the old leader released its lease\n${leader.output()}`);
    assert.ok(leader.lines.indexOf(lastSave as Line) < leader.lines.indexOf(released), 'it checkpointed before it released');
    assert.equal(leader.find(ev('lease-lost')).length, 0, 'a release is not reported as a lost lease');
    assert.deepEqual(await db.lease(), { token: leading.token, holder: next.label });
    const third = standbys.find((node) => node !== next) as LeaderNode;
    assert.equal(third.find(ev('leading')).length, 0);
    assert.equal(rows.filter((row) => row.node === third.label).length, 0);

    const firstHandled = await next.waitFor(ev('first-handled'), 'the first event of the new leader');
    const stopped = leader.find(ev('stopped'))[0] as { t: number };
    const handoff = leading.t - released.t;
    t.diagnostic(`graceful handoff, release called → standby holds the lock: ${ms(handoff)}`);
    t.diagnostic(`release → standby handled its first event: ${ms(firstHandled.t - released.t)} (holds → claimed ${ms(claimed.t - leading.t)}, claimed → first handled ${ms(firstHandled.t - claimed.t)})`);
    t.diagnostic(`old leader printed "stopped" → standby's first handled event: ${ms(firstHandled.t - stopped.t)} (negative: the standby was already at work)`);
    t.diagnostic(`SIGTERM → standby's first handled event: ${ms(firstHandled.t - termAt)}`);
    assert.ok(handoff < 250, `handoff took ${ms(handoff)}; a release must wake a standby at once, not at its next poll (5 s)`);
  });

  it('a lost notification delays an event, never loses it: with notifications hidden, polling delivers every event', { timeout: TEST_TIMEOUT }, async (t: TestContext) => {
    const db = await setup();
    const [node] = db.start(1, { notifications: false, pollMs: 100 }) as [LeaderNode];
    const { token } = await elected([node]);
    const appendedAt = now();
    await db.append(5);
    await db.waitForCheckpoint(5, token);
    const first = (await db.rows())[0];
    for (let i = 0; i < 5; i++) await db.append(3, 3);
    await db.waitForCheckpoint(20, token);
    const rows = await db.rows();
    assertRun(positions(rows), 1, 20, 'every event once, in order');
    assert.deepEqual(tokens(rows), [token]);
    t.diagnostic(`append → handled with polling only (poll 100 ms): ${ms((first?.at ?? NaN) - appendedAt)}`);
    await stopGracefully(node);
  });

  it('a lost notification connection: the store\'s LISTEN backend is terminated; every later event is still delivered, once, in order', { timeout: TEST_TIMEOUT }, async (t: TestContext) => {
    const db = await setup();
    const [node] = db.start(1, { pollMs: 100 }) as [LeaderNode];
    const { token } = await elected([node]);
    await db.append(10, 5);
    await db.waitForCheckpoint(10, token);

    const pid = await waitUntil(() => listenerPid(db, node), { timeoutMs: 5_000, message: `the LISTEN connection of ${node.label}` });
    const before = node.lines.length;
    await db.terminate(pid);
    const appendedAt = now();
    await db.append(5, 5); // most likely while nobody listens
    await db.waitForCheckpoint(15, token);
    const rows = await db.rows();
    t.diagnostic(`append right after the LISTEN backend died → handled: ${ms((rows[10]?.at ?? NaN) - appendedAt)}`);
    await node.waitFor((l) => l.ev === 'log' && l.level === 'warn' && /LISTEN connection for appends failed/.test(String(l.msg)), 'the warning', {
      from: before,
    });
    // The store listens again on a new connection; appends from then on are announced again.
    const again = await waitUntil(async () => {
      const next = await listenerPid(db, node);
      return next !== undefined && next !== pid ? next : undefined;
    }, { timeoutMs: 5_000, message: 'a new LISTEN connection' });
    assert.notEqual(again, pid);
    for (let i = 0; i < 5; i++) await db.append(2, 2);
    await db.waitForCheckpoint(25, token);
    assertRun(positions(await db.rows()), 1, 25, 'every event once, in order');
    assert.deepEqual(tokens(await db.rows()), [token]);
    assert.equal(node.find(ev('lease-lost')).length, 0, 'the notification connection is not the lock connection');
    await stopGracefully(node);
  });

  it('backwards compatible: without leaderLock one process handles every event once, with unfenced checkpoints', { timeout: TEST_TIMEOUT }, async () => {
    const db = await setup();
    await db.append(10, 5);
    const [node] = db.start(1, { leader: false }) as [LeaderNode];
    await node.waitFor((l) => l.ev === 'status' && l.state === 'leading', 'leading');
    await db.append(20, 5);
    await db.waitForCheckpoint(30, 0);
    const rows = await db.rows();
    assertRun(positions(rows), 1, 30, 'every event once, in order');
    assert.deepEqual(tokens(rows), [null], 'the handler saw no token');
    assert.equal(node.find(ev('leading')).length, 0, 'no lock was taken');
    assert.equal(node.find(ev('claimed')).length, 0, 'no claim without leader election');
    assert.ok(node.find(ev('saved')).every((l) => l.token === null), 'unconditional checkpoint writes');
    assert.equal(node.find((l) => l.ev === 'status' && l.lockDenied === true).length, 0);
    await stopGracefully(node);
    assert.deepEqual(await db.checkpoint(), { position: 30, token: 0 });
  });
});

/** The backend of `node`'s store that LISTENs for appends (identified by the pool's application_name). */
async function listenerPid(db: Harness, node: LeaderNode): Promise<number | undefined> {
  const result = await db.schema.pool.query<{ pid: number }>(
    `SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'LISTEN "eskit_appended_%'`,
    [`eskit-test-${node.label}`],
  );
  return result.rows.length === 1 ? result.rows[0]?.pid : undefined;
}
