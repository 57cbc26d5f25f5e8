import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import pg from 'pg';
import { v7 as uuidv7 } from 'uuid';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import { silentLogger } from '../../src/core/logger.js';
import { MemoryCheckpointStore } from '../../src/memory/index.js';
import { notifyChannel, PostgresCheckpointStore, PostgresEventStore } from '../../src/postgres/index.js';
import { Subscription } from '../../src/subscription/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { connectTestPool, createTestSchema } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';

let cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  const pending = cleanups.reverse();
  cleanups = [];
  for (const cleanup of pending) await cleanup();
});

/** Store A (the listener) on the schema's pool, store B (the writer) on a pool of its own. */
async function twoStores(options: { listenLingerMs?: number } = {}): Promise<{ schema: TestSchema; a: PostgresEventStore; b: PostgresEventStore; otherPool: pg.Pool }> {
  const schema = await createTestSchema({ create: false });
  cleanups.push(() => schema.drop());
  const otherPool = await connectTestPool(2);
  cleanups.push(() => otherPool.end());
  const a = new PostgresEventStore({ pool: schema.pool, schema: schema.name, logger: silentLogger, ...options });
  cleanups.push(() => a.close());
  const b = new PostgresEventStore({ pool: otherPool, schema: schema.name, logger: silentLogger });
  cleanups.push(() => b.close());
  await b.migrate();
  return { schema, a, b, otherPool };
}

/** The backend pids of store A's LISTEN connection (named after the schema, as the test pool has no application_name). */
async function listeners(schema: TestSchema): Promise<number[]> {
  const result = await schema.pool.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE application_name = $1 ORDER BY pid', [
    `eskit listen ${schema.name}`,
  ]);
  return result.rows.map((r) => r.pid);
}

const event = (n: number) => ({ type: 'Noted', data: { n } });

