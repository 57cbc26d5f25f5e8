// Issue 13, item 4: how many side effects run twice when a busy leader is SIGKILLed. Nodes are child
// processes (fixtures/automation-node.ts) on PostgreSQL; the test appends ~300 events/s while it kills
// the leader twice, and counts the items that ran on the killed node and again on another. With the
// record window at 8, no more than 8 may run twice per kill (the window counts running items too);
// with the side effect in the transaction that records its completion (inTransaction), none may.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { PostgresEventStore } from '../../src/postgres/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import type { Line, NodeConfig } from './fixtures/automation-node.js';
import { ChildNode, killAll } from '../support/processes.js';
import { createTestSchema } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';

const NODE_SCRIPT = fileURLToPath(new URL('./fixtures/automation-node.ts', import.meta.url));
const NAME = 'kill-count';
const WAIT = { timeoutMs: 20_000 };

const started: Array<ChildNode<Line>> = [];
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  await killAll(started.splice(0));
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Appends one event about every 1000/rate ms until stopped, paced on a monotonic clock. */
function steadyLoad(store: PostgresEventStore, rate: number): { stop(): Promise<number> } {
  let running = true;
  let appended = 0;
  const done = (async () => {
    const begin = performance.now();
    while (running) {
      appended += 1;
      await store.append(`order-${appended}`, [{ type: 'Happened', data: { n: appended } }]);
      const due = begin + (appended * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    }
    return appended;
  })();
  return {
    async stop() {
      running = false;
      return done;
    },
  };
}

async function sideEffects(schema: TestSchema): Promise<Array<{ item: number; node: string }>> {
  const result = await schema.pool.query<{ item: string; node: string }>(`SELECT item, node FROM "${schema.name}".side_effects ORDER BY id`);
  return result.rows.map((row) => ({ item: Number(row.item), node: row.node }));
}

async function killBusyLeaders(transactional: boolean): Promise<number[]> {
  const schema = await createTestSchema({ create: false, poolSize: 6 });
  cleanups.push(() => schema.drop());
  const store = new PostgresEventStore({ pool: schema.pool, schema: schema.name });
  cleanups.push(() => store.close());
  await store.migrate();
  await schema.pool.query(`
    CREATE TABLE "${schema.name}".side_effects (id bigserial PRIMARY KEY, item bigint NOT NULL, node text NOT NULL, attempt int NOT NULL);
    CREATE TABLE "${schema.name}".control (key text PRIMARY KEY);
  `);
  const start = (node: string): ChildNode<Line> => {
    const config: NodeConfig = {
      backend: { kind: 'postgres', url: schema.connectionString, schema: schema.name },
      node,
      name: NAME,
      completions: true,
      transactional,
      recordWindow: 8,
      concurrency: 8,
      keys: 16,
      delayMs: 2,
      pollMs: 20,
      leader: { ttlMs: 600, renewIntervalMs: 100, lockPollMs: 20 },
    };
    const child = new ChildNode<Line>(node, NODE_SCRIPT, [JSON.stringify(config)]);
    started.push(child);
    return child;
  };

  let leader = start('n1');
  await leader.waitFor((l) => l.ev === 'leading', 'n1 leading');
  let standby = start('n2');
  await standby.waitFor((l) => l.ev === 'standby', 'n2 standing by');
  const load = steadyLoad(store, 300);
  const killed: string[] = [];
  try {
    for (let kill = 0; kill < 2; kill++) {
      const before = (await sideEffects(schema)).length;
      await waitUntil(async () => (await sideEffects(schema)).length >= before + 150, { ...WAIT, message: `the leader ${leader.label} is busy` });
      leader.kill('SIGKILL');
      assert.equal((await leader.exited).signal, 'SIGKILL');
      killed.push(leader.label);
      await standby.waitFor((l) => l.ev === 'leading', `${standby.label} takes over`);
      leader = standby;
      standby = start(`n${kill + 3}`);
      await standby.waitFor((l) => l.ev === 'standby', `${standby.label} standing by`);
    }
  } finally {
    const head = await load.stop();
    await waitUntil(
      async () => {
        const row = await schema.pool.query<{ position: string }>(`SELECT position FROM "${schema.name}".checkpoints WHERE name = $1`, [NAME]);
        return Number(row.rows[0]?.position ?? 0) >= head;
      },
      { ...WAIT, message: 'the last leader catches up' },
    );
  }
  const runs = new Map<number, string[]>();
  for (const { item, node } of await sideEffects(schema)) runs.set(item, [...(runs.get(item) ?? []), node]);
  const head = await store.headPosition();
  for (let item = 1; item <= head; item++) assert.ok((runs.get(item)?.length ?? 0) >= 1, `item ${item} ran`);
  // Per kill: the items the killed node ran that another node ran again after it.
  return killed.map((node) => [...runs.values()].filter((by) => by.includes(node) && by.indexOf(node) < by.length - 1).length);
}

describe('Side effects run twice after a SIGKILL of a busy leader (PostgreSQL, ~300 events/s, concurrency 8)', { timeout: 120_000 }, () => {
  it('at most the record window (8) per kill', { timeout: 60_000 }, async () => {
    const twice = await killBusyLeaders(false);
    for (const count of twice) assert.ok(count <= 8, `${count} side effects ran twice after one kill (${twice.join(', ')})`);
  });

  it('none with the side effect in the transaction that records its completion (inTransaction)', { timeout: 60_000 }, async () => {
    const twice = await killBusyLeaders(true);
    assert.deepEqual(twice, [0, 0]);
  });
});
