// `eskit status` tells an automation from a subscription only by what the database holds: completion
// records and dead letters of the execute and trigger stages. Once an automation's dead-letter queue
// is empty (here: its one letter redriven, and no completion store), nothing says which it is, and
// status must not call it a subscription.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { Automation } from '../../src/automation/index.js';
import type { StatusReport } from '../../src/cli/commands/status.js';
import { silentLogger } from '../../src/core/logger.js';
import { EventRegistry } from '../../src/core/registry.js';
import { SqliteCheckpointStore, SqliteDeadLetterStore, SqliteEventStore } from '../../src/sqlite/index.js';
import { Subscription } from '../../src/subscription/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { cli, parseJson } from './helpers.js';

type OrderEvent = { type: 'OrderPlaced'; data: { orderId: string } };

it('status: an automation whose dead letters were all redriven is not shown as a subscription', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'eskit-status-kind-'));
  const path = join(dir, 'app.db');
  const store = new SqliteEventStore<OrderEvent>({ path, registry: new EventRegistry<OrderEvent>({ OrderPlaced: {} }) });
  const checkpoints = new SqliteCheckpointStore({ store });
  const deadLetters = new SqliteDeadLetterStore({ store });
  const stops: Array<() => Promise<void>> = [];
  try {
    await store.append('order-1', [{ type: 'OrderPlaced', data: { orderId: 'order-1' } }]);
    const mailer = { failing: true, sent: 0 };
    const automation = new Automation<OrderEvent, null>({
      name: 'mailer',
      store,
      checkpoints,
      deadLetters,
      trigger: () => ({ key: 'k', payload: null }),
      execute: () => {
        if (mailer.failing) throw new Error('smtp server down');
        mailer.sent++;
      },
      retry: { maxAttempts: 1 },
      logger: silentLogger,
      pollIntervalMs: 20,
    });
    await automation.start();
    stops.push(() => automation.stop());
    const logger = new Subscription<OrderEvent>({ name: 'audit', store, checkpoints, handler: () => undefined, logger: silentLogger, pollIntervalMs: 20 });
    await logger.start();
    stops.push(() => logger.stop());
    await waitUntil(async () => (await checkpoints.load('mailer')) === 1 && (await checkpoints.load('audit')) === 1 && (await deadLetters.count({ source: 'mailer' })) === 1, {
      timeoutMs: 10_000,
      message: 'the mailer to dead-letter its item and both to reach the head',
    });

    const kinds = async (): Promise<Record<string, string>> => {
      const report = parseJson<StatusReport>(await cli(['status', '--json', '--db', `sqlite:${path}`]));
      return Object.fromEntries(report.entries.map((entry) => [entry.name, entry.kind]));
    };
    assert.equal((await kinds()).mailer, 'automation', 'told apart by its execute-stage dead letter');

    mailer.failing = false;
    await deadLetters.redrive({ source: 'mailer' });
    await waitUntil(async () => mailer.sent === 1 && (await deadLetters.count({ source: 'mailer' })) === 0, { timeoutMs: 10_000, message: 'the redrive to run and settle' });

    const after = await kinds();
    assert.equal(after.mailer, 'unknown', 'no trace left of which it is: not "subscription"');
    assert.equal(after.audit, 'unknown', 'a subscription without dead letters cannot be told from an automation either');

    const table = await cli(['status', '--db', `sqlite:${path}`]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^mailer\s+subscription or automation\s+1\s+0\s/m);
    assert.match(table.stdout, /^subscription or automation: /m, 'a note says why');
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
