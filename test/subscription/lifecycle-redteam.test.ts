// Red team: lifecycle races in the subscription runner (stop, start, lease loss and store failures at
// each await). Interleavings are forced with gates the test opens, on the memory adapters; no sleeps.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  FencedError,
  Subscription,
  isEskitError,
  silentLogger,
} from '../../src/index.js';
import type { CheckpointStore } from '../../src/adapter/index.js';
import type { OutstandingWork } from '../../src/subscription/index.js';
import { StoreClosedError } from '../../src/adapter/index.js';
import { MemoryCheckpointStore, MemoryDeadLetterStore, MemoryEventStore, MemoryLockRegistry } from '../../src/memory/index.js';
import type { EventShape, LockRegistry, Recorded, SubscriptionOptions } from '../../src/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { gate, openAfterTest, openGatesThenStopAfterEach, stopAfterTest } from '../support/gates.js';

const NAME = 'lifecycle';

openGatesThenStopAfterEach();

/** A checkpoint store whose claims and saves can be held at the door, and that logs what reached it. */
class ControlledCheckpoints implements CheckpointStore {
  readonly inner = new MemoryCheckpointStore();
  readonly claims: number[] = [];
  /** Saves that were applied: [position, fencing token]. */
  readonly saves: Array<[number, number | undefined]> = [];
  beforeClaim: (() => Promise<void>) | undefined;
  beforeSave: ((position: number) => Promise<void>) | undefined;
  load(name: string): Promise<number | undefined> {
    return this.inner.load(name);
  }
  async claim(name: string, token: number): Promise<number | undefined> {
    this.claims.push(token);
    await this.beforeClaim?.();
    return this.inner.claim(name, token);
  }
  async save(name: string, position: number, options?: { fencingToken?: number }): Promise<void> {
    await this.beforeSave?.(position);
    await this.inner.save(name, position, options);
    this.saves.push([position, options?.fencingToken]);
  }
  list(): ReturnType<CheckpointStore['list']> {
    return this.inner.list();
  }
}

/** A lease registry whose leases never hear they were lost: only a fenced write can tell the node. */
function deaf(locks: MemoryLockRegistry): LockRegistry {
  return {
    acquire: async (name, options) => {
      const lease = await locks.acquire(name, options);
      return { name, fencingToken: lease.fencingToken, signal: new AbortController().signal, release: () => lease.release() };
    },
    close: () => locks.close(),
  };
}

/** Outstanding work that holds nothing back and logs every call the runner makes. */
function recordingWork(hold?: { end?: Promise<void> }): OutstandingWork & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    begin: async ({ position, fencingToken }) => {
      calls.push(`begin:${position}:${String(fencingToken)}`);
    },
    earliestPending: () => undefined,
    onProgress: () => () => undefined,
    checkpointed: (position) => {
      calls.push(`checkpointed:${position}`);
    },
    end: async (reason) => {
      calls.push(`end:${reason}`);
      if (reason === 'stopped') await hold?.end;
    },
    finished: async () => {
      calls.push('finished');
    },
  };
}

async function appendMany(store: MemoryEventStore, count: number): Promise<void> {
  for (let i = 0; i < count; i++) await store.append(`s-${i % 3}`, [{ type: 'Tick', data: { i } }]);
}

type Overrides = Partial<SubscriptionOptions<EventShape>> & { outstandingWork?: OutstandingWork };

function setup(overrides: Overrides = {}) {
  const store = new MemoryEventStore();
  const checkpoints = new ControlledCheckpoints();
  const seen: Array<{ position: number; token: number | undefined }> = [];
  const make = (extra: Overrides = {}): Subscription => {
    const { outstandingWork, ...options } = { ...overrides, ...extra };
    const subscription = new Subscription({
      name: NAME,
      store,
      checkpoints,
      logger: silentLogger,
      pollIntervalMs: 5,
      retry: { maxAttempts: 3, initialDelayMs: 1, maxDelayMs: 2 },
      handler: (event: Recorded, context) => {
        seen.push({ position: event.position, token: context.fencingToken });
      },
      ...options,
    }, { outstandingWork });
    stopAfterTest(() => subscription.stop());
    return subscription;
  };
  const state = async (subscription: Subscription): Promise<string> => (await subscription.status()).state;
  return { store, checkpoints, seen, make, state };
}

