// Automations killed for real, on SQLite and on PostgreSQL: each node is a child process
// (fixtures/automation-node.ts) running an Automation on one database. The side effect of item p (the
// event at position p) is a row in `side_effects`, so the test judges exactly what ran, and where, from
// the database itself; it waits on that database and on the nodes' JSON lines, never on sleeps.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import type { DeadLetterStore } from '../../src/core/dead-letter.js';
import type { EventStore } from '../../src/core/store.js';
import { PostgresDeadLetterStore, PostgresEventStore } from '../../src/postgres/index.js';
import { SqliteDeadLetterStore, SqliteEventStore } from '../../src/sqlite/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import type { Line, NodeBackend, NodeConfig } from './fixtures/automation-node.js';
import { ChildNode, killAll } from '../support/processes.js';
import { createTestSchema } from '../support/postgres.js';
import { removeDatabase, tempDatabasePath } from '../sqlite/helpers.js';

type AutomationNode = ChildNode<Line>;
type Kind = NodeBackend['kind'];

const NODE_SCRIPT = fileURLToPath(new URL('./fixtures/automation-node.ts', import.meta.url));
const NAME = 'crash';
const TEST_TIMEOUT = 60_000;
const WAIT = { timeoutMs: 15_000 };

const started: AutomationNode[] = [];
const cleanups: Array<() => Promise<void> | void> = [];