describe('PostgreSQL LISTEN/NOTIFY wake-up', () => {
  it('an onAppend listener on store A hears an append made through store B (another pool)', async () => {
    const { a, b } = await twoStores();
    const heard: number[] = [];
    const remove = a.onAppend((position) => heard.push(position));
    await waitUntil(() => a.listening, { message: 'store A to LISTEN' });
    const written = await b.append('s', [event(1), event(2)]);
    await waitUntil(() => heard.includes(written.position), { message: `A to hear position ${written.position}` });
    const single = await b.append('s', [event(3)]);
    await waitUntil(() => heard.includes(single.position), { message: `A to hear position ${single.position}` });
    remove();
  });

  it('the LISTEN connection starts with the first listener, stops listenLingerMs after the last, and with close()', async () => {
    const { schema, a } = await twoStores({ listenLingerMs: 50 });
    await a.headPosition();
    assert.deepEqual(await listeners(schema), [], 'no LISTEN connection without listeners');
    const first = a.onAppend(() => undefined);
    const second = a.onAppend(() => undefined);
    await waitUntil(async () => a.listening && (await listeners(schema)).length === 1, { message: 'one LISTEN connection' });
    first();
    first();
    assert.equal(a.listening, true, 'still listening for the second listener');
    second();
    await waitUntil(async () => (await listeners(schema)).length === 0, { message: 'the LISTEN connection to close' });
    a.onAppend(() => undefined);
    await waitUntil(async () => (await listeners(schema)).length === 1, { message: 'a LISTEN connection again' });
    await a.close();
    assert.equal(a.listening, false);
    // The backend leaves pg_stat_activity a moment after the client has closed its socket.
    await waitUntil(async () => (await listeners(schema)).length === 0, { message: 'close() to end the LISTEN connection' });
  });

  it('a listener that comes back while the LISTEN connection lingers (a subscription restarted) reuses it; close() ends it at once', async () => {
    const { schema, a, b } = await twoStores();
    const first = a.onAppend(() => undefined);
    await waitUntil(async () => a.listening && (await listeners(schema)).length === 1, { message: 'one LISTEN connection' });
    const [pid] = await listeners(schema);
    first();
    const heard: number[] = [];
    a.onAppend((position) => heard.push(position));
    assert.equal(a.listening, true, 'still up: it lingers (default 10 s)');
    const written = await b.append('s', [event(1)]);
    await waitUntil(() => heard.includes(written.position), { message: 'the returning listener to hear an append' });
    assert.deepEqual(await listeners(schema), [pid], 'the same server session');
    await a.close();
    assert.equal(a.listening, false);
    await waitUntil(async () => (await listeners(schema)).length === 0, { message: 'close() to end the LISTEN connection' });
  });

  it('only committed appends are announced: a refused batch is not', async () => {
    const { schema, a, b } = await twoStores();
    const heard: number[] = [];
    a.onAppend((position) => heard.push(position));
    await waitUntil(() => a.listening && heard.length > 0, { message: 'store A to LISTEN, and its wake-up' });
    const id = uuidv7();
    await b.append('s', [{ ...event(1), id }]);
    // A duplicate id fails after the batch drew its positions: those positions must never be announced.
    await assert.rejects(b.append('t', [event(2), { ...event(3), id }]), (e: unknown) => isEskitError(e, ErrorCode.DuplicateEventId));
    const last = await b.append('u', [event(4)]);
    await waitUntil(() => heard.includes(last.position), { message: 'the last append to be heard' });
    assert.equal(last.position, 4, 'positions 2 and 3 were drawn by the refused batch');
    assert.ok(!heard.includes(2) && !heard.includes(3), `heard ${heard.join(',')}`);
    const channel = notifyChannel('appended', schema.name);
    assert.equal(channel, `eskit_appended_${schema.name}`);
  });

  it('writers whose connection sets eskit.notify = off append without announcing it', async () => {
    const { schema, a, b } = await twoStores();
    const quietPool = new pg.Pool({ connectionString: schema.connectionString, max: 1, options: '-c eskit.notify=off' });
    cleanups.push(() => quietPool.end());
    const quiet = new PostgresEventStore({ pool: quietPool, schema: schema.name, logger: silentLogger });
    cleanups.push(() => quiet.close());
    const heard: number[] = [];
    a.onAppend((position) => heard.push(position));
    // The wake-up that follows every (re)connect reads the head: let it pass before appending.
    await waitUntil(() => a.listening && heard.length > 0, { message: 'store A to LISTEN, and its wake-up' });
    const silent = await quiet.append('s', [event(1)]);
    const loud = await b.append('s', [event(2)]);
    // Notifications of one channel arrive in commit order: once the second is heard, the first would have been.
    await waitUntil(() => heard.includes(loud.position), { message: 'the announced append' });
    assert.ok(!heard.includes(silent.position), `heard ${heard.join(',')}`);
    assert.equal(await a.headPosition(), loud.position, 'the quiet append was stored all the same');
  });

  it('a subscriber on store A is woken by an append on store B well before its 60 s poll', { timeout: 10_000 }, async (t: TestContext) => {
    const { a, b } = await twoStores();
    const seen: { position: number; at: number }[] = [];
    const subscription = new Subscription({
      name: 'notify-test',
      store: a,
      checkpoints: new PostgresCheckpointStore({ store: a }),
      handler: (recorded) => void seen.push({ position: recorded.position, at: performance.now() }),
      pollIntervalMs: 60_000,
      logger: silentLogger,
    });
    await subscription.start();
    cleanups.push(() => subscription.stop());
    await waitUntil(() => a.listening, { message: 'store A to LISTEN' });
    const latencies: number[] = [];
    for (let n = 1; n <= 5; n++) {
      // Once the subscription has checkpointed the previous event, it reads once more, finds nothing and
      // sleeps for up to 60 s: from then on only a notification can wake it within this test's timeout.
      await waitUntil(async () => (await subscription.status()).position === n - 1, { message: `checkpoint ${n - 1}` });
      const started = performance.now();
      const written = await b.append('s', [event(n)]);
      await waitUntil(() => seen.some((s) => s.position === written.position), { timeoutMs: 8_000, message: `event ${written.position}` });
      latencies.push((seen.find((s) => s.position === written.position)?.at as number) - started);
    }
    latencies.sort((x, y) => x - y);
    t.diagnostic(`append on B → handler on A: median ${latencies[2]?.toFixed(2)} ms, max ${latencies[4]?.toFixed(2)} ms`);
    assert.deepEqual(
      seen.map((s) => s.position),
      [1, 2, 3, 4, 5],
    );
  });

  it('after pg_terminate_backend of the LISTEN connection, it reconnects, and events appended meanwhile are delivered', { timeout: 10_000 }, async () => {
    const { schema, a, b } = await twoStores();
    const seen: number[] = [];
    const subscription = new Subscription({
      name: 'notify-reconnect',
      store: a,
      checkpoints: new MemoryCheckpointStore(),
      handler: (recorded) => void seen.push(recorded.position),
      pollIntervalMs: 60_000,
      logger: silentLogger,
    });
    await subscription.start();
    cleanups.push(() => subscription.stop());
    const [first] = await waitUntil(async () => {
      const pids = await listeners(schema);
      return pids.length === 1 ? pids : undefined;
    }, { message: 'the LISTEN connection' });
    await b.append('s', [event(1)]);
    await waitUntil(() => seen.includes(1), { message: 'event 1' });

    await schema.pool.query('SELECT pg_terminate_backend($1)', [first]);
    // Appended while nobody listens: no notification reaches A. The reconnect wakes it instead.
    await b.append('s', [event(2)]);
    await waitUntil(() => seen.includes(2), { timeoutMs: 8_000, message: 'event 2, appended while the LISTEN connection was down' });
    const [second] = await waitUntil(async () => {
      const pids = await listeners(schema);
      return pids.length === 1 && pids[0] !== first ? pids : undefined;
    }, { message: 'a new LISTEN connection' });
    assert.notEqual(second, first);

    await waitUntil(async () => (await subscription.status()).position === 2, { message: 'checkpoint 2' });
    await b.append('s', [event(3)]);
    await waitUntil(() => seen.includes(3), { timeoutMs: 8_000, message: 'event 3, through the new LISTEN connection' });
    assert.deepEqual(seen, [1, 2, 3]);
  });
});
