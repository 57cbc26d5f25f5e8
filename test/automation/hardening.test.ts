// Issue 13: holes a review and a chaos run found in the automation runner, each proven here on the
// memory adapter (the runner is the same on every adapter; the stores' side is in the conformance
// suites).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  Automation,
  PermanentFailure,
  Subscription,
  silentLogger,
} from '../../src/index.js';
import type { CompletionStore } from '../../src/adapter/index.js';
import { MemoryCheckpointStore, MemoryCompletionStore, MemoryDeadLetterStore, MemoryEventStore, MemoryLockRegistry } from '../../src/memory/index.js';
import type { AutomationOptions, DeadLetterStore, EventShape, Logger } from '../../src/index.js';
import { automationInternals } from '../../src/automation/inspect.js';
import { waitUntil } from '../../src/testing/wait.js';
import { gate, openGatesThenStopAfterEach, stopAfterTest } from '../support/gates.js';

openGatesThenStopAfterEach();

const NAME = 'mailer';
type Payload = { n: number };

function warningsLogger(): Logger & { warnings: string[] } {
  const warnings: string[] = [];
  return { ...silentLogger, warnings, warn: (_fields, message) => warnings.push(message) };
}

function setup(overrides: Partial<AutomationOptions<EventShape, Payload>> = {}) {
  const store = new MemoryEventStore();
  const checkpoints = new MemoryCheckpointStore();
  const deadLetters = new MemoryDeadLetterStore({ checkpoints });
  const completions = new MemoryCompletionStore({ checkpoints });
  const options: AutomationOptions<EventShape, Payload> = {
    name: NAME,
    store,
    checkpoints,
    deadLetters,
    completions,
    logger: silentLogger,
    pollIntervalMs: 10,
    retry: { maxAttempts: 3, initialDelayMs: 1, maxDelayMs: 1 },
    trigger: (event) => ({ key: (event.data as { key: string }).key, payload: { n: event.position } }),
    execute: () => undefined,
    ...overrides,
  };
  const make = (more: Partial<AutomationOptions<EventShape, Payload>> = {}): Automation<EventShape, Payload> => {
    const automation = new Automation<EventShape, Payload>({ ...options, ...more });
    stopAfterTest(() => automation.stop());
    return automation;
  };
  return { store, checkpoints, deadLetters, completions, options, make };
}

async function appendKeys(store: MemoryEventStore, keys: readonly string[]): Promise<number> {
  let position = 0;
  for (const key of keys) position = (await store.append(`s-${key}`, [{ type: 'Happened', data: { key } }])).position;
  return position;
}

async function eventAt(store: MemoryEventStore, position: number) {
  for await (const event of store.readAll({ after: position - 1, limit: 1 })) return event;
  return undefined;
}

const turns = async (n: number): Promise<void> => {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve));
};

