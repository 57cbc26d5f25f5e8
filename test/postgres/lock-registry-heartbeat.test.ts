/**
 * PostgresLockRegistry's heartbeats and self-fencing with a busy event loop. The server ends a lock session
 * that sends nothing for `sessionTimeoutMs`; the holder gives its leases up by itself when a heartbeat
 * goes unanswered for half of it, or when it sent nothing for all of it (it was stalled). A loop that
 * is busy in bursts delays the heartbeats and the reading of their answers, but a node that keeps
 * sending is healthy, and must keep its lease; one that is stalled past the timeout must not.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { lockKey } from '../../src/postgres/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { capturingLogger, cleanUp, heldKeys, pidOf, registry, said, standBy, testSchema } from './lock-helpers.js';

afterEach(cleanUp);

/** Keeps the event loop busy (no timer, no I/O callback runs) for `ms`. */
function busy(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // Busy on purpose: this is the load under test.
  }
}

/** Resolves in the check phase of the event loop, after its timers and I/O callbacks. */
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('PostgresLockRegistry: heartbeats of a busy holder', () => {
  it('a healthy holder whose event loop is busy in bursts of half the session timeout keeps its lease, its session and the lock', { timeout: 20_000 }, async () => {
    const sessionTimeoutMs = 600;
    const burstMs = sessionTimeoutMs / 2;
    const schema = await testSchema();
    const logger = capturingLogger();
    const holder = registry(schema, { sessionTimeoutMs, logger });
    const standbyRegistry = registry(schema, { pollIntervalMs: 50 });
    const lease = await holder.acquire('x');
    const pid = await pidOf(holder);
    const standby = await standBy(standbyRegistry, 'x');
    const started = performance.now();
    let bursts = 0;
    // Several session timeouts of bursts, each followed by one turn of the event loop (timers, I/O).
    // Bursts run in the check phase (setImmediate): two of them never run in one turn.
    await turn();
    while (performance.now() - started < sessionTimeoutMs * 4 && !lease.signal.aborted && standby.state.lease === undefined) {
      busy(burstMs);
      bursts++;
      await turn();
    }
    const lost = said(logger.lines, 'error', /Lost the lease/)[0]?.message;
    assert.equal(lease.signal.aborted, false, `the lease was lost after ${bursts} bursts: ${lost}`);
    assert.equal(standby.state.lease, undefined, `the standby took over after ${bursts} bursts`);
    assert.equal(holder.connectionPid, pid, 'the same session');
    assert.deepEqual(await heldKeys(schema, pid), [lockKey('x', schema.name)], 'the server still has the holder session holding the lock');
    await lease.release();
    assert.ok((await standby.settled).fencingToken > lease.fencingToken);
  });

  it('a holder whose event loop was blocked longer than the session timeout gives its lease up, and the standby takes over', { timeout: 20_000 }, async () => {
    const sessionTimeoutMs = 600;
    const schema = await testSchema();
    const holder = registry(schema, { sessionTimeoutMs });
    const standbyRegistry = registry(schema, { pollIntervalMs: 50 });
    const lease = await holder.acquire('x');
    const standby = await standBy(standbyRegistry, 'x');
    // A freeze as the holder sees it: not a single callback for longer than the timeout.
    busy(sessionTimeoutMs * 1.5);
    await waitUntil(() => lease.signal.aborted, { message: 'the holder to give its lease up' });
    const taken = await standby.settled;
    assert.ok(taken.fencingToken > lease.fencingToken);
  });
});
