// Routine partition moves (start, a graceful stop) on PostgreSQL say nothing at warning level: a node
// stands by for many partitions, and a move passes through many balance checks in a few ms.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { postgres } from '../../src/postgres/index.js';
import { Subscription } from '../../src/subscription/subscription.js';
import { waitUntil } from '../../src/testing/wait.js';
import { createTestSchema } from '../support/postgres.js';

test('4 nodes sharing 16 partitions start and hand over on a graceful stop without warnings (default settings)', { timeout: 60_000 }, async () => {
  const schema = await createTestSchema({ create: false });
  const warnings: string[] = [];
  const logger = (node: string) => ({ debug() {}, info() {}, warn: (_f: unknown, msg: string) => void warnings.push(`${node}: ${msg}`), error: (_f: unknown, msg: string) => void warnings.push(`${node}: ${msg}`) });
  const backends = ['a', 'b', 'c', 'd'].map((id) =>
    postgres({ connectionString: schema.connectionString, schema: schema.name, logger: logger(id), leaderElection: { holderId: `${id}@${schema.name}`, logger: logger(id) } }));
  try {
    await backends[0]!.migrate();
    const subs = backends.map((backend, i) => new Subscription({ backend, name: 'quiet', partitions: 16, logger: logger('abcd'[i]!), handler: () => undefined }));
    const leading = async (s: Subscription) => ((await s.status()).partitions ?? []).filter((p) => p.state === 'leading').length;
    for (const s of subs) await s.start();
    await waitUntil(async () => (await Promise.all(subs.map(leading))).every((c) => c === 4), { timeoutMs: 20_000 });
    await subs[3]!.stop();
    await waitUntil(async () => (await Promise.all(subs.slice(0, 3).map(leading))).reduce((a, b) => a + b) === 16, { timeoutMs: 20_000 });
    await Promise.all(subs.map((s) => s.stop()));
    assert.deepEqual(warnings, [], `${warnings.length} warnings for routine moves`);
  } finally {
    await Promise.all(backends.map((b) => b.close()));
    await schema.drop();
  }
});
