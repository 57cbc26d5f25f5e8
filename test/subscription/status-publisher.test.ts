// StatusPublisher: what a runner uses to keep its status row current (on every change and on a
// heartbeat), one write at a time, never failing the runner, and marking the row stopped at the end.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Logger } from '../../src/core/logger.js';
import type { RunnerStatusRow, RunnerStatusStore, RunnerStatusUpdate } from '../../src/core/runner-status.js';
import { MemoryRunnerStatusStore } from '../../src/memory/index.js';
import { StatusPublisher } from '../../src/subscription/status-publisher.js';
import type { StatusSnapshot } from '../../src/subscription/status-publisher.js';
import { waitUntil } from '../../src/testing/wait.js';

/** A memory store that records each write, can be held at a gate, and can be made to fail. */
class RecordingStore implements RunnerStatusStore {
  readonly inner = new MemoryRunnerStatusStore();
  readonly writes: RunnerStatusUpdate[] = [];
  inFlight = 0;
  maxInFlight = 0;
  failNext = 0;
  gate: Promise<void> | undefined;
  prunes: number[] = [];

  async publish(update: RunnerStatusUpdate): Promise<void> {
    this.inFlight += 1;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    this.writes.push(update);
    try {
      await this.gate;
      if (this.failNext > 0) {
        this.failNext -= 1;
        throw new Error('database down');
      }
      await this.inner.publish(update);
    } finally {
      this.inFlight -= 1;
    }
  }

  list(): Promise<RunnerStatusRow[]> {
    return this.inner.list();
  }

  async prune(olderThanMs: number): Promise<number> {
    this.prunes.push(olderThanMs);
    return this.inner.prune(olderThanMs);
  }

  async row(name: string): Promise<RunnerStatusRow | undefined> {
    return (await this.inner.list()).find((row) => row.name === name);
  }
}

