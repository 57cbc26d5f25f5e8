import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import {
  MemoryView,
  Subscription,
  silentLogger,
  isEskitError,
} from '../../src/index.js';
import type { CheckpointStore } from '../../src/adapter/index.js';
import { MemoryCheckpointStore, MemoryDeadLetterStore, MemoryEventStore, MemoryLockRegistry } from '../../src/memory/index.js';
import type { EventStore, HandlerContext, LockRegistry, Recorded, SubscriptionOptions } from '../../src/index.js';
import { waitUntil } from '../../src/testing/wait.js';

// Stop everything a test started, even when it failed half-way, so the file's process can exit.
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
function track<T extends { stop(): Promise<void> }>(subscription: T): T {
  cleanups.push(() => subscription.stop());
  return subscription;
}

async function appendMany(store: EventStore, count: number, type = 'Tick', stream = 's'): Promise<void> {
  for (let i = 0; i < count; i++) await store.append(`${stream}-${i % 3}`, [{ type, data: { i } }]);
}

function setup(overrides: Partial<SubscriptionOptions<{ type: string; data: unknown }>> = {}) {
  const store = new MemoryEventStore();
  const checkpoints = new MemoryCheckpointStore();
  const seen: Recorded[] = [];
  const subscription = track(new Subscription({
    name: 'projector',
    store,
    checkpoints,
    logger: silentLogger,
    pollIntervalMs: 20,
    retry: { maxAttempts: 3, initialDelayMs: 1, maxDelayMs: 2 },
    handler: (event) => {
      seen.push(event);
    },
    ...overrides,
  }));
  return { store, checkpoints, seen, subscription };
}