describe('Automation hardening', () => {
  it('2. a timed-out execute keeps its key busy until it settles: its retry and the next item of its key wait, other keys go on', async () => {
    const late = gate();
    const log: string[] = [];
    const active = new Map<string, number>();
    let mostAtOnce = 0;
    const signals: AbortSignal[] = [];
    const logger = warningsLogger();
    const t = setup({
      timeoutMs: 30,
      logger,
      execute: async (item, ctx) => {
        const running = (active.get(item.key) ?? 0) + 1;
        active.set(item.key, running);
        mostAtOnce = Math.max(mostAtOnce, running);
        log.push(`start ${item.key}@${item.payload.n}#${ctx.attempt}`);
        try {
          if (item.key === 'k' && item.payload.n === 1 && ctx.attempt === 1) {
            signals.push(ctx.signal);
            await late.wait; // ignores its signal, then fails late
            throw new Error('gave up late');
          }
        } finally {
          active.set(item.key, (active.get(item.key) ?? 1) - 1);
          log.push(`end ${item.key}@${item.payload.n}#${ctx.attempt}`);
        }
      },
    });
    await appendKeys(t.store, ['k', 'other', 'k']);
    const automation = t.make();
    await automation.start();
    await waitUntil(async () => (await automation.status()).hung === 1, { message: 'the timed-out attempt is hung' });
    await waitUntil(() => log.includes('end other@2#1'), { message: 'another key goes on meanwhile' });
    assert.equal(signals[0]?.aborted, true, 'its signal fired at the timeout');
    assert.deepEqual(log.filter((line) => line.includes('k@')), ['start k@1#1'], 'no retry and no next item of the key while it runs');
    assert.ok(logger.warnings.some((w) => w.includes('"k"') && /timeout/.test(w)), logger.warnings.join('\n'));
    late.open();
    await waitUntil(async () => (await t.checkpoints.load(NAME)) === 3, { message: 'everything done' });
    assert.deepEqual(log.filter((line) => line.includes('k@')), ['start k@1#1', 'end k@1#1', 'start k@1#2', 'end k@1#2', 'start k@3#1', 'end k@3#1']);
    assert.equal(mostAtOnce, 1, 'never two side effects of one key at once');
    assert.equal((await automation.status()).hung, 0);
  });

  it('3. backoff holds no slot: eight keys failing over and over (concurrency 8) do not hold up a healthy key', async () => {
    const healthy: number[] = [];
    const t = setup({
      concurrency: 8,
      retry: { maxAttempts: 20, initialDelayMs: 40, maxDelayMs: 40 },
      execute: (item) => {
        if (item.key.startsWith('failing')) throw new Error('downstream outage');
        healthy.push(item.payload.n);
      },
    });
    await appendKeys(t.store, [...Array.from({ length: 8 }, (_, i) => `failing-${i}`), 'healthy', 'healthy', 'healthy']);
    const automation = t.make();
    await automation.start();
    await waitUntil(() => healthy.length === 3, { message: 'the healthy key runs while the others back off' });
    assert.equal(await t.deadLetters.count({ source: NAME }), 0, 'every failing key was still retrying when the healthy one finished');
  });

  it('4a. finished items are recorded continuously, without waiting for a poll tick', async () => {
    const stuck = gate();
    const t = setup({
      pollIntervalMs: 60_000,
      execute: async (item) => {
        if (item.key === 'stuck') await stuck.wait;
      },
    });
    await appendKeys(t.store, ['stuck', ...Array.from({ length: 10 }, (_, i) => `k${i}`)]);
    const automation = t.make();
    await automation.start();
    // The stuck item pins the checkpoint, so the others need records of their own.
    await waitUntil(async () => (await t.completions.completedAfter(NAME, 0)).size === 10, { message: 'all ten recorded' });
    assert.equal(await t.checkpoints.load(NAME), undefined);
  });

  it('4b. no new item starts while recordWindow finished items are not yet durable', async () => {
    const writes = gate();
    const stuck = gate();
    const real = new MemoryCompletionStore();
    const completions: CompletionStore = {
      markCompleted: async (source, items, options) => {
        await writes.wait;
        await real.markCompleted(source, items, options);
      },
      completedAfter: (source, position) => real.completedAfter(source, position),
      prune: (source, position) => real.prune(source, position),
    };
    let finished = 0;
    const t = setup({
      completions,
      recordWindow: 16,
      execute: async (item) => {
        if (item.key === 'stuck') await stuck.wait;
        else finished += 1;
      },
    });
    await appendKeys(t.store, ['stuck', ...Array.from({ length: 60 }, (_, i) => `k${i}`)]);
    const automation = t.make();
    await automation.start();
    // The stuck item may finish too: it takes one place of the window.
    await waitUntil(async () => (await automation.status()).unrecorded === 15, { message: 'the window fills' });
    await turns(20);
    const status = await automation.status();
    assert.equal(finished, 15, 'nothing more ran while the window was full');
    assert.equal(status.unrecorded + status.running, 16);
    writes.open();
    await waitUntil(() => finished === 60, { message: 'the rest runs once writes land' });
    await waitUntil(async () => (await real.completedAfter(NAME, 0)).size === 60, { message: 'and is recorded' });
  });

  it('6. a transient failure reading completion records at takeover is retried, not fatal', async () => {
    const real = new MemoryCompletionStore();
    let failures = 2;
    const completions: CompletionStore = {
      markCompleted: (source, items, options) => real.markCompleted(source, items, options),
      completedAfter: async (source, position) => {
        if (failures-- > 0) throw new Error('Connection terminated unexpectedly');
        return real.completedAfter(source, position);
      },
      prune: (source, position) => real.prune(source, position),
    };
    const ran: number[] = [];
    const t = setup({ completions, execute: (item) => void ran.push(item.payload.n) });
    await appendKeys(t.store, ['a', 'b']);
    const automation = t.make({ leaderLock: new MemoryLockRegistry() });
    await automation.start();
    await waitUntil(() => ran.length === 2, { message: 'the items run after the retries' });
    assert.equal(failures, -1, 'both failures were met');
    assert.equal((await automation.status()).state, 'leading');
  });

  it('8. one item stuck for 100,000 events: memory stays bounded, and the checkpoint moves as soon as it finishes', async () => {
    const stuck = gate();
    let ran = 0;
    const t = setup({
      execute: (item) => {
        if (item.key === 'stuck') return stuck.wait;
        ran += 1;
        return undefined;
      },
    });
    await appendKeys(t.store, ['stuck']);
    const total = 100_000;
    for (let batch = 0; batch < total / 1000; batch++) {
      await t.store.append(`many-${batch}`, Array.from({ length: 1000 }, (_, i) => ({ type: 'Happened', data: { key: `k${i % 50}` } })));
    }
    const automation = t.make();
    await automation.start();
    await waitUntil(() => ran === total, { timeoutMs: 30_000, message: 'every other item ran' });
    const sizes = automationInternals(automation);
    assert.ok(sizes, 'leading');
    assert.ok(sizes.positions <= 2 * sizes.pending + 1100, `the pending positions list stays bounded: ${JSON.stringify(sizes)}`);
    assert.ok(sizes.unrecorded <= 1024, `finished items not yet durable stay within the window: ${JSON.stringify(sizes)}`);
    assert.ok(sizes.queues <= 51 && sizes.readyKeys <= 51, JSON.stringify(sizes));
    assert.equal(await t.checkpoints.load(NAME), undefined, 'the stuck item pins the checkpoint');
    stuck.open();
    await waitUntil(async () => (await t.checkpoints.load(NAME)) === total + 1, { message: 'the checkpoint moves to the head once it finishes' });
  });

  describe('10. writes of a stale leader are fenced', () => {
    async function staleLeader(t: ReturnType<typeof setup>, automation: Automation<EventShape, Payload>): Promise<void> {
      await automation.start();
      await waitUntil(async () => (await automation.status()).state === 'leading');
      // A newer leader elsewhere claims the checkpoint; this one does not know yet.
      await t.checkpoints.claim(NAME, 1000);
    }

    it('its completion records', async () => {
      const stuck = gate();
      const slow = gate();
      const t = setup({
        execute: async (item) => {
          if (item.key === 'stuck') await stuck.wait;
          if (item.key === 'slow') await slow.wait;
        },
      });
      await appendKeys(t.store, ['stuck', 'slow']);
      const automation = t.make({ leaderLock: new MemoryLockRegistry() });
      await staleLeader(t, automation);
      slow.open();
      await waitUntil(async () => (await automation.status()).state !== 'leading' || (await automation.status()).fencingToken !== 1, { message: 'it steps down' });
      assert.equal((await t.completions.completedAfter(NAME, 0)).size, 0, 'no record of the stale leader landed');
    });

    it('its dead letters', async () => {
      const failing = gate();
      const t = setup({
        execute: async (item) => {
          if (item.key === 'poison') {
            await failing.wait;
            throw new PermanentFailure('never works');
          }
        },
      });
      await appendKeys(t.store, ['poison']);
      const automation = t.make({ leaderLock: new MemoryLockRegistry() });
      await staleLeader(t, automation);
      failing.open();
      await waitUntil(async () => (await automation.status()).fencingToken !== 1, { message: 'it steps down' });
      assert.equal(await t.deadLetters.count(), 0, 'no letter of the stale leader landed');
    });

    it('its redrive settlements', async () => {
      const running = gate();
      let started = false;
      const t = setup({
        execute: async (_item, ctx) => {
          if (ctx.redrive) {
            started = true;
            await running.wait;
          }
        },
      });
      const at = await appendKeys(t.store, ['a']);
      const event = await eventAt(t.store, at);
      assert.ok(event);
      const letter = await t.deadLetters.add({
        source: NAME,
        stage: 'execute',
        key: 'a',
        payload: { n: at },
        eventId: event.id,
        eventType: event.type,
        eventPosition: at,
        streamId: event.streamId,
        attempts: [],
      });
      await t.deadLetters.redrive({ id: letter.id });
      const automation = t.make({ leaderLock: new MemoryLockRegistry() });
      await automation.start();
      await waitUntil(() => started, { message: 'the redrive runs' });
      await t.checkpoints.claim(NAME, 1000);
      running.open();
      await waitUntil(async () => (await automation.status()).fencingToken !== 1, { message: 'it steps down' });
      assert.equal((await t.deadLetters.get(letter.id))?.status, 'redrive', 'the stale settlement did not land: the new leader runs it');
    });

    it("a subscription's dead letters", async () => {
      const failing = gate();
      const checkpoints = new MemoryCheckpointStore();
      const deadLetters: DeadLetterStore = new MemoryDeadLetterStore({ checkpoints });
      const store = new MemoryEventStore();
      await store.append('s', [{ type: 'Happened', data: {} }]);
      const subscription = new Subscription({
        name: NAME,
        store,
        checkpoints,
        deadLetters,
        leaderLock: new MemoryLockRegistry(),
        logger: silentLogger,
        pollIntervalMs: 10,
        retry: { maxAttempts: 1 },
        handler: async () => {
          await failing.wait;
          throw new Error('fails');
        },
      });
      stopAfterTest(() => subscription.stop());
      await subscription.start();
      await waitUntil(async () => (await subscription.status()).state === 'leading');
      await checkpoints.claim(NAME, 1000);
      failing.open();
      await waitUntil(async () => (await subscription.status()).fencingToken !== 1, { message: 'it steps down' });
      assert.equal(await deadLetters.count(), 0);
    });
  });

  it('12a. an execute that never settles: stop() ends after drainTimeoutMs, its signal fired, checkpoint before it, lease released, a warning names it', async () => {
    const locks = new MemoryLockRegistry();
    const logger = warningsLogger();
    let signal: AbortSignal | undefined;
    const t = setup({
      logger,
      drainTimeoutMs: 100,
      execute: (item, ctx) => {
        if (item.key !== 'never') return undefined;
        signal = ctx.signal;
        return new Promise(() => undefined);
      },
    });
    await appendKeys(t.store, ['a', 'never', 'b']);
    const automation = t.make({ leaderLock: locks });
    await automation.start();
    await waitUntil(() => signal !== undefined);
    await waitUntil(async () => (await t.checkpoints.load(NAME)) === 1, { message: 'the item before it is covered' });
    const started = performance.now();
    await automation.stop();
    assert.ok(performance.now() - started < 1000, 'stop() ended');
    assert.equal(signal?.aborted, true);
    assert.equal(await t.checkpoints.load(NAME), 1, 'the checkpoint stays before the abandoned item');
    assert.equal(locks.holderToken(NAME), undefined);
    assert.ok(logger.warnings.some((w) => w.includes('"never"') && /abandoned/.test(w)), logger.warnings.join('\n'));
  });

  it('12b. a trigger that never settles gets a signal that fires at stop(), and stop() ends after drainTimeoutMs', async () => {
    let signal: AbortSignal | undefined;
    const t = setup({
      drainTimeoutMs: 100,
      trigger: (_event, context) => {
        signal = context.signal;
        return new Promise(() => undefined);
      },
    });
    await appendKeys(t.store, ['a']);
    const automation = t.make();
    await automation.start();
    await waitUntil(() => signal !== undefined);
    const started = performance.now();
    await automation.stop();
    assert.ok(performance.now() - started < 1000, 'stop() ended');
    assert.equal(signal?.aborted, true, "the trigger's signal fired");
  });

  it('12c. a redrive tick in flight at stop() is awaited: its settlement lands before stop() resolves', async () => {
    const settle = gate();
    const order: string[] = [];
    let settling = false;
    const checkpoints = new MemoryCheckpointStore();
    const real = new MemoryDeadLetterStore({ checkpoints });
    const deadLetters: DeadLetterStore = {
      add: (letter, options) => real.add(letter, options),
      list: (query) => real.list(query),
      count: (query) => real.count(query),
      get: (id) => real.get(id),
      redrive: (selector) => real.redrive(selector),
      discard: (selector) => real.discard(selector),
      settleRedrive: async (id, outcome, options) => {
        settling = true;
        await settle.wait;
        await real.settleRedrive(id, outcome, options);
        order.push('settled');
      },
    };
    const t = setup({ deadLetters, trigger: () => undefined });
    const at = await appendKeys(t.store, ['a']);
    const event = await eventAt(t.store, at);
    assert.ok(event);
    // A trigger letter whose trigger now returns nothing: the tick itself settles it.
    const letter = await real.add({ source: NAME, stage: 'trigger', key: '', payload: null, eventId: event.id, eventType: event.type, eventPosition: at, streamId: event.streamId, attempts: [] });
    await real.redrive({ id: letter.id });
    const automation = t.make({ checkpoints });
    await automation.start();
    await waitUntil(() => settling, { message: 'the tick is settling the letter' });
    const stopped = automation.stop().then(() => order.push('stopped'));
    await turns(5);
    settle.open();
    await stopped;
    assert.deepEqual(order, ['settled', 'stopped']);
  });
});