describe('Subscription lifecycle red team', () => {
  it('1. a checkpoint save that fails for good (a closed store) ends the outstanding work before the subscription fails', async () => {
    const t = setup();
    t.checkpoints.beforeSave = async () => {
      throw new StoreClosedError('checkpoint store');
    };
    const work = recordingWork();
    const subscription = t.make({ outstandingWork: work });
    await appendMany(t.store, 3);
    await subscription.start();
    const status = await subscription.whenStopped();
    assert.equal(status.state, 'failed');
    assert.ok(isEskitError(status.error, 'ESKIT_STORE_CLOSED'), String(status.error));
    assert.deepEqual(t.seen.map((e) => e.position), [1, 2, 3]);
    // Without end(), an automation's to-do list keeps running side effects (and polling) after the
    // subscription reported failure and gave up its lease.
    assert.deepEqual(work.calls, ['begin:0:undefined', 'end:stopped', 'finished']);
  });

  it('2. an onHandlerFailure that throws fails the subscription like a handler failure: work ended, checkpoint just before the event', async () => {
    for (const thrown of [new Error('the failure sink is broken'), undefined, 'a string']) {
      const t = setup({
        checkpointIntervalMs: 60_000,
        handler: (event, context) => {
          if (event.position === 3) throw new Error('poison');
          t.seen.push({ position: event.position, token: context.fencingToken });
        },
        onHandlerFailure: async () => {
          throw thrown;
        },
      });
      const work = recordingWork();
      const subscription = t.make({ outstandingWork: work });
      await appendMany(t.store, 5);
      await subscription.start();
      const status = await subscription.whenStopped();
      assert.equal(status.state, 'failed');
      assert.ok(status.error instanceof Error, `an Error for ${String(thrown)}`);
      if (thrown instanceof Error) assert.equal(status.error, thrown);
      assert.deepEqual(t.seen.map((e) => e.position), [1, 2]);
      assert.equal(await t.checkpoints.load(NAME), 2, `checkpointed up to the failing event (${String(thrown)})`);
      assert.deepEqual(work.calls, ['begin:0:undefined', 'end:stopped', 'checkpointed:2', 'finished']);
    }
  });

  it('3. a handler whose write is fenced steps down and takes over again; it neither retries into the dead-letter queue nor fails', async () => {
    const locks = new MemoryLockRegistry();
    const deadLetters = new MemoryDeadLetterStore();
    // The downstream system already saw token 2 (a newer leader wrote there); this node holds token 1.
    const downstream = { token: 2 };
    const t = setup({
      leaderLock: deaf(locks),
      deadLetters,
      handler: (event, context) => {
        const token = context.fencingToken ?? 0;
        if (token < downstream.token) throw new FencedError(NAME, token, downstream.token);
        t.seen.push({ position: event.position, token });
      },
    });
    const subscription = t.make();
    await appendMany(t.store, 3);
    await subscription.start();
    await waitUntil(async () => (await t.checkpoints.load(NAME)) === 3, { message: 'checkpoint 3' });
    assert.equal(await deadLetters.count({ source: NAME }), 0, 'a fenced write is not the event\'s fault');
    assert.deepEqual(t.seen, [1, 2, 3].map((position) => ({ position, token: 2 })), 'all handled by the new leadership');
    assert.deepEqual(t.checkpoints.saves.at(-1), [3, 2]);
    const status = await subscription.status();
    assert.equal(status.state, 'leading');
    assert.equal(status.fencingToken, 2);
  });

  it('3b. without leader election, a handler fenced for good steps down and leads again (a view rebuilt under it resumes so), at the poll pace, never spinning; stop() works', async () => {
    for (const kind of ['handler', 'batchHandler'] as const) {
      const deadLetters = new MemoryDeadLetterStore();
      let calls = 0;
      const fence = (): never => {
        calls += 1;
        throw new FencedError(NAME, 1, 2);
      };
      const t = setup({ deadLetters, ...(kind === 'handler' ? { handler: fence } : { handler: undefined, batchHandler: fence }) });
      const subscription = t.make();
      await appendMany(t.store, 2);
      await subscription.start();
      // A spin would run in microtasks only: this wait (a timer) would never end.
      await waitUntil(() => calls >= 4, { message: `${kind}: four leaderships` });
      await subscription.stop();
      assert.equal(await t.state(subscription), 'stopped', kind);
      assert.equal(await deadLetters.count({ source: NAME }), 0, `${kind}: a fenced write is not the event's fault`);
      assert.deepEqual(t.checkpoints.saves, [], kind);
    }
  });

  it('3d. a handler that throws what neither JSON nor String() can describe (no prototype, a BigInt) fails as ESKIT_HANDLER_FAILED', async () => {
    const thrown: unknown = Object.assign(Object.create(null) as object, { amount: 10n });
    const t = setup({
      handler: () => {
        throw thrown;
      },
    });
    const subscription = t.make();
    await appendMany(t.store, 1);
    await subscription.start();
    const status = await subscription.whenStopped();
    assert.equal(status.state, 'failed');
    assert.ok(isEskitError(status.error, 'ESKIT_HANDLER_FAILED'), String(status.error?.message));
    assert.match(status.error?.message ?? '', /\[object Object\]/);
    assert.equal((status.error as Error & { cause?: unknown }).cause, thrown, 'the thrown value is kept as the cause');
  });

  it('3c. with leader election, a handler fenced for good makes the node step down and retry leadership at the poll pace, never spin; stop() works', async () => {
    for (const kind of ['handler', 'batchHandler'] as const) {
      const locks = new MemoryLockRegistry();
      const deadLetters = new MemoryDeadLetterStore();
      let calls = 0;
      const fence = (): never => {
        calls += 1;
        throw new FencedError(NAME, 1, Number.MAX_SAFE_INTEGER);
      };
      const t = setup({ leaderLock: locks, deadLetters, ...(kind === 'handler' ? { handler: fence } : { handler: undefined, batchHandler: fence }) });
      const subscription = t.make();
      await appendMany(t.store, 2);
      await subscription.start();
      // On the memory registry a spin runs in microtasks only: this wait (a timer) would never end.
      await waitUntil(() => t.checkpoints.claims.length >= 3, { message: `${kind}: three leaderships` });
      await subscription.stop();
      assert.equal(await t.state(subscription), 'stopped', kind);
      assert.equal(calls, t.checkpoints.claims.length, `${kind}: one call per leadership, not retried`);
      assert.deepEqual(t.checkpoints.claims, t.checkpoints.claims.map((_, i) => i + 1), `${kind}: a new token each time`);
      assert.equal(await deadLetters.count({ source: NAME }), 0, kind);
      assert.deepEqual(t.checkpoints.saves, [], kind);
    }
  });

  it('4. a lease lost while a stop drains the outstanding work turns the drain into an abandonment, and nothing is saved', async () => {
    const locks = new MemoryLockRegistry();
    const held = gate();
    const t = setup({ leaderLock: locks, checkpointIntervalMs: 60_000 });
    const work = recordingWork({ end: held.wait });
    const subscription = t.make({ outstandingWork: work });
    await appendMany(t.store, 3);
    await subscription.start();
    await waitUntil(() => t.seen.length === 3);
    // The idle loop saved the backlog's end; the stop must save nothing more.
    await waitUntil(() => t.checkpoints.saves.length === 1);
    const stopping = subscription.stop();
    await waitUntil(() => work.calls.includes('end:stopped'));
    locks.revoke(NAME);
    await waitUntil(() => work.calls.includes('end:lost'), { message: 'the work told it must abandon what runs' });
    held.open();
    await stopping;
    assert.deepEqual(work.calls, ['begin:0:1', 'checkpointed:3', 'end:stopped', 'end:lost', 'finished']);
    assert.equal((await subscription.status()).state, 'stopped');
  });

  it('4b. a poison event waiting for a dead-letter store that is down: a lost lease and a stop each end the wait; the letter is stored once', async () => {
    const locks = new MemoryLockRegistry();
    const inner = new MemoryDeadLetterStore();
    let down = true;
    let refused = 0;
    openAfterTest(() => (down = false));
    const deadLetters = Object.create(inner) as MemoryDeadLetterStore;
    deadLetters.add = async (letter) => {
      if (down) {
        refused += 1;
        throw new Error('dead-letter store unreachable');
      }
      return inner.add(letter);
    };
    const t = setup({
      leaderLock: locks,
      deadLetters,
      handler: (event, context) => {
        if (event.position === 2) throw new Error('poison');
        t.seen.push({ position: event.position, token: context.fencingToken });
      },
    });
    const subscription = t.make();
    await appendMany(t.store, 3);
    await subscription.start();
    await waitUntil(() => refused >= 2, { message: 'the letter refused' });
    locks.revoke(NAME);
    // The node stands by, takes the lock again (token 2) and meets the poison event again.
    await waitUntil(async () => (await subscription.status()).fencingToken === 2 && refused >= 4, { message: 'the new leadership waiting on the store' });
    await subscription.stop();
    assert.equal(await t.state(subscription), 'stopped');
    assert.equal(await t.checkpoints.load(NAME), 1, 'the poison event is not behind the checkpoint');
    assert.equal(await inner.count({ source: NAME }), 0);

    down = false;
    await subscription.start();
    await waitUntil(async () => (await t.checkpoints.load(NAME)) === 3);
    assert.deepEqual((await inner.list({ source: NAME })).map((l) => [l.eventPosition, l.stage]), [[2, 'handler']]);
    // A loss saves nothing (a newer leader may own the checkpoint): event 1 comes again, at least once.
    assert.deepEqual(t.seen.map((e) => [e.position, e.token]), [[1, 1], [1, 2], [3, 3]]);
  });

  it('5. stop() while waiting for the lock resolves at once; the node never claimed nor handled anything', async () => {
    const locks = new MemoryLockRegistry();
    const t = setup({ leaderLock: locks });
    const other = await locks.acquire(NAME);
    const subscription = t.make();
    await appendMany(t.store, 2);
    await subscription.start();
    await waitUntil(async () => (await subscription.status()).lockDenied);
    await subscription.stop();
    assert.equal(await t.state(subscription), 'stopped');
    assert.deepEqual(t.checkpoints.claims, []);
    assert.equal(t.seen.length, 0);
    await other.release();
    assert.equal(locks.holderToken(NAME), undefined, 'the aborted wait left no waiter to hand the lock to');
  });

  it('6. stop() while the claim is in flight: nothing handled or saved, the lease released, a restart resumes once', async () => {
    const locks = new MemoryLockRegistry();
    const claim = gate();
    const t = setup({ leaderLock: locks });
    t.checkpoints.beforeClaim = () => claim.wait;
    const work = recordingWork();
    const subscription = t.make({ outstandingWork: work });
    await appendMany(t.store, 3);
    await subscription.start();
    await waitUntil(() => t.checkpoints.claims.length === 1);
    const stopping = subscription.stop();
    claim.open();
    await stopping;
    assert.equal(await t.state(subscription), 'stopped');
    assert.equal(t.seen.length, 0);
    assert.deepEqual(t.checkpoints.saves, []);
    assert.equal(locks.holderToken(NAME), undefined);
    // The claim is not waited for (a database that stopped answering must not hold a stop()), so the
    // work never began.
    assert.deepEqual(work.calls, []);

    t.checkpoints.beforeClaim = undefined;
    await subscription.start();
    await waitUntil(async () => (await t.checkpoints.load(NAME)) === 3);
    assert.deepEqual(t.seen, [1, 2, 3].map((position) => ({ position, token: 2 })));
  });

  it('7. the lease lost while the claim is in flight: the node stands by, takes the lock again and handles each event once', async () => {
    const locks = new MemoryLockRegistry();
    const claim = gate();
    const t = setup({ leaderLock: locks });
    let claims = 0;
    t.checkpoints.beforeClaim = () => (++claims === 1 ? claim.wait : Promise.resolve());
    const subscription = t.make();
    await appendMany(t.store, 3);
    await subscription.start();
    await waitUntil(() => t.checkpoints.claims.length === 1);
    locks.revoke(NAME);
    claim.open();
    await waitUntil(async () => (await t.checkpoints.load(NAME)) === 3);
    assert.deepEqual(t.checkpoints.claims, [1, 2]);
    assert.deepEqual(t.seen, [1, 2, 3].map((position) => ({ position, token: 2 })));
    assert.equal((await subscription.status()).fencingToken, 2);
  });

  it('8. stop() while a transient claim failure is being retried resolves promptly; a claim that fails for good fails the run', async () => {
    const locks = new MemoryLockRegistry();
    let failures = 0;
    const t = setup({ leaderLock: locks, pollIntervalMs: 60_000, retry: { maxAttempts: 3, initialDelayMs: 60_000, maxDelayMs: 60_000 } });
    t.checkpoints.beforeClaim = async () => {
      failures += 1;
      throw new Error('connection terminated unexpectedly');
    };
    const subscription = t.make();
    await subscription.start();
    await waitUntil(() => failures >= 1);
    await subscription.stop(); // the backoff wait (up to a minute) is cut short
    assert.equal(await t.state(subscription), 'stopped');
    assert.equal(locks.holderToken(NAME), undefined);

    t.checkpoints.beforeClaim = async () => {
      throw new StoreClosedError('checkpoint store');
    };
    await subscription.start();
    const status = await subscription.whenStopped();
    assert.equal(status.state, 'failed');
    assert.ok(isEskitError(status.error, 'ESKIT_STORE_CLOSED'));
    assert.equal(locks.holderToken(NAME), undefined, 'a failed run gives up its lease');
  });

  it('9. start() while stop() is pending is refused; start() right after stop() resolves resumes with nothing lost or repeated', async () => {
    const held = gate();
    let entered = false;
    const t = setup({
      handler: async (event, context) => {
        if (event.position === 2 && !entered) {
          entered = true;
          await held.wait;
        }
        t.seen.push({ position: event.position, token: context.fencingToken });
      },
    });
    const subscription = t.make();
    await appendMany(t.store, 4);
    await subscription.start();
    await waitUntil(() => entered);
    const stopping = subscription.stop();
    await assert.rejects(subscription.start(), (error) => isEskitError(error, 'ESKIT_ALREADY_STARTED'));
    held.open();
    await stopping;
    assert.equal(await t.checkpoints.load(NAME), 2);
    await subscription.start();
    await appendMany(t.store, 1);
    await waitUntil(async () => (await t.checkpoints.load(NAME)) === 5);
    assert.deepEqual(t.seen.map((e) => e.position), [1, 2, 3, 4, 5]);
  });

  it('10. the lease lost during the final save of a stop: a newer leader\'s claim fences it, so the stale node cannot move the checkpoint', async () => {
    const locks = new MemoryLockRegistry();
    const save = gate();
    const t = setup({ leaderLock: locks, checkpointIntervalMs: 60_000 });
    let held = false;
    const a = t.make({
      handler: (event, context) => {
        t.seen.push({ position: event.position, token: context.fencingToken });
      },
    });
    const b = t.make();
    await appendMany(t.store, 2);
    await a.start();
    await waitUntil(async () => (await t.checkpoints.load(NAME)) === 2);
    await b.start();
    await waitUntil(async () => (await b.status()).lockDenied);
    t.checkpoints.beforeSave = async () => {
      if (held) return;
      held = true;
      await save.wait;
    };
    await appendMany(t.store, 1);
    await waitUntil(() => t.seen.length === 3);
    // a's save of 3 is held; stop it, lose its lease, let b claim, then let a's stale save through.
    await waitUntil(() => held);
    const stopping = a.stop();
    locks.revoke(NAME);
    await waitUntil(() => t.checkpoints.claims.includes(2));
    save.open();
    await stopping;
    assert.equal(await t.state(a), 'stopped');
    await waitUntil(async () => (await t.checkpoints.load(NAME)) === 3);
    assert.ok(!t.checkpoints.saves.some(([position, token]) => token === 1 && position === 3), 'the stale save was fenced');
    assert.deepEqual(t.seen.filter((e) => e.token === 2).map((e) => e.position), [3], 'b redid only what a had not checkpointed');
  });
});