describe('Subscription (memory)', () => {
  it('durations past a Node.js timer\'s limit (2^31 - 1 ms) are refused, not turned into a 1 ms busy loop', async () => {
    const tooLong = 2 ** 31;
    const refused = (error: unknown): boolean => isEskitError(error, 'ESKIT_INVALID_ARGUMENT') && /from \d+ to 2147483647/.test((error as Error).message);
    const store = new MemoryEventStore();
    const base = { name: 'limits', store, checkpoints: new MemoryCheckpointStore(), logger: silentLogger, handler: () => {} };
    assert.throws(() => new Subscription({ ...base, pollIntervalMs: tooLong }), refused);
    assert.throws(() => new Subscription({ ...base, checkpointIntervalMs: tooLong }), refused);
    assert.throws(() => new Subscription({ ...base, retry: { maxDelayMs: tooLong } }), (error: unknown) => isEskitError(error, 'ESKIT_INVALID_ARGUMENT'));
    assert.ok(new Subscription({ ...base, pollIntervalMs: tooLong - 1 }), 'the limit itself is fine');
    const view = new MemoryView({ name: 'limits-view', store, initialState: 0, evolve: (n: number) => n + 1, logger: silentLogger });
    await assert.rejects(view.waitFor(1, { timeoutMs: 2 ** 32 }), refused);
  });

  it('a checkpoint that cannot be read for a moment (connection dropped, database busy) is retried, not fatal: without and with a leader lock', async () => {
    for (const leaderLock of [undefined, new MemoryLockRegistry()]) {
      const real = new MemoryCheckpointStore();
      let failures = 2;
      const flaky = (): Promise<never> | undefined => (failures-- > 0 ? Promise.reject(new Error('connection terminated unexpectedly')) : undefined);
      const checkpoints: CheckpointStore = {
        load: (name) => flaky() ?? real.load(name),
        claim: (name, token) => flaky() ?? real.claim(name, token),
        save: (name, position, options) => real.save(name, position, options),
        list: () => real.list(),
      };
      const { store, seen, subscription } = setup({ checkpoints, ...(leaderLock ? { leaderLock } : {}) });
      await appendMany(store, 3);
      await subscription.start();
      await waitUntil(() => seen.length === 3, { message: `handled after the retries (${leaderLock ? 'claim' : 'load'})` });
      assert.equal(failures, -1, 'both failures were met');
      assert.equal((await subscription.status()).state, 'leading');
      await subscription.stop();
    }
  });

  it('catches up from the beginning, then follows live appends, in global order', async () => {
    const { store, checkpoints, seen, subscription } = setup();
    await appendMany(store, 10);
    await subscription.start();
    await waitUntil(() => seen.length === 10);
    await appendMany(store, 5);
    await waitUntil(() => seen.length === 15);
    assert.deepEqual(
      seen.map((e) => e.position),
      Array.from({ length: 15 }, (_, i) => i + 1),
    );
    await waitUntil(async () => (await checkpoints.load('projector')) === 15);
    await subscription.stop();
    const status = await subscription.status();
    assert.equal(status.state, 'stopped');
    assert.equal(status.lag, 0);
  });

  it('resumes from its checkpoint after a restart and filters by type', async () => {
    const { store, checkpoints, seen } = setup();
    await appendMany(store, 4, 'Wanted');
    await appendMany(store, 4, 'Other');
    await checkpoints.save('filtered', 2);
    const sub = track(new Subscription({
      name: 'filtered',
      store,
      checkpoints,
      types: ['Wanted'],
      logger: silentLogger,
      handler: (e) => {
        seen.push(e);
      },
    }));
    await sub.start();
    await waitUntil(() => seen.length === 2);
    await store.append('x', [{ type: 'Wanted', data: {} }]);
    await waitUntil(() => seen.length === 3);
    await sub.stop();
    assert.deepEqual(seen.map((e) => e.position), [3, 4, 9]);
    assert.ok(seen.every((e) => e.type === 'Wanted'));
    assert.equal(await checkpoints.load('filtered'), 9);
  });

  it('starts at the end or after a given position when there is no checkpoint', async () => {
    const end = setup({ startFrom: 'end' });
    await appendMany(end.store, 3);
    await end.subscription.start();
    await waitUntil(async () => (await end.subscription.status()).state === 'leading');
    await end.store.append('late', [{ type: 'Tick', data: {} }]);
    await waitUntil(() => end.seen.length === 1);
    assert.equal(end.seen[0]?.position, 4);
    await end.subscription.stop();

    const after = setup({ startFrom: { after: 2 } });
    await appendMany(after.store, 5);
    await after.subscription.start();
    await waitUntil(() => after.seen.length === 3);
    assert.deepEqual(after.seen.map((e) => e.position), [3, 4, 5]);
    await after.subscription.stop();
  });

  it('retries a failing handler with backoff and delivers the event once it succeeds', async () => {
    let failures = 0;
    const attempts: number[] = [];
    const { store, seen, subscription, checkpoints } = setup({
      handler: (event, ctx) => {
        attempts.push(ctx.attempt);
        if (event.position === 2 && failures < 2) {
          failures++;
          throw new Error('flaky');
        }
        seen.push(event);
      },
    });
    await appendMany(store, 3);
    await subscription.start();
    await waitUntil(() => seen.length === 3);
    await subscription.stop();
    assert.deepEqual(attempts, [1, 1, 2, 3, 1]);
    assert.equal(await checkpoints.load('projector'), 3);
  });

  it('stops with ESKIT_HANDLER_FAILED after the last attempt, checkpointed just before the poison event', async () => {
    const { store, seen, subscription, checkpoints } = setup({
      handler: (event) => {
        // A non-Error value: the runner must still report it clearly.
        if (event.position === 3) throw { reason: 'poison' };
        seen.push(event);
      },
    });
    await appendMany(store, 5);
    await subscription.start();
    const status = await subscription.whenStopped();
    assert.equal(status.state, 'failed');
    assert.ok(isEskitError(status.error, 'ESKIT_HANDLER_FAILED'));
    assert.match(status.error?.message ?? '', /position 3.*poison/);
    assert.deepEqual(seen.map((e) => e.position), [1, 2]);
    assert.equal(await checkpoints.load('projector'), 2);
    // It can be started again once the cause is fixed; it resumes at the poison event.
    await assert.rejects(subscription.stop().then(() => subscription.start().then(() => subscription.start())), (e) =>
      isEskitError(e, 'ESKIT_ALREADY_STARTED'),
    );
    await subscription.stop();
  });

  it('refuses a second start, and stop is idempotent', async () => {
    const { subscription } = setup();
    await subscription.start();
    await assert.rejects(subscription.start(), (e) => isEskitError(e, 'ESKIT_ALREADY_STARTED'));
    await Promise.all([subscription.stop(), subscription.stop()]);
    await subscription.stop();
    assert.equal((await subscription.status()).state, 'stopped');
  });

  it('stop() lets the handler in flight finish and checkpoints it', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    cleanups.push(() => release());
    let entered = false;
    const { store, seen, subscription, checkpoints } = setup({
      handler: async (event) => {
        if (event.position === 2) {
          entered = true;
          await gate;
        }
        seen.push(event);
      },
    });
    await appendMany(store, 4);
    await subscription.start();
    await waitUntil(() => entered);
    const stopped = subscription.stop();
    release();
    await stopped;
    assert.deepEqual(seen.map((e) => e.position), [1, 2]);
    assert.equal(await checkpoints.load('projector'), 2);
  });
});