afterEach(async () => {
  await killAll(started.splice(0));
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

interface SideEffect {
  item: number;
  node: string;
  attempt: number;
}

interface Snapshot {
  checkpoint: { position: number | null; token: number } | undefined;
  completed: number[];
  sideEffects: SideEffect[];
}

/** What the test reads and writes in a node's database, the same on both backends. */
interface Tables {
  readonly backend: NodeBackend;
  readonly store: EventStore;
  readonly deadLetters: DeadLetterStore;
  /** Checkpoint, completion records and side effects read in one transaction: one consistent snapshot. */
  snapshot(): Promise<Snapshot>;
  release(item: number): Promise<void>;
}

async function openTables(kind: Kind, label: string): Promise<Tables> {
  if (kind === 'sqlite') {
    const path = tempDatabasePath(`automation-${label}`);
    const store = new SqliteEventStore({ path });
    cleanups.push(() => removeDatabase(path));
    cleanups.push(() => store.close());
    const db = store.database;
    db.exec(`
      CREATE TABLE side_effects (id INTEGER PRIMARY KEY AUTOINCREMENT, item INTEGER NOT NULL, node TEXT NOT NULL, attempt INTEGER NOT NULL);
      CREATE TABLE control (key TEXT PRIMARY KEY);
    `);
    const sideEffects = db.prepare('SELECT item, node, attempt FROM side_effects ORDER BY id');
    const checkpoint = db.prepare('SELECT position, fencing_token AS token FROM eskit_checkpoints WHERE name = ?');
    const completed = db.prepare('SELECT position FROM eskit_completions WHERE source = ? ORDER BY position').pluck();
    const snapshot = db.transaction(
      (): Snapshot => ({
        checkpoint: checkpoint.get(NAME) as Snapshot['checkpoint'],
        completed: completed.all(NAME) as number[],
        sideEffects: sideEffects.all() as SideEffect[],
      }),
    );
    const release = db.prepare('INSERT INTO control (key) VALUES (?)');
    return {
      backend: { kind, path },
      store,
      deadLetters: new SqliteDeadLetterStore({ store }),
      snapshot: async () => snapshot(),
      release: async (item) => void release.run(`release:${item}`),
    };
  }
  const schema = await createTestSchema({ create: false });
  cleanups.push(() => schema.drop());
  const store = new PostgresEventStore({ pool: schema.pool, schema: schema.name });
  cleanups.push(() => store.close());
  await store.migrate();
  const t = `"${schema.name}"`;
  await schema.pool.query(`
    CREATE TABLE ${t}.side_effects (id bigserial PRIMARY KEY, item bigint NOT NULL, node text NOT NULL, attempt int NOT NULL);
    CREATE TABLE ${t}.control (key text PRIMARY KEY);
  `);
  const pool: pg.Pool = schema.pool;
  return {
    backend: { kind, url: schema.connectionString, schema: schema.name },
    store,
    deadLetters: new PostgresDeadLetterStore({ store }),
    async snapshot() {
      const client = await pool.connect();
      try {
        await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
        const checkpoint = await client.query<{ position: string | null; token: string }>(
          `SELECT position, fencing_token AS token FROM ${t}.checkpoints WHERE name = $1`,
          [NAME],
        );
        const completed = await client.query<{ position: string }>(`SELECT position FROM ${t}.completions WHERE source = $1 ORDER BY position`, [NAME]);
        const sideEffects = await client.query<{ item: string; node: string; attempt: number }>(`SELECT item, node, attempt FROM ${t}.side_effects ORDER BY id`);
        await client.query('COMMIT');
        const row = checkpoint.rows[0];
        return {
          checkpoint: row && { position: row.position === null ? null : Number(row.position), token: Number(row.token) },
          completed: completed.rows.map((r) => Number(r.position)),
          sideEffects: sideEffects.rows.map((r) => ({ item: Number(r.item), node: r.node, attempt: r.attempt })),
        };
      } finally {
        client.release();
      }
    },
    async release(item) {
      await pool.query(`INSERT INTO ${t}.control (key) VALUES ($1)`, [`release:${item}`]);
    },
  };
}

async function setup(kind: Kind, label: string) {
  const tables = await openTables(kind, label);
  const { store } = tables;
  const sideEffects = async (): Promise<SideEffect[]> => (await tables.snapshot()).sideEffects;
  const checkpoint = async (): Promise<Snapshot['checkpoint']> => (await tables.snapshot()).checkpoint;
  const completed = async (): Promise<number[]> => (await tables.snapshot()).completed;
  return {
    backend: tables.backend,
    store,
    deadLetters: tables.deadLetters,
    sideEffects,
    checkpoint,
    completed,
    snapshot: () => tables.snapshot(),
    release: (item: number) => tables.release(item),
    /** Which nodes ran each item, in the order they ran it. */
    async runs(): Promise<Map<number, string[]>> {
      const runs = new Map<number, string[]>();
      for (const row of await sideEffects()) runs.set(row.item, [...(runs.get(row.item) ?? []), row.node]);
      return runs;
    },
    /** Appends events at positions 1..count, one per stream (so they are unrelated). */
    async append(count: number): Promise<void> {
      for (const n of range(1, count)) await store.append(`s-${n}`, [{ type: 'Happened', data: { n } }]);
      assert.equal(await store.headPosition(), count);
    },
    async waitForCheckpoint(position: number): Promise<void> {
      let last: Snapshot['checkpoint'];
      try {
        await waitUntil(async () => (last = await checkpoint())?.position === position, { ...WAIT, message: `checkpoint ${position}` });
      } catch (error) {
        throw new Error(`${(error as Error).message}; the checkpoint is ${JSON.stringify(last)}`, { cause: error });
      }
    },
  };
}

function startNode(backend: NodeBackend, node: string, overrides: Partial<NodeConfig> = {}): AutomationNode {
  const config: NodeConfig = { backend, node, name: NAME, completions: true, pollMs: 20, ...overrides };
  const child = new ChildNode<Line>(node, NODE_SCRIPT, [JSON.stringify(config)]);
  started.push(child);
  return child;
}

const LEADER = { ttlMs: 600, renewIntervalMs: 100, lockPollMs: 20 };

/** Waits until `node` has printed `count` poll ticks after line `from`: time has passed inside it. */
async function ticks(node: AutomationNode, count: number, from: number): Promise<void> {
  await waitUntil(() => node.find((l) => l.ev === 'tick', from).length >= count, { ...WAIT, message: `${count} poll ticks of ${node.label}` });
}

async function sigkill(node: AutomationNode): Promise<void> {
  node.kill('SIGKILL');
  const exit = await node.exited;
  assert.equal(exit.signal, 'SIGKILL', `${node.label} was killed, not exited on its own`);
}

const executedItems = (node: AutomationNode): number[] =>
  node
    .find((l) => l.ev === 'executed')
    .map((l) => l.item as number)
    .sort((a, b) => a - b);

for (const kind of ['sqlite', 'postgres'] as const) describe(`Automation crash recovery (${kind}, real processes, SIGKILL)`, { timeout: 5 * TEST_TIMEOUT }, () => {
  it('never checkpoints past an item that has not run; after a SIGKILL a new node runs it', { timeout: TEST_TIMEOUT }, async () => {
    const db = await setup(kind, 'never-past');
    await db.append(5);
    // No completion store: the replay re-runs everything after the checkpoint, which is the point.
    const a = startNode(db.backend, 'a', { completions: false, block: [3] });
    await a.waitFor((l) => l.ev === 'blocked' && l.item === 3, 'item 3 blocked');
    await waitUntil(async () => ((runs) => [4, 5].every((item) => runs.get(item)?.[0] === 'a'))(await db.runs()), { ...WAIT, message: 'items 4 and 5 run by a' });
    await db.waitForCheckpoint(2);
    // With 4 and 5 done and 3 blocked, let the node tick a few times: its checkpoint must stay put.
    await ticks(a, 3, a.lines.length);
    assert.equal((await db.checkpoint())?.position, 2);

    await sigkill(a);
    assert.ok(((await db.checkpoint())?.position ?? 0) < 3, 'the checkpoint of the killed node is below the item it never finished');
    assert.equal((await db.runs()).get(3), undefined, 'item 3 never ran');

    const b = startNode(db.backend, 'b', { completions: false });
    await db.waitForCheckpoint(5);
    const runs = await db.runs();
    assert.deepEqual(runs.get(3), ['b'], 'the new node ran item 3, once');
    assert.deepEqual(runs.get(1), ['a'], 'items at or below the checkpoint are not re-run');
    assert.deepEqual(runs.get(2), ['a']);
    // Without completion records, items after the checkpoint run again: at least once, as documented.
    assert.deepEqual(runs.get(4), ['a', 'b']);
    assert.deepEqual(runs.get(5), ['a', 'b']);
    assert.deepEqual(executedItems(b), [3, 4, 5]);
  });

  it('does not re-run items whose completion was recorded before the SIGKILL', { timeout: TEST_TIMEOUT }, async () => {
    const db = await setup(kind, 'completed');
    await db.append(5);
    const a = startNode(db.backend, 'a', { block: [3] });
    await a.waitFor((l) => l.ev === 'blocked' && l.item === 3, 'item 3 blocked');
    await waitUntil(async () => [4, 5].every(((done) => (item: number) => done.includes(item))(await db.completed())), { ...WAIT, message: 'completion records of items 4 and 5' });
    // Items of different keys finish in any order: 4 and 5 may be recorded before 1 and 2 have
    // finished and the checkpoint has moved to just below the blocked item.
    await db.waitForCheckpoint(2);
    await ticks(a, 2, a.lines.length);
    assert.equal((await db.checkpoint())?.position, 2, 'held below the blocked item');

    await sigkill(a);
    const b = startNode(db.backend, 'b');
    await db.waitForCheckpoint(5);
    // One more tick of b after its checkpoint: anything it would still run has had the chance to.
    await ticks(b, 2, b.lines.length);
    assert.deepEqual(
      (await db.sideEffects()).map(({ item, node }) => `${item}:${node}`).sort(),
      ['1:a', '2:a', '3:b', '4:a', '5:a'],
      'every item ran exactly once; the restarted node ran only item 3',
    );
    assert.deepEqual(executedItems(b), [3]);
  });

  it('graceful handoff (SIGTERM → stop()) to a standby: no item lost, none run twice', { timeout: TEST_TIMEOUT }, async () => {
    const db = await setup(kind, 'graceful');
    const count = 30;
    await db.append(count);
    // Keys k0, k1, k2 (item % 3). a blocks on item 7 (key k1), so items 10, 13, ... of k1 queue behind
    // it while k0 and k2 run to the end: a stops with to-do items it has triggered but not started.
    const a = startNode(db.backend, 'a', { leader: LEADER, keys: 3, concurrency: 2, block: [7] });
    await a.waitFor((l) => l.ev === 'leading', 'a leading');
    const b = startNode(db.backend, 'b', { leader: LEADER, keys: 3, concurrency: 2 });
    await b.waitFor((l) => l.ev === 'standby', 'b standing by');
    await a.waitFor((l) => l.ev === 'blocked' && l.item === 7, 'item 7 blocked on a');
    await waitUntil(() => a.find((l) => l.ev === 'triggered').length === count, { ...WAIT, message: 'a triggered every event' });
    const otherKeys = range(1, count).filter((item) => item % 3 !== 1);
    await waitUntil(async () => ((runs) => otherKeys.every((item) => runs.has(item)))(await db.runs()), { ...WAIT, message: 'a ran every item of k0 and k2' });

    a.kill('SIGTERM');
    // stop() lets the side effect in flight finish: let it, once a is stopping (not before, or a would
    // simply run the queue to its end before it hears of the stop).
    await a.waitFor((l) => l.ev === 'stopping', 'a stopping');
    await db.release(7);
    await a.waitFor((l) => l.ev === 'stopped', 'a stopped');
    const afterStop = await db.snapshot();
    const exit = await a.exited;
    assert.equal(exit.code, 0, 'a exited on its own after stop()');

    const leading = await b.waitFor((l) => l.ev === 'leading', 'b leading');
    await db.waitForCheckpoint(count);
    await ticks(b, 2, b.lines.length);
    const runs = await db.runs();
    const missing = range(1, count).filter((item) => !runs.has(item));
    assert.deepEqual(
      missing,
      [],
      `items never run by anyone (checkpoint after a's stop: ${JSON.stringify(afterStop.checkpoint)})`,
    );
    const twice = range(1, count).filter((item) => (runs.get(item)?.length ?? 0) > 1);
    assert.deepEqual(twice, [], 'a graceful stop records what ran: nothing runs twice');
    assert.equal((await db.checkpoint())?.token, leading.token, 'the checkpoint is b\'s now');
  });

  it('SIGKILL of the leader: the standby takes over; only items completed after the last record may run twice', { timeout: TEST_TIMEOUT }, async () => {
    const db = await setup(kind, 'kill-leader');
    const count = 60;
    const a = startNode(db.backend, 'a', { leader: LEADER, keys: 5, concurrency: 4, delayMs: 10, block: [60] });
    const aLeading = await a.waitFor((l) => l.ev === 'leading', 'a leading');
    const b = startNode(db.backend, 'b', { leader: LEADER, keys: 5, concurrency: 4 });
    await b.waitFor((l) => l.ev === 'standby', 'b standing by');
    // Appended once both nodes run, so a is still busy when it is killed.
    await db.append(count);
    await waitUntil(async () => (await db.sideEffects()).length >= 25, { ...WAIT, message: '25 side effects on a' });

    await sigkill(a);
    // The state a left behind. On SQLite b cannot have claimed yet (a's lease lives up to ttlMs after
    // its last renewal), and the token in the same snapshot proves it. On PostgreSQL the server drops a
    // killed session's advisory lock at once, so b may already have claimed: then what a printed before
    // it died is the bound (a lower one: a write can commit just before the kill and its line be lost,
    // which only moves items from "exactly once" to "at most twice").
    const before = await db.snapshot();
    let checkpointBefore: number;
    let recordedBefore: Set<number>;
    if (before.checkpoint !== undefined && before.checkpoint.token === aLeading.token) {
      checkpointBefore = before.checkpoint.position ?? 0;
      recordedBefore = new Set(before.completed);
    } else {
      assert.equal(kind, 'postgres', 'snapshot taken before b claimed the checkpoint');
      checkpointBefore = Math.max(0, ...a.find((l) => l.ev === 'saved').map((l) => l.position as number));
      recordedBefore = new Set(a.find((l) => l.ev === 'recorded').flatMap((l) => l.items as number[]));
    }
    const ranOnA = new Set(before.sideEffects.filter((row) => row.node === 'a').map((row) => row.item));
    assert.ok(ranOnA.size < count, 'a was killed with work left to do');

    const bLeading = await b.waitFor((l) => l.ev === 'leading', 'b leading');
    assert.ok((bLeading.token as number) > (aLeading.token as number), 'b has a newer fencing token');
    await db.waitForCheckpoint(count);
    await ticks(b, 2, b.lines.length);

    const runs = await db.runs();
    for (const item of range(1, count)) {
      const by = runs.get(item) ?? [];
      assert.ok(by.length >= 1, `item ${item} ran at least once`);
      if (item <= checkpointBefore || recordedBefore.has(item)) {
        assert.equal(by.length, 1, `item ${item} (at or below the checkpoint ${checkpointBefore}, or recorded complete) ran exactly once: ${by.join(',')}`);
      } else {
        assert.ok(by.length <= 2, `item ${item} ran at most twice`);
        if (by.length === 2) {
          assert.deepEqual(by, ['a', 'b'], `item ${item} ran twice only because a completed it after its last record, then died`);
        }
      }
      if (!ranOnA.has(item)) assert.deepEqual(by, ['b'], `item ${item}, not run by a, ran once on b`);
    }
    for (const line of b.find((l) => l.ev === 'executed')) assert.equal(line.token, bLeading.token, 'b ran everything under its own token');
  });

  it('a retrying item holds the checkpoint across a SIGKILL; dead-lettering releases it; the letter survives a restart and can be redriven', { timeout: TEST_TIMEOUT }, async () => {
    const db = await setup(kind, 'retry-dlq');
    await db.append(5);
    // a: item 3 fails and is retried (practically) forever.
    const a = startNode(db.backend, 'a', { fail: [3], maxAttempts: 1_000_000, retryDelayMs: 5 });
    await waitUntil(() => a.find((l) => l.ev === 'attempt-failed' && l.item === 3).length >= 5, { ...WAIT, message: '5 failed attempts at item 3' });
    await waitUntil(async () => [4, 5].every(((done) => (item: number) => done.includes(item))(await db.completed())), { ...WAIT, message: 'items 4 and 5 recorded complete' });
    await ticks(a, 3, a.lines.length);
    assert.equal((await db.checkpoint())?.position, 2, 'the retrying item holds the checkpoint');

    await sigkill(a);
    assert.equal((await db.checkpoint())?.position, 2);
    assert.equal(await db.deadLetters.count({ source: NAME }), 0);

    // b: item 3 still fails, but b gives up after 3 attempts: dead-lettered, which releases the checkpoint.
    const b = startNode(db.backend, 'b', { fail: [3], maxAttempts: 3, retryDelayMs: 1 });
    await db.waitForCheckpoint(5);
    assert.deepEqual(b.find((l) => l.ev === 'attempt-failed').map((l) => l.attempt), [1, 2, 3]);
    await b.waitFor((l) => l.ev === 'dead-lettered' && l.item === 3, 'item 3 dead-lettered');
    assert.deepEqual(executedItems(b), [], 'b re-ran none of the recorded items');

    await sigkill(b);
    // c: healthy. The letter is still there, durable, and still holds nothing back.
    const c = startNode(db.backend, 'c');
    await ticks(c, 3, 0);
    const letters = await db.deadLetters.list({ source: NAME });
    assert.equal(letters.length, 1);
    const [letter] = letters;
    assert.equal(letter?.stage, 'execute');
    assert.equal(letter?.key, 'k3');
    assert.equal(letter?.eventPosition, 3);
    assert.deepEqual(letter?.payload, { item: 3 });
    assert.deepEqual(letter?.attempts.map((x) => x.error), ['Error: item 3 fails', 'Error: item 3 fails', 'Error: item 3 fails']);
    assert.equal((await db.checkpoint())?.position, 5);
    assert.equal((await db.runs()).get(3), undefined, 'item 3 never ran');

    assert.equal(await db.deadLetters.redrive({ source: NAME }), 1);
    await waitUntil(async () => (await db.deadLetters.count({ source: NAME })) === 0, { ...WAIT, message: 'the redriven letter removed' });
    assert.deepEqual((await db.runs()).get(3), ['c'], 'the redrive ran item 3 once, on c');
    const [redriven] = c.find((l) => l.ev === 'executed');
    assert.equal(redriven?.redrive, true);
    assert.deepEqual(
      (await db.sideEffects()).map(({ item, node }) => `${item}:${node}`).sort(),
      ['1:a', '2:a', '3:c', '4:a', '5:a'],
    );
  });
});
