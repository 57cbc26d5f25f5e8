// Issue 15, item 3: every runner built on a backend publishes a status row that other processes (the
// CLI, a dashboard) can read: its kind, state and role (a denied standby included), position and, for
// automations, the to-do list.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { Automation, Subscription, silentLogger } from '../../src/index.js';
import type { RunnerStatusRow } from '../../src/adapter/index.js';
import { sqlite } from '../../src/sqlite/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { databasesAfterEach } from '../sqlite/helpers.js';

const files = databasesAfterEach('status-rows');
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function node(path: string, holderId: string) {
  const backend = sqlite({ path, leaderElection: { holderId, pollIntervalMs: 20, ttlMs: 2000 } });
  cleanups.push(() => backend.close());
  return backend;
}

const rowOf = (rows: RunnerStatusRow[], name: string, nodeId: string): RunnerStatusRow | undefined =>
  rows.find((row) => row.name === name && row.nodeId === nodeId);

describe('status rows', () => {
  it('a leader and a denied standby each publish theirs; a stop writes stopped and the standby then leads', async () => {
    const path = files.freshPath();
    const a = node(path, 'node-a');
    const b = node(path, 'node-b');
    await a.store.append('s', [{ type: 'Happened', data: {} }]);
    const make = (backend: ReturnType<typeof node>) =>
      new Subscription({ backend, name: 'projector', logger: silentLogger, pollIntervalMs: 20, statusHeartbeatMs: 50, handler: () => undefined });
    const first = make(a);
    cleanups.push(() => first.stop());
    await first.start();
    await waitUntil(async () => rowOf(await a.admin.runners.list(), 'projector', 'node-a')?.role === 'leader', { message: 'a leads' });
    const second = make(b);
    cleanups.push(() => second.stop());
    await second.start();
    await waitUntil(async () => rowOf(await a.admin.runners.list(), 'projector', 'node-b')?.role === 'denied-standby', { message: 'b is seen as a denied standby' });
    const leader = rowOf(await b.admin.runners.list(), 'projector', 'node-a');
    assert.equal(leader?.kind, 'subscription');
    assert.equal(leader?.state, 'running');
    await waitUntil(async () => rowOf(await a.admin.runners.list(), 'projector', 'node-a')?.position === 1, { message: "the leader's row carries its position" });

    await first.stop();
    const stopped = rowOf(await a.admin.runners.list(), 'projector', 'node-a');
    assert.equal(stopped?.state, 'stopped');
    assert.equal(stopped?.role, 'none');
    await waitUntil(async () => rowOf(await a.admin.runners.list(), 'projector', 'node-b')?.role === 'leader', { message: 'b leads after the handoff' });
  });

  it("an automation's row says so, with its to-do list", async () => {
    const backend = node(files.freshPath(), 'node-a');
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    await backend.store.append('s', [{ type: 'Happened', data: {} }]);
    const automation = new Automation({
      backend,
      name: 'mailer',
      logger: silentLogger,
      pollIntervalMs: 20,
      statusHeartbeatMs: 50,
      trigger: () => ({ key: 'k', payload: null }),
      execute: () => held,
    });
    cleanups.push(() => automation.stop());
    // After the test, the held side effect finishes first, so that the stop need not wait it out.
    cleanups.push(async () => release());
    await automation.start();
    await waitUntil(async () => rowOf(await backend.admin.runners.list(), 'mailer', 'node-a')?.work?.running === 1, { message: 'the running item shows' });
    const row = rowOf(await backend.admin.runners.list(), 'mailer', 'node-a');
    assert.equal(row?.kind, 'automation');
    assert.equal(row?.work?.pending, 1);
    assert.ok((row?.work?.oldestPendingMs ?? -1) >= 0, 'the oldest pending item has an age');
  });
});