describe('Subscription batch handler (memory)', () => {
  it('hands whole batches over, splits a failing batch to pin the poison event, and dead-letters it', async () => {
    const store = new MemoryEventStore();
    const checkpoints = new MemoryCheckpointStore();
    const deadLetters = new MemoryDeadLetterStore();
    const batches: number[][] = [];
    const sub = track(
      new Subscription({
        name: 'batched',
        store,
        checkpoints,
        deadLetters,
        logger: silentLogger,
        batchSize: 4,
        retry: { maxAttempts: 2, initialDelayMs: 1, maxDelayMs: 1 },
        batchHandler: (events) => {
          if (events.some((e) => e.position === 6)) throw new Error('poison');
          batches.push(events.map((e) => e.position));
        },
      }),
    );
    await appendMany(store, 10);
    await sub.start();
    await waitUntil(async () => (await checkpoints.load('batched')) === 10);
    assert.deepEqual(batches, [[1, 2, 3, 4], [5], [7], [8], [9, 10]]);
    const letters = await deadLetters.list({ source: 'batched' });
    assert.deepEqual(letters.map((l) => [l.stage, l.eventPosition, l.attempts.length]), [['handler', 6, 2]]);
  });

  it('with checkpointsInHandler, the runner leaves saving to the handler', async () => {
    const store = new MemoryEventStore();
    const checkpoints = new MemoryCheckpointStore();
    const saves: number[] = [];
    const sub = track(
      new Subscription({
        name: 'self-saving',
        store,
        checkpoints: { ...checkpoints, load: (n) => checkpoints.load(n), claim: (n, t) => checkpoints.claim(n, t), list: () => checkpoints.list(), save: async (n, p, o) => { saves.push(p); await checkpoints.save(n, p, o); } },
        logger: silentLogger,
        batchSize: 3,
        batchHandler: async (events) => {
          await checkpoints.save('self-saving', (events[events.length - 1] as Recorded).position);
        },
      }, { checkpointsInHandler: true }),
    );
    await appendMany(store, 7);
    await sub.start();
    await waitUntil(async () => (await sub.status()).position === 7);
    assert.deepEqual(saves, [], 'the runner never saved');
    assert.equal(await checkpoints.load('self-saving'), 7);
  });
});

