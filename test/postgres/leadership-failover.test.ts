// Leader election on PostgreSQL when the leader does not stop politely: killed (SIGKILL), frozen
// (SIGSTOP, then SIGCONT), or its lock connection terminated by the server. Each node is a real process
// (fixtures/leader-node.ts); the test judges from the `handled` table, the checkpoint and the nodes'
// JSON lines, and waits on those, never on sleeps.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import { assertRun, elected, ev, Harness, ms, now, positions, range, tokens } from './fixtures/harness.js';
import type { HandledRow, LeaderNode } from './fixtures/harness.js';
import { firstOf } from '../support/processes.js';
import type { Line } from './fixtures/protocol.js';

const TEST_TIMEOUT = 30_000;
const BATCH = 10;

let harness: Harness | undefined;
afterEach(async () => {
  await harness?.close();
  harness = undefined;
});
async function setup(): Promise<Harness> {
  harness = await Harness.create();
  return harness;
}

const by = (rows: readonly HandledRow[], node: LeaderNode): HandledRow[] => rows.filter((row) => row.node === node.label);
const statusAfter = (node: LeaderNode, from: number, predicate: (line: Line) => boolean): Line[] =>
  node.find((l) => l.ev === 'status' && predicate(l), from);

describe('Leadership failover across processes (PostgreSQL)', () => {
  it('SIGKILL of the leader mid-stream: a standby takes over from the checkpoint at once; only events above it are handled twice', { timeout: TEST_TIMEOUT }, async (t: TestContext) => {
    const db = await setup();
    const nodes = db.start(3, { handlerDelayMs: 3, lockPollMs: 50, batchSize: BATCH });
    const { leader, standbys, token } = await elected(nodes);
    const appending = db.append(60, 5);
    await db.waitForRows((rows) => rows.length >= 20, 'the leader is under way');

    const killedAt = now();
    leader.kill('SIGKILL');
    assert.equal((await leader.exited).signal, 'SIGKILL');
    await appending;
    const { node: next, line: leading } = await firstOf(standbys, ev('leading'), 'the new leader', { timeoutMs: 5_000 });
    const newToken = leading.token as number;
    assert.ok(newToken > token, 'the new leader holds a larger token');
    await db.waitForCheckpoint(60, newToken);

    const rows = await db.rows();
    const byOld = by(rows, leader);
    const byNew = by(rows, next);
    const k = byOld.length;
    assertRun(positions(byOld), 1, k, 'the dead leader handled a prefix, in order');
    assert.deepEqual(tokens(byOld), [token]);
    const claimed = await next.waitFor(ev('claimed'), 'the claim');
    const c = claimed.position as number;
    assert.equal(claimed.token, newToken);
    // The last save the dead leader printed may be older than the last one that committed (it can die
    // between the commit and the print), never newer.
    const lastPrintedSave = (leader.find(ev('saved')).pop()?.position as number | undefined) ?? 0;
    assert.ok(c >= lastPrintedSave && c <= k, `resumed at its checkpoint ${c} (printed ${lastPrintedSave}, handled up to ${k})`);
    assert.ok(k - c <= BATCH, 'at most the batch in flight is handled again');
    assertRun(positions(byNew), c + 1, 60, 'the new leader resumed right after the checkpoint, in order');
    assert.deepEqual(tokens(byNew), [newToken]);
    const twice = positions(byOld).filter((p) => byNew.some((row) => row.position === p));
    assertRun(twice, c + 1, k, 'duplicates are exactly the suffix the dead leader handled above its checkpoint');
    assert.deepEqual([...new Set(positions(rows))].sort((a, b) => a - b), range(1, 60), 'no event lost');
    assert.equal(rows.length, k + (60 - c));
    assert.deepEqual(await db.lease(), { token: newToken, holder: next.label });
    const third = standbys.find((node) => node !== next) as LeaderNode;
    assert.equal(by(rows, third).length, 0);
    assert.equal(third.find(ev('leading')).length, 0);

    const takeover = leading.t - killedAt;
    const firstHandled = await next.waitFor(ev('first-handled'), 'the first event of the new leader');
    t.diagnostic(`kill -9 → standby holds the lock: ${ms(takeover)} (lock poll 50 ms); → its first event handled: ${ms(firstHandled.t - killedAt)}`);
    assert.ok(takeover < 1000, `takeover after kill -9 took ${ms(takeover)}; the bound is 1 s`);
  });

  it('SIGSTOP of the leader mid-batch: a standby takes over after the session timeout; after SIGCONT the stale leader moves nothing and stands by', { timeout: TEST_TIMEOUT }, async (t: TestContext) => {
    const db = await setup();
    const sessionTimeoutMs = 2000;
    // The first leader parks at 25 (21..24 handled, checkpoint at 20) in a handler that ignores its
    // abort signal, then is stopped: it wakes up mid-batch believing it still leads.
    const nodes = db.start(2, { sessionTimeoutMs, lockPollMs: 100, batchSize: BATCH, stall: { position: 25, token: 1 } });
    const { leader, standbys, token } = await elected(nodes);
    assert.equal(token, 1);
    await db.append(40);
    await leader.waitFor(ev('stalled'), 'the stall at 25');
    assert.deepEqual(await db.checkpoint(), { position: 20, token });
    assertRun(positions(await db.rowsOf(leader)), 1, 24, 'handled before the freeze');

    const stoppedAt = now();
    leader.kill('SIGSTOP');
    const { node: next, line: leading } = await firstOf(standbys, ev('leading'), 'the new leader', { timeoutMs: sessionTimeoutMs + 5_000 });
    const newToken = leading.token as number;
    assert.ok(newToken > token);
    const claimed = await next.waitFor(ev('claimed'), 'the claim');
    assert.deepEqual([claimed.token, claimed.position], [newToken, 20], 'the new leader resumed from the frozen leader\'s checkpoint');
    await db.waitForCheckpoint(40, newToken);

    const beforeWake = leader.lines.length;
    leader.kill('SIGCONT');
    await db.thaw();
    // It finds out either way: its lease signal fires (the server closed the lock session), or its next
    // checkpoint write is rejected by the newer token.
    const noticed = await leader.waitFor((l) => l.ev === 'lease-lost' || l.ev === 'fenced', 'the lost lease or the fenced write', {
      from: beforeWake,
    });
    if (noticed.ev === 'fenced') assert.deepEqual([noticed.token, noticed.current], [token, newToken]);
    const noticedAt = leader.lines.indexOf(noticed);
    await leader.waitFor((l) => l.ev === 'log' && /leadership lost/.test(String(l.msg)), 'the step-down log', { from: noticedAt });
    await leader.waitFor((l) => l.ev === 'status' && l.state === 'standby' && l.lockDenied === true, 'standing by again', {
      from: noticedAt,
    });
    assert.equal(leader.find(ev('saved'), beforeWake).length, 0, 'no checkpoint write succeeded with the old token after the freeze');
    assert.deepEqual(await db.checkpoint(), { position: 40, token: newToken }, 'the stale leader did not move the checkpoint');

    await db.append(10);
    await db.waitForCheckpoint(50, newToken);
    const rows = await db.rows();
    const byOld = by(rows, leader);
    const byNew = by(rows, next);
    // The stale leader's handler did run for 25.. after the thaw (nothing can stop code that does not
    // look at its signal; that is why handlers get the token), but at most to the end of its batch.
    const k = byOld.length;
    assert.ok(k >= 25 && k <= 30, `the stale leader finished at most its batch (handled up to ${k})`);
    assertRun(positions(byOld), 1, k, 'the old leader');
    assert.deepEqual(tokens(byOld), [token]);
    assertRun(positions(byNew), 21, 50, 'the new leader');
    assert.deepEqual(tokens(byNew), [newToken]);
    assert.deepEqual(
      leader.find(ev('saved')).map((l) => l.position),
      [10, 20],
      'the stale leader saved nothing after it froze',
    );
    assert.equal(leader.find(ev('leading')).length, 1, 'and did not lead again');
    assert.deepEqual(await db.lease(), { token: newToken, holder: next.label });
    assert.equal(statusAfter(leader, noticedAt, (l) => l.state === 'leading').length, 0);

    const takeover = leading.t - stoppedAt;
    t.diagnostic(`SIGSTOP → standby holds the lock: ${ms(takeover)} (sessionTimeoutMs ${sessionTimeoutMs}, lock poll 100 ms); stale leader: ${noticed.ev}`);
    assert.ok(takeover < sessionTimeoutMs + 1500, `takeover of a frozen leader took ${ms(takeover)}; the bound is sessionTimeoutMs + a poll`);
  });

  it('pg_terminate_backend of the leader\'s lock connection: it stops processing at once, someone leads with a new token, no event is lost', { timeout: TEST_TIMEOUT }, async (t: TestContext) => {
    const db = await setup();
    const nodes = db.start(2, { handlerDelayMs: 3, lockPollMs: 50, batchSize: BATCH });
    const { leader, token } = await elected(nodes);
    const appending = db.append(60, 5);
    await db.waitForRows((rows) => rows.length >= 15, 'the leader is under way');

    const pid = await lockConnectionPid(db, leader, leader.find(ev('leading'))[0] as Line);
    const before = new Map(nodes.map((node) => [node, node.lines.length]));
    const terminatedAt = now();
    await db.terminate(pid);
    const lost = await leader.waitFor(ev('lease-lost'), 'the lost lease', { from: before.get(leader) as number, timeoutMs: 5_000 });
    const lostIndex = leader.lines.indexOf(lost);
    await appending;
    const { node: next, line: leading } = await firstOf(nodes, (l) => l.ev === 'leading' && (l.token as number) > token, 'the next leader', {
      from: before,
      timeoutMs: 5_000,
    });
    const newToken = leading.token as number;
    await db.waitForCheckpoint(60, newToken);

    const rows = await db.rows();
    const old = rows.filter((row) => row.token === token);
    const fresh = rows.filter((row) => row.token === newToken);
    assert.equal(old.length + fresh.length, rows.length, 'two leaderships, no third');
    const k = old.length;
    assertRun(positions(old), 1, k, 'the first leadership handled a prefix, in order');
    const claimed = await next.waitFor((l) => l.ev === 'claimed' && l.token === newToken, 'the claim');
    const c = claimed.position as number;
    assert.ok(c <= k && k - c <= BATCH, `resumed at ${c}; the first leadership handled up to ${k}`);
    assertRun(positions(fresh), c + 1, 60, 'the next leadership, in order, from the checkpoint');
    assert.deepEqual([...new Set(positions(rows))].sort((a, b) => a - b), range(1, 60), 'no event lost');
    assert.equal(leader.find((l) => l.ev === 'saving' && l.token === token, lostIndex).length, 0, 'no checkpoint write started with the lost token');
    // A write already in flight when the loss was heard may still land, but only before the new
    // leader's claim (after it, the token check refuses it): the claim includes it.
    for (const late of leader.find((l) => l.ev === 'saved' && l.token === token, lostIndex)) {
      assert.ok((late.position as number) <= c, `a late write with the lost token (position ${String(late.position)}) landed after the claim at ${c}`);
    }
    // It stopped at once: at most the handler in flight when the lease was lost finished after it.
    assert.ok(old.filter((row) => row.at > lost.t).length <= 1, 'the old leadership handled nothing after it heard of the loss');
    // It says what happened: standing by, or leading again with a new token.
    const after = statusAfter(leader, lostIndex, (l) => l.state === 'standby' || (l.state === 'leading' && (l.token as number) > token));
    assert.ok(after.length > 0, `${leader.label} reported standby or a new leadership\n${leader.output()}`);

    const reaction = lost.t - terminatedAt;
    t.diagnostic(`pg_terminate_backend → lease signal fired: ${ms(reaction)}; → ${next.label} leads with token ${newToken}: ${ms(leading.t - terminatedAt)}`);
    assert.ok(reaction < 1000, `the lease signal fired ${ms(reaction)} after the lock connection died`);
  });
});

/** The backend whose session holds `node`'s advisory lock: the pid it printed, checked against pg_locks. */
async function lockConnectionPid(db: Harness, node: LeaderNode, leading: Line): Promise<number> {
  const pid = leading.lockPid as number;
  const result = await db.schema.pool.query<{ application_name: string }>(
    `SELECT a.application_name FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
      WHERE l.locktype = 'advisory' AND l.granted AND a.pid = $1`,
    [pid],
  );
  assert.deepEqual(
    result.rows.map((row) => row.application_name),
    [`eskit-test-lock-${node.label}`],
    `backend ${pid} is ${node.label}'s lock connection and holds one advisory lock`,
  );
  return pid;
}
