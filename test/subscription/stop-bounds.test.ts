// Issue 13, items 11 and 12: stop() ends. Work that never settles is abandoned after the drain
// timeout (its signal fired, the checkpoint before it, the lease released, a warning naming it), and
// a database that stops answering cannot hold stop() until the OS gives up on the connection.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { Automation, Subscription, silentLogger } from '../../src/index.js';
import { MemoryCheckpointStore, MemoryEventStore, MemoryLockRegistry } from '../../src/memory/index.js';
import type { Logger } from '../../src/index.js';
import { PostgresCheckpointStore, PostgresCompletionStore, PostgresDeadLetterStore, PostgresEventStore } from '../../src/postgres/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { blackHoleProxy } from '../support/blackhole.js';
import { createTestSchema } from '../support/postgres.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A logger that keeps the warnings, to check what they name. */
export function warningsLogger(): Logger & { warnings: string[] } {
  const warnings: string[] = [];
  return { ...silentLogger, warnings, warn: (_fields, message) => warnings.push(message) };
}

describe('stop() ends', () => {
  it('a handler that never settles is abandoned after drainTimeoutMs: signal fired, checkpoint before it, lease released, a warning names it', async () => {
    const store = new MemoryEventStore();
    const checkpoints = new MemoryCheckpointStore();
    const locks = new MemoryLockRegistry();
    const logger = warningsLogger();
    let signal: AbortSignal | undefined;
    const handled: number[] = [];
    const make = (hang: boolean): Subscription =>
      new Subscription({
        name: 'stuck',
        store,
        checkpoints,
        leaderLock: locks,
        logger,
        pollIntervalMs: 20,
        checkpointIntervalMs: 0,
        drainTimeoutMs: 150,
        handler: async (event, context) => {
          if (hang && event.position === 2) {
            signal = context.signal;
            await new Promise(() => undefined); // ignores its signal, never settles
          }
          handled.push(event.position);
        },
      });
    const subscription = make(true);
    cleanups.push(() => subscription.stop());
    for (let i = 0; i < 3; i++) await store.append(`s-${i}`, [{ type: 'Tick', data: { i } }]);
    await subscription.start();
    await waitUntil(() => signal !== undefined, { message: 'the handler of event 2 runs' });
    const started = performance.now();
    await subscription.stop();
    const took = performance.now() - started;
    assert.ok(took < 2000, `stop() ended after ${Math.round(took)} ms`);
    assert.equal(signal?.aborted, true, "the stuck handler's signal fired");
    assert.equal(await checkpoints.load('stuck'), 1, 'the checkpoint stays before the abandoned event');
    assert.equal(locks.holderToken('stuck'), undefined, 'the lease is released');
    assert.ok(logger.warnings.some((w) => /event at position 2/.test(w) && /abandoned/.test(w)), logger.warnings.join('\n'));
    assert.equal((await subscription.status()).state, 'stopped');

    const again = make(false);
    cleanups.push(() => again.stop());
    await again.start();
    await waitUntil(() => handled.includes(3), { message: 'the next run delivers the abandoned event again' });
    assert.deepEqual(handled, [1, 2, 3]);
  });

  it('a database that stops answering: stop() ends within the drain and call bounds (PostgreSQL behind a black hole)', async () => {
    const schema = await createTestSchema({ create: false });
    cleanups.push(() => schema.drop());
    const proxy = await blackHoleProxy();
    const store = new PostgresEventStore({ connectionString: proxy.connectionString, schema: schema.name });
    // Closing the proxy first frees the pool's connections, so that the store can close.
    cleanups.push(async () => {
      await proxy.close();
      await store.close().catch(() => undefined);
    });
    const checkpoints = new PostgresCheckpointStore({ store });
    const handled: number[] = [];
    const subscription = new Subscription({
      name: 'black-holed',
      store,
      checkpoints,
      logger: silentLogger,
      pollIntervalMs: 20,
      // Nothing is saved until stop(): the final save is the call that meets the black hole.
      checkpointIntervalMs: 60_000,
      drainTimeoutMs: 200,
      stopCallTimeoutMs: 200,
      handler: (event) => {
        handled.push(event.position);
      },
    });
    cleanups.push(() => subscription.stop());
    for (let i = 0; i < 3; i++) await store.append(`s-${i}`, [{ type: 'Tick', data: { i } }]);
    await subscription.start();
    await waitUntil(() => handled.length === 3, { message: 'the events are handled' });
    await store.append('s-3', [{ type: 'Tick', data: { i: 3 } }]);
    await waitUntil(() => handled.length === 4, { message: 'the fourth event is handled (not saved: the interval is long)' });
    proxy.blackHole();
    const started = performance.now();
    await subscription.stop();
    const took = performance.now() - started;
    assert.ok(took < 3000, `stop() ended after ${Math.round(took)} ms`);
  });

  it('an automation on a database that stops answering: stop() ends within the drain and call bounds', async () => {
    const schema = await createTestSchema({ create: false });
    cleanups.push(() => schema.drop());
    const proxy = await blackHoleProxy();
    const store = new PostgresEventStore({ connectionString: proxy.connectionString, schema: schema.name });
    cleanups.push(async () => {
      await proxy.close();
      await store.close().catch(() => undefined);
    });
    let release!: () => void;
    const slow = new Promise<void>((resolve) => (release = resolve));
    cleanups.push(async () => release());
    const ran: number[] = [];
    const automation = new Automation({
      name: 'black-holed-automation',
      store,
      checkpoints: new PostgresCheckpointStore({ store }),
      deadLetters: new PostgresDeadLetterStore({ store }),
      completions: new PostgresCompletionStore({ store }),
      logger: silentLogger,
      pollIntervalMs: 20,
      drainTimeoutMs: 200,
      stopCallTimeoutMs: 200,
      trigger: (event) => ({ key: event.streamId, payload: event.position }),
      execute: async (item) => {
        // The first item stays running: the ones after it need completion records of their own.
        if (item.payload === 1) await slow;
        ran.push(item.payload);
      },
    });
    cleanups.push(() => automation.stop());
    for (let i = 0; i < 4; i++) await store.append(`s-${i}`, [{ type: 'Tick', data: { i } }]);
    await automation.start();
    await waitUntil(() => ran.length === 3, { message: 'the items after the slow one ran' });
    proxy.blackHole();
    release();
    await waitUntil(() => ran.length === 4, { message: 'the slow one finished, unrecorded' });
    const started = performance.now();
    await automation.stop();
    const took = performance.now() - started;
    assert.ok(took < 3000, `stop() ended after ${Math.round(took)} ms`);
  });
});