function recordingLogger(): Logger & { lines: Array<{ level: string; message: string }> } {
  const lines: Array<{ level: string; message: string }> = [];
  const at = (level: string) => (_fields: Record<string, unknown>, message: string) => void lines.push({ level, message });
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

function gate(): { promise: Promise<void>; open(): void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

const running: StatusSnapshot = { state: 'running', role: 'standby', fencingToken: undefined, position: undefined };

describe('StatusPublisher', { timeout: 30_000 }, () => {
  it('publishes at start, on every change, and on a heartbeat when nothing changes', async () => {
    const store = new RecordingStore();
    let snapshot: StatusSnapshot = running;
    const publisher = new StatusPublisher({ store, name: 'mailer', kind: 'automation', snapshot: () => snapshot, heartbeatMs: 20 });
    publisher.start();
    await waitUntil(() => store.row('mailer'), { message: 'the first row' });
    assert.equal((await store.row('mailer'))?.role, 'standby');

    snapshot = { state: 'running', role: 'leader', fencingToken: 7, position: 3, work: { pending: 2, running: 1, hung: 0, retrying: 1, unrecorded: 0, oldestPendingMs: 40 } };
    publisher.changed();
    const leader = await waitUntil(async () => {
      const row = await store.row('mailer');
      return row?.role === 'leader' ? row : undefined;
    }, { message: 'the change to be published' });
    assert.equal(leader.fencingToken, 7);
    assert.deepEqual(leader.work, { pending: 2, running: 1, hung: 0, retrying: 1, unrecorded: 0, oldestPendingMs: 40 });
    assert.equal(leader.heartbeatMs, 20);

    const before = store.writes.length;
    await waitUntil(() => store.writes.length >= before + 3, { message: 'heartbeats without changes' });
    await publisher.stop();
  });

  it('writes one at a time: changes during a slow write become one more write', async () => {
    const store = new RecordingStore();
    const held = gate();
    store.gate = held.promise;
    const publisher = new StatusPublisher({ store, name: 'slow', kind: 'subscription', snapshot: () => running, heartbeatMs: 60_000 });
    publisher.start();
    await waitUntil(() => store.writes.length === 1, { message: 'the first write to start' });
    for (let i = 0; i < 5; i++) publisher.changed();
    assert.equal(store.writes.length, 1, 'nothing more while a write is in flight');
    held.open();
    await publisher.flush();
    assert.equal(store.writes.length, 2, 'the five changes made one more write');
    assert.equal(store.maxInFlight, 1);
    await publisher.stop();
    assert.equal(store.maxInFlight, 1, 'the final write too waited for the one before');
  });

  it('logs a failed write once, not fatal, and the next heartbeat tries again', async () => {
    const store = new RecordingStore();
    store.failNext = 3;
    const logger = recordingLogger();
    const publisher = new StatusPublisher({ store, name: 'flaky', kind: 'view', snapshot: () => running, heartbeatMs: 10, logger });
    publisher.start();
    await waitUntil(() => store.row('flaky'), { message: 'a write to succeed after the failures' });
    assert.equal(logger.lines.filter((line) => line.level === 'warn').length, 1, JSON.stringify(logger.lines));
    assert.match(logger.lines.find((line) => line.level === 'warn')?.message ?? '', /status row of "flaky".*database down/);
    assert.ok(logger.lines.some((line) => line.level === 'info' && /published again/.test(line.message)));
    await publisher.stop();
  });

  it('stop() marks the row stopped (failed when the runner failed), and nothing is written after it', async () => {
    const store = new RecordingStore();
    let snapshot: StatusSnapshot = { state: 'running', role: 'leader', fencingToken: 1, position: 4 };
    const publisher = new StatusPublisher({ store, name: 'sub', kind: 'subscription', snapshot: () => snapshot, heartbeatMs: 10 });
    publisher.start();
    await waitUntil(() => store.row('sub'));
    await publisher.stop();
    const row = await store.row('sub');
    assert.deepEqual([row?.state, row?.role, row?.position], ['stopped', 'none', 4]);
    const subWrites = (): number => store.writes.filter((write) => write.name === 'sub').length;
    const writes = subWrites();
    publisher.changed();
    await publisher.flush();
    // Another publisher's heartbeats measure time passing: the stopped one's timer must not fire.
    const other = new StatusPublisher({ store, name: 'clock', kind: 'subscription', snapshot: () => running, heartbeatMs: 10 });
    other.start();
    await waitUntil(() => store.writes.filter((write) => write.name === 'clock').length >= 5);
    await other.stop();
    assert.equal(subWrites(), writes, 'no write after stop()');
    await publisher.stop();

    snapshot = { state: 'failed', role: 'none', fencingToken: 1, position: 4, lastError: 'handler failed 5 times' };
    const failing = new StatusPublisher({ store, name: 'sub', kind: 'subscription', snapshot: () => snapshot, heartbeatMs: 10 });
    failing.start();
    await failing.stop();
    const failed = await store.row('sub');
    assert.deepEqual([failed?.state, failed?.lastError], ['failed', 'handler failed 5 times']);
  });

  it('stop() is bounded when the database does not answer', async () => {
    const store = new RecordingStore();
    store.gate = new Promise(() => undefined);
    const publisher = new StatusPublisher({ store, name: 'stuck', kind: 'subscription', snapshot: () => running, heartbeatMs: 60_000, stopTimeoutMs: 100 });
    publisher.start();
    await waitUntil(() => store.writes.length === 1);
    const started = performance.now();
    await publisher.stop();
    const took = performance.now() - started;
    assert.ok(took < 2000, `stop took ${took} ms`);
  });

  it('its heartbeat timer does not keep the process alive', async () => {
    const timers = (): number => process.getActiveResourcesInfo().filter((resource) => resource === 'Timeout').length;
    const store = new RecordingStore();
    const publisher = new StatusPublisher({ store, name: 'idle', kind: 'subscription', snapshot: () => running, heartbeatMs: 60_000 });
    const before = timers();
    try {
      publisher.start();
      await publisher.flush();
      assert.equal(timers(), before);
    } finally {
      await publisher.stop();
    }
  });

  it('handled() counts events and stamps the last one; the store turns its age into the database time', async () => {
    const store = new RecordingStore();
    const publisher = new StatusPublisher({ store, name: 'counter', kind: 'subscription', snapshot: () => running, heartbeatMs: 60_000 });
    publisher.start();
    publisher.handled(5);
    publisher.handled(9, 4);
    publisher.changed();
    await publisher.flush();
    const row = await store.row('counter');
    assert.equal(row?.handled, 5);
    assert.equal(row?.lastEvent?.position, 9);
    const at = row?.lastEvent?.at.getTime() ?? 0;
    assert.ok(at <= (row?.heartbeatAt.getTime() ?? 0) && at > Date.now() - 5000, `${row?.lastEvent?.at.toISOString()}`);
    await publisher.stop();
  });

  it('prunes rows older than its retention at start; node ids differ per live publisher of a name', async () => {
    const store = new RecordingStore();
    const a = new StatusPublisher({ store, name: 'twin', kind: 'subscription', snapshot: () => running, retentionMs: 3_600_000 });
    const b = new StatusPublisher({ store, name: 'twin', kind: 'subscription', snapshot: () => running });
    const c = new StatusPublisher({ store, name: 'twin', kind: 'subscription', snapshot: () => running, nodeId: 'node-c' });
    a.start();
    b.start();
    c.start();
    await Promise.all([a.flush(), b.flush(), c.flush()]);
    assert.notEqual(a.nodeId, b.nodeId);
    assert.equal(c.nodeId, 'node-c');
    assert.equal((await store.list()).filter((row) => row.name === 'twin').length, 3);
    assert.ok(store.prunes.includes(3_600_000));
    await Promise.all([a.stop(), b.stop(), c.stop()]);
  });
});
