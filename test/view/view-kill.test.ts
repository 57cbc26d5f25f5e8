// Exactly once under SIGKILL: a process running the view is killed while evolve is in the middle of a
// batch (its transaction open, with rows already written for the earlier events of the batch). After
// several such kills and a final run, the view must hold every event exactly once.
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, it } from 'node:test';
import { PostgresEventStore } from '../../src/postgres/index.js';
import { SqliteEventStore } from '../../src/sqlite/index.js';
import { ChildNode, killAll } from '../support/processes.js';
import { removeDatabase, tempDatabasePath } from '../sqlite/helpers.js';
import { createTestSchema } from '../support/postgres.js';
import { appendMany, expectedPgCounter, expectedSqliteCounter, readPgCounter, readSqliteCounter } from './helpers.js';
import type { CounterState, TestEvent } from './helpers.js';

interface Line {
  ev: 'blocking' | 'caught-up';
  position: number;
}

const NODE = fileURLToPath(new URL('./fixtures/view-node.ts', import.meta.url));
const BATCH = 50;
/** Which event of the view's types to hang on in each round: each lies inside a batch, not at its start. */
const BLOCK_AT = [125, 180, 230];

const nodes: ChildNode<Line>[] = [];
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  await killAll(nodes.splice(0));
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface World {
  backend: 'sqlite' | 'postgres';
  target: string;
  /** The view's checkpoint, what it holds, and what it must hold at that checkpoint. */
  read(): Promise<{ checkpoint: number; actual: CounterState; expected: CounterState }>;
  /** The position of the k-th event (1-based) of the view's types. */
  relevant(k: number): Promise<number>;
}

async function killAndRecover(world: World): Promise<void> {
  let lastCheckpoint = 0;
  for (const k of BLOCK_AT) {
    const blockAt = await world.relevant(k);
    const node = new ChildNode<Line>(`view node (block at ${blockAt})`, NODE, [world.backend, world.target, String(blockAt), String(BATCH)]);
    nodes.push(node);
    await node.waitFor((line) => line.ev === 'blocking' && line.position === blockAt, `evolve to reach position ${blockAt}`, { timeoutMs: 30_000 });
    node.kill('SIGKILL');
    const exit = await node.exited;
    assert.equal(exit.signal, 'SIGKILL');
    const { checkpoint, actual, expected } = await world.read();
    // The batch holding blockAt had applied earlier events (in the killed transaction): none of them stayed.
    assert.ok(checkpoint < (await world.relevant(k - 1)), `round ${k}: the kill landed inside a batch (checkpoint ${checkpoint})`);
    assert.ok(checkpoint > lastCheckpoint, `round ${k}: the view made progress before the kill`);
    assert.deepEqual(actual, expected, `round ${k}: the view holds exactly the events up to its checkpoint ${checkpoint}`);
    lastCheckpoint = checkpoint;
  }
  const node = new ChildNode<Line>('view node (to the end)', NODE, [world.backend, world.target, '0', String(BATCH)]);
  nodes.push(node);
  const done = await node.waitFor((line) => line.ev === 'caught-up', 'the view to catch up', { timeoutMs: 30_000 });
  assert.equal((await node.exited).code, 0, node.stderr);
  const { checkpoint, actual, expected } = await world.read();
  assert.ok(checkpoint <= done.position && checkpoint > lastCheckpoint);
  assert.deepEqual(actual, expected);
  assert.equal(actual.seen, actual.distinct, 'no event applied twice');
}

describe('views: exactly once under SIGKILL in the middle of a batch', () => {
  it('SQLite', async () => {
    const path = tempDatabasePath('view-kill');
    cleanups.push(() => removeDatabase(path));
    const store = new SqliteEventStore<TestEvent>({ path });
    cleanups.push(() => store.close());
    await appendMany(store, 500);
    const db = store.database;
    await killAndRecover({
      backend: 'sqlite',
      target: path,
      async read() {
        return db.transaction(() => {
          const checkpoint = (db.prepare("SELECT position FROM eskit_checkpoints WHERE name = 'counter'").pluck().get() as number | null) ?? 0;
          return { checkpoint, actual: readSqliteCounter(db), expected: expectedSqliteCounter(db, checkpoint) };
        })();
      },
      async relevant(k) {
        return db.prepare("SELECT position FROM eskit_events WHERE type = 'Counted' ORDER BY position LIMIT 1 OFFSET ?").pluck().get(k - 1) as number;
      },
    });
  });

  it('PostgreSQL', async () => {
    const schema = await createTestSchema({ create: false });
    cleanups.push(() => schema.drop());
    const store = new PostgresEventStore<TestEvent>({ pool: schema.pool, schema: schema.name });
    cleanups.push(() => store.close());
    await appendMany(store, 500);
    const s = `"${schema.name}"`;
    await killAndRecover({
      backend: 'postgres',
      target: schema.name,
      async read() {
        // Not one snapshot across the three reads, but nothing writes while no node runs.
        const result = await schema.pool.query<{ position: string | null }>(`SELECT position FROM ${s}.checkpoints WHERE name = 'counter'`);
        const checkpoint = Number(result.rows[0]?.position ?? 0);
        return { checkpoint, actual: await readPgCounter(schema.pool, schema.name), expected: await expectedPgCounter(schema.pool, schema.name, checkpoint) };
      },
      async relevant(k) {
        const result = await schema.pool.query<{ position: string }>(`SELECT position FROM ${s}.events WHERE type = 'Counted' ORDER BY position LIMIT 1 OFFSET $1`, [k - 1]);
        return Number(result.rows[0]?.position);
      },
    });
  });
});