describe('Subscription with leader election (memory)', () => {
  function node(store: EventStore, checkpoints: MemoryCheckpointStore, locks: MemoryLockRegistry, log: Array<[string, number, number | undefined]>, id: string, handler?: (e: Recorded, ctx: HandlerContext) => Promise<void> | void) {
    return track(new Subscription({
      name: 'shared',
      store,
      checkpoints,
      leaderLock: locks,
      logger: silentLogger,
      pollIntervalMs: 20,
      batchSize: 5,
      handler: async (event, ctx) => {
        await handler?.(event, ctx);
        log.push([id, event.position, ctx.fencingToken]);
      },
    }));
  }

  it('only one node processes; a graceful stop hands over with nothing lost or repeated', async () => {
    const store = new MemoryEventStore();
    const checkpoints = new MemoryCheckpointStore();
    const locks = new MemoryLockRegistry();
    const log: Array<[string, number, number | undefined]> = [];
    const a = node(store, checkpoints, locks, log, 'a');
    const b = node(store, checkpoints, locks, log, 'b');
    await a.start();
    await waitUntil(async () => (await a.status()).state === 'leading');
    await b.start();
    await waitUntil(async () => (await b.status()).lockDenied);
    await appendMany(store, 20);
    await waitUntil(() => log.length === 20);
    assert.ok(log.every(([id]) => id === 'a'));
    assert.equal((await b.status()).state, 'standby');
    await a.stop();
    await appendMany(store, 10);
    await waitUntil(() => log.length === 30);
    assert.deepEqual(log.map(([, p]) => p), Array.from({ length: 30 }, (_, i) => i + 1));
    assert.ok(log.slice(20).every(([id, , token]) => id === 'b' && token === 2));
    assert.equal(await checkpoints.load('shared'), 30);
    await b.stop();
  });

  it('fences a stale leader: after its lease is revoked mid-handler it cannot move the checkpoint', async () => {
    const store = new MemoryEventStore();
    const checkpoints = new MemoryCheckpointStore();
    const locks = new MemoryLockRegistry();
    const log: Array<[string, number, number | undefined]> = [];
    let stalled = false;
    let releaseStall!: () => void;
    const stall = new Promise<void>((r) => (releaseStall = r));
    cleanups.push(() => releaseStall());
    const a = node(store, checkpoints, locks, log, 'a', async (event) => {
      if (event.position === 3 && !stalled) {
        stalled = true;
        await stall;
      }
    });
    const b = node(store, checkpoints, locks, log, 'b');
    await appendMany(store, 5);
    await a.start();
    await waitUntil(() => stalled);
    await b.start();
    locks.revoke('shared'); // a's lease expires while it is frozen in the handler
    await waitUntil(() => log.filter(([id]) => id === 'b').length >= 3);
    releaseStall(); // a wakes up and finishes its handler
    await waitUntil(async () => (await a.status()).state === 'standby');
    await waitUntil(() => log.filter(([id]) => id === 'b').length === 5);
    assert.equal(await checkpoints.load('shared'), 5);
    // a never saved (its lease fired before the batch ended), so b redid the whole batch.
    const byB = log.filter(([id]) => id === 'b').map(([, p]) => p);
    assert.deepEqual(byB, [1, 2, 3, 4, 5]);
    assert.ok(log.filter(([id]) => id === 'b').every(([, , token]) => token === 2));
    await Promise.all([a.stop(), b.stop()]);
  });

  it('a frozen leader that never heard it lost the lease is stopped by the fenced checkpoint write', async () => {
    const store = new MemoryEventStore();
    const checkpoints = new MemoryCheckpointStore();
    const locks = new MemoryLockRegistry();
    // A lease whose loss is never signalled: the node only learns it from the rejected write.
    const deaf: LockRegistry = {
      acquire: async (name, options) => {
        const lease = await locks.acquire(name, options);
        return { name, fencingToken: lease.fencingToken, signal: new AbortController().signal, release: () => lease.release() };
      },
      close: () => locks.close(),
    };
    const log: Array<[string, number, number | undefined]> = [];
    let stalled = false;
    let releaseStall!: () => void;
    const stall = new Promise<void>((r) => (releaseStall = r));
    cleanups.push(() => releaseStall());
    const a = track(new Subscription({
      name: 'shared',
      store,
      checkpoints,
      leaderLock: deaf,
      logger: silentLogger,
      batchSize: 5,
      handler: async (event, ctx) => {
        if (event.position === 3 && !stalled) {
          stalled = true;
          await stall;
        }
        log.push(['a', event.position, ctx.fencingToken]);
      },
    }));
    const b = node(store, checkpoints, locks, log, 'b');
    await appendMany(store, 5);
    await a.start();
    await waitUntil(() => stalled);
    await b.start();
    locks.revoke('shared');
    await waitUntil(() => log.filter(([id]) => id === 'b').length === 5);
    assert.equal(await checkpoints.load('shared'), 5);
    await checkpoints.save('shared', 5, { fencingToken: 2 });
    releaseStall(); // a finishes positions 3..5 believing it still leads, then tries to checkpoint 5 with token 1
    await waitUntil(async () => (await a.status()).state === 'standby');
    const status = await a.status();
    assert.equal(status.lockDenied, true, 'the stale leader is back to waiting for the lock');
    assert.equal((await checkpoints.list())[0]?.fencingToken, 2);
    assert.deepEqual(log.filter(([id]) => id === 'a').map(([, p, t]) => [p, t]), [[1, 1], [2, 1], [3, 1], [4, 1], [5, 1]]);
    await Promise.all([a.stop(), b.stop()]);
  });

  it('a stale leader whose checkpoint save is rejected steps down (token check in the store)', async () => {
    const checkpoints = new MemoryCheckpointStore();
    await checkpoints.claim('x', 5);
    await assert.rejects(checkpoints.save('x', 10, { fencingToken: 4 }), (e) => isEskitError(e, 'ESKIT_FENCED'));
    await checkpoints.save('x', 10, { fencingToken: 5 });
    assert.equal(await checkpoints.load('x'), 10);
    await assert.rejects(checkpoints.claim('x', 3), (e) => isEskitError(e, 'ESKIT_FENCED'));
  });
});
