// Red team: attacks on the automation engine, each with an assertion that fails if the attack works.
// In-process, on the memory adapter (the SQLite crash tests kill real processes). No sleeps as
// synchronisation: every wait is for a condition, and "time has passed inside the engine" is measured
// in its own poll ticks (each tick lists redrive requests from the dead-letter store).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  Automation,
  PermanentFailure,
  isEskitError,
  silentLogger,
} from '../../src/index.js';
import type { AcquireOptions, CheckpointStore, CompletionStore, Lease } from '../../src/adapter/index.js';
import { MemoryCheckpointStore, MemoryCompletionStore, MemoryDeadLetterStore, MemoryEventStore, MemoryLockRegistry } from '../../src/memory/index.js';
import type {
  AutomationOptions,
  DeadLetterStore,
  EventShape,
  ExecuteContext,
  LockRegistry,
  TodoItem,
} from '../../src/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { gate, openAfterTest, openGatesThenStopAfterEach, stopAfterTest, until } from '../support/gates.js';

const NAME = 'auto';
type Payload = { n: number };
type Options = AutomationOptions<EventShape, Payload>;

openGatesThenStopAfterEach();

/** A dead-letter store that counts poll ticks (the engine lists redrive requests once per tick). */
class TickingDeadLetters implements DeadLetterStore {
  readonly inner = new MemoryDeadLetterStore();
  ticks = 0;
  add: DeadLetterStore['add'] = (letter) => this.inner.add(letter);
  list: DeadLetterStore['list'] = (query) => {
    if (query?.status === 'redrive') this.ticks += 1;
    return this.inner.list(query);
  };
  count: DeadLetterStore['count'] = (query) => this.inner.count(query);
  get: DeadLetterStore['get'] = (id) => this.inner.get(id);
  redrive: DeadLetterStore['redrive'] = (selector) => this.inner.redrive(selector);
  settleRedrive: DeadLetterStore['settleRedrive'] = (id, outcome) => this.inner.settleRedrive(id, outcome);
  discard: DeadLetterStore['discard'] = (selector) => this.inner.discard(selector);
}

function setup(overrides: Partial<Options> = {}) {
  const store = new MemoryEventStore();
  const checkpoints = new MemoryCheckpointStore();
  const deadLetters = new TickingDeadLetters();
  const completions = new MemoryCompletionStore();
  /** Successful side effects, in the order they happened. */
  const ran: Array<{ key: string; n: number; attempt: number; token: number | undefined; node: string }> = [];
  const options: Options = {
    name: NAME,
    store,
    checkpoints,
    deadLetters,
    completions,
    logger: silentLogger,
    pollIntervalMs: 5,
    retry: { maxAttempts: 3, initialDelayMs: 1, maxDelayMs: 2 },
    triggerRetry: { maxAttempts: 2, initialDelayMs: 1, maxDelayMs: 1 },
    trigger: (event) => ({ key: String((event.data as { key: string }).key), payload: { n: event.position } }),
    execute: (item, ctx) => {
      ran.push({ key: item.key, n: item.payload.n, attempt: ctx.attempt, token: ctx.fencingToken, node: 'default' });
    },
    ...overrides,
  };
  const make = (extra: Partial<Options> = {}): Automation<EventShape, Payload> => {
    const automation = new Automation<EventShape, Payload>({ ...options, ...extra });
    stopAfterTest(() => automation.stop());
    return automation;
  };
  const checkpoint = (): Promise<number | undefined> => checkpoints.load(NAME);
  /** Waits until the engine has polled `count` more times: lets time pass inside it, without a sleep. */
  const ticks = async (count: number): Promise<void> => {
    const target = deadLetters.ticks + count;
    await waitUntil(() => deadLetters.ticks >= target, { message: `${count} poll ticks` });
  };
  const runsOf = (n: number) => ran.filter((r) => r.n === n);
  return { store, checkpoints, deadLetters, completions, ran, options, make, checkpoint, ticks, runsOf };
}

async function appendKeys(store: MemoryEventStore, keys: readonly string[]): Promise<void> {
  for (const key of keys) await store.append(`s-${key}`, [{ type: 'Happened', data: { key } }]);
}

async function waitForCheckpoint(checkpoint: () => Promise<number | undefined>, position: number, timeoutMs = 5_000): Promise<void> {
  await waitUntil(async () => (await checkpoint()) === position, { timeoutMs, message: `checkpoint ${position}` });
}

/** Event positions with a completion record (ids are `${position}/${itemId}`; the item id format is the engine's). */
async function recordedPositions(completions: CompletionStore): Promise<number[]> {
  return [...(await completions.completedAfter(NAME, 0))].map((id) => Number(id.split('/')[0])).sort((a, b) => a - b);
}

/** A registry whose leases never learn they were lost (a frozen process, a partition): only fencing can stop them. */
class ZombieLocks implements LockRegistry {
  constructor(private readonly inner: MemoryLockRegistry) {}
  async acquire(name: string, options?: AcquireOptions): Promise<Lease> {
    const lease = await this.inner.acquire(name, options);
    return { name: lease.name, fencingToken: lease.fencingToken, signal: new AbortController().signal, release: () => lease.release() };
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

describe('Automation red team', () => {
  it('1. start twice (even concurrently) is an error, not a crash; stop twice is safe; a stopped automation restarts', async () => {
    const t = setup();
    await appendKeys(t.store, ['a', 'b']);
    const automation = t.make();
    const results = await Promise.allSettled([automation.start(), automation.start()]);
    assert.deepEqual(results.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
    const rejected = results.find((r) => r.status === 'rejected');
    assert.ok(isEskitError(rejected?.reason, 'ESKIT_ALREADY_STARTED'));
    await assert.rejects(automation.start(), { code: 'ESKIT_ALREADY_STARTED' });
    await waitForCheckpoint(t.checkpoint, 2);

    await Promise.all([automation.stop(), automation.stop()]);
    await automation.stop();
    assert.equal((await automation.status()).state, 'stopped');
    await t.make().stop(); // never started: nothing to do

    await appendKeys(t.store, ['c']);
    await automation.start();
    await waitForCheckpoint(t.checkpoint, 3);
    assert.deepEqual(t.ran.map((r) => r.n), [1, 2, 3], 'each item once, across the restart');
  });

  it('2. stop during execute drains the side effect in flight and loses none of the items queued behind it', async () => {
    const blocker = gate();
    const t = setup({ concurrency: 1 });
    const first = t.make({
      execute: async (item) => {
        if (item.payload.n === 1) await blocker.wait;
        t.ran.push({ key: item.key, n: item.payload.n, attempt: 1, token: undefined, node: 'first' });
      },
    });
    // Item 1 (key a) runs; 2 (b), 3 (a) and 4 (c) wait: behind the concurrency limit or behind key a.
    await appendKeys(t.store, ['a', 'b', 'a', 'c']);
    await first.start();
    await waitUntil(async () => {
      const status = await first.status();
      return status.running === 1 && status.handled === 4;
    });
    const stopping = first.stop();
    blocker.open();
    await stopping;
    assert.deepEqual(t.ran.map((r) => r.n), [1], 'the side effect in flight finished; nothing new started');
    const saved = (await t.checkpoint()) ?? 0;
    assert.ok(saved < 2, `the checkpoint after stop() (${saved}) must stay below item 2, which never ran`);

    const second = t.make({
      execute: (item) => {
        t.ran.push({ key: item.key, n: item.payload.n, attempt: 1, token: undefined, node: 'second' });
      },
    });
    await second.start();
    await waitForCheckpoint(t.checkpoint, 4);
    assert.deepEqual(t.ran.map((r) => `${r.n}:${r.node}`).sort(), ['1:first', '2:second', '3:second', '4:second']);
  });

  it('3a. an execute that never settles times out (its signal fires), keeps its key busy (never two attempts at once), other keys go on; stop() abandons it', async () => {
    const signals: AbortSignal[] = [];
    const t = setup({
      timeoutMs: 30,
      drainTimeoutMs: 100,
      retry: { maxAttempts: 2, initialDelayMs: 1, maxDelayMs: 1 },
      execute: (item, ctx) => {
        if (item.key === 'hang') {
          signals.push(ctx.signal);
          return new Promise(() => {});
        }
        t.ran.push({ key: item.key, n: item.payload.n, attempt: ctx.attempt, token: undefined, node: 'a' });
        return undefined;
      },
    });
    await appendKeys(t.store, ['hang', 'fine', 'hang']);
    const automation = t.make();
    await automation.start();
    await waitUntil(() => t.ran.length === 1, { message: 'the other key ran while hang hung' });
    await waitUntil(async () => (await automation.status()).hung === 1, { message: 'the status shows the hung attempt' });
    assert.equal(signals.length, 1, 'no second attempt of the key while the first has not settled');
    assert.ok(signals[0]?.aborted && isEskitError(signals[0]?.reason, 'ESKIT_TIMEOUT'), 'the hung attempt was told to stop');
    assert.equal((await automation.status()).running, 0, 'a hung attempt holds its key, not a slot');
    assert.equal(await t.deadLetters.count({ source: NAME }), 0);
    const started = performance.now();
    await automation.stop();
    assert.ok(performance.now() - started < 1_000, 'stop() gives up on the hung attempt after the drain timeout');
    assert.ok(((await t.checkpoint()) ?? 0) < 1, 'the checkpoint stays before the item that never finished');
  });

  it('3b. stop() while an execute hangs completes (within the drain timeout) and does not count the item as done', async () => {
    const drainTimeoutMs = 200;
    const t = setup({ timeoutMs: 10_000, drainTimeoutMs, retry: { maxAttempts: 5, initialDelayMs: 1, maxDelayMs: 1 } });
    const first = t.make({ execute: () => new Promise(() => {}) });
    await appendKeys(t.store, ['a']);
    await first.start();
    await waitUntil(async () => (await first.status()).running === 1);
    const started = performance.now();
    await first.stop();
    const took = performance.now() - started;
    assert.ok(took < drainTimeoutMs + 1_000, `stop() completed in ${Math.round(took)} ms`);
    assert.equal((await first.status()).state, 'stopped');
    assert.equal(await t.deadLetters.count({ source: NAME }), 0, 'stopping is not failing: no dead letter');
    const saved = (await t.checkpoint()) ?? 0;
    assert.ok(saved < 1, `the checkpoint after stop() (${saved}) must stay below the item that never finished`);

    const second = t.make();
    await second.start();
    await waitForCheckpoint(t.checkpoint, 1);
    assert.equal(t.runsOf(1).length, 1, 'the restarted automation ran it');
  });

  it('4. execute and trigger throwing non-Errors (string, null, undefined, object, number) fail, never succeed', async () => {
    const thrown: unknown[] = ['a string', null, undefined, { code: 42, why: 'object' }, 7];
    const t = setup({
      retry: { maxAttempts: 2, initialDelayMs: 1, maxDelayMs: 1 },
      trigger: (event) => {
        const key = (event.data as { key: string }).key;
        if (key === 'trigger-null') throw null;
        if (key === 'trigger-undefined') throw undefined;
        return { key, payload: { n: event.position } };
      },
      execute: (item) => {
        if (item.payload.n <= thrown.length) throw thrown[item.payload.n - 1];
        t.ran.push({ key: item.key, n: item.payload.n, attempt: 1, token: undefined, node: 'a' });
      },
    });
    await appendKeys(t.store, ['s', 'null', 'undefined', 'object', 'number', 'trigger-null', 'trigger-undefined', 'ok']);
    const automation = t.make();
    await automation.start();
    await waitForCheckpoint(t.checkpoint, 8);
    assert.deepEqual(t.ran.map((r) => r.key), ['ok'], 'no failing item counted as done');
    const letters = await t.deadLetters.list({ source: NAME });
    const byPosition = new Map(letters.map((l) => [l.eventPosition, l]));
    assert.equal(letters.length, 7);
    const errors = (position: number) => byPosition.get(position)?.attempts.map((a) => a.error);
    assert.deepEqual(errors(1), ['a string', 'a string']);
    assert.deepEqual(errors(2), ['Error: execute threw a nullish value', 'Error: execute threw a nullish value']);
    assert.deepEqual(errors(3), ['Error: execute threw a nullish value', 'Error: execute threw a nullish value']);
    assert.deepEqual(errors(4), ['{"code":42,"why":"object"}', '{"code":42,"why":"object"}']);
    assert.deepEqual(errors(5), ['7', '7']);
    assert.equal(byPosition.get(6)?.stage, 'trigger');
    assert.equal(byPosition.get(7)?.stage, 'trigger');
    assert.deepEqual(errors(6), ['null', 'null']);
    assert.deepEqual(errors(7), ['undefined', 'undefined']);
    assert.equal((await automation.status()).state, 'leading', 'still running');
  });

  it('5a. poison events: a trigger that keeps failing is dead-lettered (PermanentFailure at once), a flaky one heals', async () => {
    let flaky = 0;
    const triggerCalls = new Map<number, number>();
    const t = setup({
      triggerRetry: { maxAttempts: 3, initialDelayMs: 1, maxDelayMs: 1 },
      trigger: (event) => {
        triggerCalls.set(event.position, (triggerCalls.get(event.position) ?? 0) + 1);
        const key = (event.data as { key: string }).key;
        if (key === 'poison') throw new Error('cannot parse');
        if (key === 'permanent') throw new PermanentFailure('never parseable');
        if (key === 'flaky' && flaky++ < 2) throw new Error('flaky');
        return { key, payload: { n: event.position } };
      },
    });
    await appendKeys(t.store, ['a', 'poison', 'permanent', 'flaky', 'b']);
    await t.make().start();
    await waitForCheckpoint(t.checkpoint, 5);
    assert.deepEqual(t.ran.map((r) => r.key), ['a', 'flaky', 'b']);
    const letters = await t.deadLetters.list({ source: NAME });
    assert.deepEqual(letters.map((l) => [l.eventPosition, l.stage, l.attempts.length]), [
      [2, 'trigger', 3],
      [3, 'trigger', 1],
    ]);
    assert.equal(triggerCalls.get(3), 1, 'PermanentFailure skips the retries');
    assert.equal(triggerCalls.get(4), 3, 'the flaky trigger healed on its third attempt');
  });

  it('5b. a corrupt event stops the automation visibly and wholly: nothing at or after it runs, no polling, no redrives', async () => {
    let healthy = false;
    const t = setup({
      retry: { maxAttempts: 1, initialDelayMs: 1, maxDelayMs: 1 },
      execute: (item) => {
        if (item.key === 'bad' && !healthy) throw new Error('bounce');
        t.ran.push({ key: item.key, n: item.payload.n, attempt: 1, token: undefined, node: 'a' });
      },
    });
    await appendKeys(t.store, ['bad', 'a']);
    const automation = t.make();
    await automation.start();
    await waitForCheckpoint(t.checkpoint, 2);
    assert.equal(await t.deadLetters.count({ source: NAME }), 1);

    // Stopped while the event is written and damaged, so that it cannot be read before it is corrupt.
    await automation.stop();
    await appendKeys(t.store, ['c', 'd']);
    t.store.corruptForTesting(3, { data: '{not json' });
    await automation.start();
    const status = await automation.whenStopped();
    assert.equal(status.state, 'failed');
    assert.ok(isEskitError(status.error, 'ESKIT_CORRUPT_EVENT'), `failed with ${String(status.error)}`);
    assert.deepEqual(t.ran.map((r) => r.n), [2], 'nothing at or after the corrupt event ran');
    assert.equal(await t.checkpoint(), 2);

    // A failed automation no longer leads: it must not keep polling, nor run redrives (with leader
    // election another node may lead by now). Another automation's poll ticks serve as the clock.
    // (Should it keep polling, the hanging list() below ends its timer chain, so the file can exit.)
    openAfterTest(() => (t.deadLetters.list = () => new Promise(() => {})));
    const ticksAtFailure = t.deadLetters.ticks;
    healthy = true;
    assert.equal(await t.deadLetters.redrive({ source: NAME }), 1);
    const clock = setup();
    await clock.make().start();
    await clock.ticks(10);
    assert.equal(t.deadLetters.ticks, ticksAtFailure, 'the failed automation is still polling');
    assert.deepEqual(t.ran.map((r) => r.n), [2], 'the failed automation ran a redrive');
    assert.equal((await t.deadLetters.list({ source: NAME }))[0]?.status, 'redrive', 'the redrive waits for a leading node');
  });

  it('6a. a trigger returning garbage dead-letters its event whole (no partial items) and the automation goes on', async () => {
    const garbage: Record<string, unknown> = {
      number: 42,
      string: 'send-mail',
      boolean: true,
      'no key': { payload: { n: 0 } },
      'numeric key': { key: 5, payload: { n: 0 } },
      'empty key': { key: '', payload: { n: 0 } },
      'null item': [null],
      'valid then garbage': [{ key: 'partial', payload: { n: 0 } }, { nope: true }],
    };
    const names = Object.keys(garbage);
    const t = setup({
      trigger: ((event) => {
        const key = (event.data as { key: string }).key;
        return key in garbage ? garbage[key] : { key, payload: { n: event.position } };
      }) as Options['trigger'],
    });
    await appendKeys(t.store, ['first', ...names, 'last']);
    await t.make().start();
    await waitForCheckpoint(t.checkpoint, names.length + 2);
    assert.deepEqual(t.ran.map((r) => r.key), ['first', 'last'], 'the valid item before the garbage one did not run either');
    const letters = await t.deadLetters.list({ source: NAME });
    assert.deepEqual(letters.map((l) => l.eventPosition), names.map((_, i) => i + 2));
    for (const letter of letters) {
      assert.equal(letter.stage, 'trigger');
      assert.match(letter.attempts[0]?.error ?? '', /ESKIT|trigger must return/);
    }
  });

  it('6b. an item whose payload JSON cannot hold (undefined, BigInt) and whose execute fails still ends in the dead-letter queue', async () => {
    const t = setup({
      retry: { maxAttempts: 1, initialDelayMs: 1, maxDelayMs: 1 },
      trigger: ((event) => {
        const key = (event.data as { key: string }).key;
        if (key === 'no-payload') return { key };
        if (key === 'bigint') return { key, payload: { n: 10n } };
        return { key, payload: { n: event.position } };
      }) as Options['trigger'],
      execute: (item) => {
        if (item.key !== 'ok') throw new Error('mail server says no');
        t.ran.push({ key: item.key, n: item.payload.n, attempt: 1, token: undefined, node: 'a' });
      },
    });
    await appendKeys(t.store, ['no-payload', 'bigint', 'ok']);
    await t.make().start();
    await waitUntil(() => t.ran.length === 1);
    // Stuck here means: the dead letter can never be stored, and the item holds the checkpoint forever.
    await waitForCheckpoint(t.checkpoint, 3, 3_000);
    const letters = await t.deadLetters.list({ source: NAME });
    assert.deepEqual(letters.map((l) => l.eventPosition).sort(), [1, 2]);
  });

  it('7a. a zombie leader (its lease signal never fires) cannot move the checkpoint; its first fenced write stops it', async () => {
    const locks = new MemoryLockRegistry();
    const blocker = gate();
    const saves: Array<{ node: string; position: number; token: number | undefined; outcome: string }> = [];
    const t = setup();
    const fencedCheckpoints = (node: string): CheckpointStore => ({
      load: (name) => t.checkpoints.load(name),
      claim: (name, token) => t.checkpoints.claim(name, token),
      list: () => t.checkpoints.list(),
      async save(name, position, options) {
        try {
          await t.checkpoints.save(name, position, options);
          saves.push({ node, position, token: options?.fencingToken, outcome: 'saved' });
        } catch (error) {
          saves.push({ node, position, token: options?.fencingToken, outcome: isEskitError(error, 'ESKIT_FENCED') ? 'fenced' : 'error' });
          throw error;
        }
      },
    });
    const node = (id: string, registry: LockRegistry) =>
      t.make({
        leaderLock: registry,
        checkpoints: fencedCheckpoints(id),
        execute: async (item, ctx) => {
          if (id === 'zombie' && item.payload.n === 2) await blocker.wait;
          t.ran.push({ key: item.key, n: item.payload.n, attempt: ctx.attempt, token: ctx.fencingToken, node: id });
        },
      });
    const zombie = node('zombie', new ZombieLocks(locks));
    const healthy = node('healthy', locks);
    await appendKeys(t.store, ['k1', 'k2', 'k3']);
    await zombie.start();
    await waitForCheckpoint(t.checkpoint, 1);
    await waitUntil(() => t.ran.some((r) => r.node === 'zombie' && r.n === 3));
    await healthy.start();
    // The zombie's lease expires without it noticing; the healthy node takes over with token 2.
    locks.revoke(NAME);
    await waitForCheckpoint(t.checkpoint, 3);
    assert.equal((await t.checkpoints.list())[0]?.fencingToken, 2);

    blocker.open(); // the zombie's late result arrives
    await waitUntil(() => saves.some((s) => s.node === 'zombie' && s.outcome === 'fenced'), { message: 'the zombie tries to save and is fenced' });
    assert.deepEqual(
      saves.filter((s) => s.node === 'zombie').map((s) => `${s.position}@${String(s.token)}:${s.outcome}`),
      ['1@1:saved', '3@1:fenced'],
    );
    assert.deepEqual((await t.checkpoints.list()).map((c) => [c.position, c.fencingToken]), [[3, 2]], 'the row is the new leader\'s');
    await waitUntil(async () => (await zombie.status()).state === 'standby', { message: 'the fenced zombie stands by' });

    await appendKeys(t.store, ['k4']);
    await waitForCheckpoint(t.checkpoint, 4);
    assert.deepEqual(t.runsOf(4).map((r) => `${r.node}@${String(r.token)}`), ['healthy@2'], 'after the fence only the leader runs items');
    assert.ok(t.ran.filter((r) => r.node === 'zombie').every((r) => r.token === 1));
  });

  it('7b. a lease revoked mid-execute: the attempt is told (signal), its late result is neither checkpointed nor recorded', async () => {
    const locks = new MemoryLockRegistry();
    const blocker = gate();
    let abortedWith: unknown;
    const t = setup({ leaderLock: locks });
    const a = t.make({
      execute: async (item, ctx: ExecuteContext) => {
        if (item.payload.n === 1) {
          ctx.signal.addEventListener('abort', () => (abortedWith = ctx.signal.reason), { once: true });
          await blocker.wait; // ignores the signal on purpose: the result comes back late
        }
        t.ran.push({ key: item.key, n: item.payload.n, attempt: ctx.attempt, token: ctx.fencingToken, node: 'a' });
      },
    });
    const b = t.make({
      execute: (item, ctx) => {
        t.ran.push({ key: item.key, n: item.payload.n, attempt: ctx.attempt, token: ctx.fencingToken, node: 'b' });
      },
    });
    await appendKeys(t.store, ['k1', 'k2']);
    await a.start();
    await waitUntil(async () => t.ran.some((r) => r.n === 2) && (await recordedPositions(t.completions)).includes(2));
    await b.start();
    locks.revoke(NAME);
    await waitUntil(() => abortedWith !== undefined, { message: 'the side effect told that leadership was lost' });
    await waitForCheckpoint(t.checkpoint, 2);
    blocker.open();
    await waitUntil(() => t.ran.some((r) => r.node === 'a' && r.n === 1));
    await t.ticks(3);
    assert.deepEqual(t.ran.map((r) => `${r.n}:${r.node}@${String(r.token)}`).sort(), ['1:a@1', '1:b@2', '2:a@1']);
    assert.deepEqual((await t.checkpoints.list()).map((c) => [c.position, c.fencingToken]), [[2, 2]]);
    assert.equal((await a.status()).state, 'standby');
  });

  it('8a. redrive while the leader changes: every letter ends removed with its side effect run; none is lost', async () => {
    const locks = new MemoryLockRegistry();
    const keys = Array.from({ length: 10 }, (_, i) => `x${i}`);
    let healthy = false;
    const sideEffects = new Map<string, number>();
    const removedWithout: string[] = [];
    const t = setup({ leaderLock: locks, retry: { maxAttempts: 1, initialDelayMs: 1, maxDelayMs: 1 } });
    const settle = t.deadLetters.settleRedrive;
    const letterKeys = new Map<string, string>();
    t.deadLetters.settleRedrive = async (id, outcome) => {
      const key = letterKeys.get(id) as string;
      if (outcome.ok && !sideEffects.get(key)) removedWithout.push(key);
      return settle(id, outcome);
    };
    const node = (id: string) =>
      t.make({
        execute: async (item, ctx) => {
          if (!healthy) throw new Error('down');
          // The first leader can never finish x9: leadership must change before every letter is settled.
          if (ctx.fencingToken === 1 && item.key === 'x9') await until(new Promise<void>(() => {}), ctx.signal);
          await new Promise((resolve) => setTimeout(resolve, 1 + (item.key.charCodeAt(1) % 3)));
          ctx.signal.throwIfAborted();
          sideEffects.set(item.key, (sideEffects.get(item.key) ?? 0) + 1);
          t.ran.push({ key: item.key, n: item.payload.n, attempt: ctx.attempt, token: ctx.fencingToken, node: id });
        },
      });
    const a = node('a');
    const b = node('b');
    await appendKeys(t.store, keys);
    await a.start();
    await b.start();
    await waitForCheckpoint(t.checkpoint, keys.length);
    for (const letter of await t.deadLetters.list({ source: NAME })) letterKeys.set(letter.id, letter.key);
    assert.equal(letterKeys.size, keys.length);

    healthy = true;
    assert.equal(await t.deadLetters.redrive({ source: NAME }), keys.length);
    // Bounce leadership five times, each time as soon as some redrive has made progress.
    for (let bounce = 0; bounce < 5; bounce++) {
      const seen = t.ran.length;
      const remaining = await t.deadLetters.count({ source: NAME });
      if (remaining === 0) break;
      await waitUntil(async () => t.ran.length > seen || (await t.deadLetters.count({ source: NAME })) < remaining);
      locks.revoke(NAME);
    }
    await waitUntil(async () => (await t.deadLetters.count({ source: NAME })) === 0, { message: 'every letter redriven' });
    assert.deepEqual(removedWithout, [], 'no letter was settled before its side effect ran');
    for (const key of keys) assert.ok((sideEffects.get(key) ?? 0) >= 1, `${key} ran`);
    assert.ok(new Set(t.ran.map((r) => r.token)).size > 1, 'leadership did change during the redrive');
  });

  it('8b. redriving a trigger (poison) letter: its items are not lost when leadership changes before they run', async () => {
    const locks = new MemoryLockRegistry();
    const blocker = gate();
    let parseable = false;
    const t = setup({
      leaderLock: locks,
      trigger: (event) => {
        const key = (event.data as { key: string }).key;
        if (key === 'poison' && !parseable) throw new Error('cannot parse');
        return { key, payload: { n: event.position } };
      },
    });
    const a = t.make({
      execute: async (item, ctx) => {
        // On a, the redriven item hangs until a loses leadership (then it gives up: no side effect).
        if (item.key === 'poison') await until(blocker.wait, ctx.signal);
        t.ran.push({ key: item.key, n: item.payload.n, attempt: ctx.attempt, token: ctx.fencingToken, node: 'a' });
      },
    });
    const b = t.make({
      execute: (item, ctx) => {
        t.ran.push({ key: item.key, n: item.payload.n, attempt: ctx.attempt, token: ctx.fencingToken, node: 'b' });
      },
    });
    await appendKeys(t.store, ['ok', 'poison']);
    await a.start();
    await waitForCheckpoint(t.checkpoint, 2);
    assert.equal((await t.deadLetters.list({ source: NAME }))[0]?.stage, 'trigger');
    parseable = true;
    await t.deadLetters.redrive({ source: NAME });
    await waitUntil(async () => (await a.status()).running === 1, { message: 'the redriven item runs on a' });
    await b.start();
    locks.revoke(NAME);
    await waitUntil(async () => (await b.status()).state === 'leading');
    await t.ticks(5);
    const lettersLeft = await t.deadLetters.count({ source: NAME });
    const poisonRuns = t.ran.filter((r) => r.key === 'poison').length;
    assert.ok(
      lettersLeft === 1 || poisonRuns >= 1,
      `the redriven item vanished: its letter is gone (${lettersLeft} left) and its side effect never ran (${poisonRuns} runs)`,
    );
  });

  it('9a. duplicate keys in one batch run one at a time, in event order', async () => {
    const active = new Map<string, number>();
    const overlaps: string[] = [];
    const t = setup({
      batchSize: 50,
      concurrency: 8,
      trigger: (event) => ({ key: `k${event.position % 5}`, payload: { n: event.position } }),
      execute: async (item) => {
        if ((active.get(item.key) ?? 0) > 0) overlaps.push(`${item.key}@${item.payload.n}`);
        active.set(item.key, (active.get(item.key) ?? 0) + 1);
        if (item.payload.n % 3 === 0) await new Promise((resolve) => setTimeout(resolve, 1));
        active.set(item.key, (active.get(item.key) ?? 0) - 1);
        t.ran.push({ key: item.key, n: item.payload.n, attempt: 1, token: undefined, node: 'a' });
      },
    });
    await t.store.append('s', Array.from({ length: 200 }, (_, i) => ({ type: 'Happened', data: { key: String(i) } })));
    await t.make().start();
    await waitForCheckpoint(t.checkpoint, 200);
    assert.deepEqual(overlaps, []);
    for (let k = 0; k < 5; k++) {
      const order = t.ran.filter((r) => r.key === `k${k}`).map((r) => r.n);
      assert.deepEqual(order, [...order].sort((x, y) => x - y), `key k${k} in event order`);
      assert.equal(order.length, 40);
    }
  });

  it('9b. one event with items keyed "k", "k" and "k#2": each is its own item across a crash (ids must not collide)', async () => {
    const locks = new MemoryLockRegistry();
    const t = setup({
      leaderLock: locks,
      trigger: () => [
        { key: 'k', payload: { n: 1 } },
        { key: 'k', payload: { n: 2 } },
        { key: 'k#2', payload: { n: 3 } },
      ],
    });
    const a = t.make({
      execute: async (item, ctx) => {
        // The second "k" item hangs until a loses leadership.
        if (item.payload.n === 2) await until(new Promise<void>(() => {}), ctx.signal);
        t.ran.push({ key: item.key, n: item.payload.n, attempt: ctx.attempt, token: ctx.fencingToken, node: 'a' });
      },
    });
    const b = t.make({
      execute: (item, ctx) => {
        t.ran.push({ key: item.key, n: item.payload.n, attempt: ctx.attempt, token: ctx.fencingToken, node: 'b' });
      },
    });
    await appendKeys(t.store, ['one']);
    await a.start();
    await waitUntil(async () => (await t.completions.completedAfter(NAME, 0)).size >= 2, { message: 'items 1 and 3 recorded' });
    await b.start();
    locks.revoke(NAME); // a "crashes": b replays the event with a's completion records
    await waitForCheckpoint(t.checkpoint, 1);
    assert.deepEqual(
      t.ran.map((r) => `${r.n}:${r.node}`).sort(),
      ['1:a', '2:b', '3:a'],
      'the second "k" item never ran: it was mistaken for the completed "k#2" item',
    );
  });

  it('10. a backlog of 100,000 events: every item executed exactly once, checkpoint = head, in well under 20 s', { timeout: 60_000 }, async () => {
    const total = 100_000;
    const counts = new Uint8Array(total + 1);
    const t = setup({
      batchSize: 1000,
      concurrency: 16,
      trigger: (event) => ({ key: `k${event.position % 64}`, payload: { n: event.position } }),
      execute: (item) => {
        counts[item.payload.n] = (counts[item.payload.n] ?? 0) + 1;
      },
    });
    for (let from = 0; from < total; from += 1000) {
      await t.store.append(`s-${from}`, Array.from({ length: 1000 }, () => ({ type: 'Happened', data: {} })));
    }
    const automation = t.make();
    const started = performance.now();
    await automation.start();
    await waitForCheckpoint(t.checkpoint, total, 20_000);
    const took = performance.now() - started;
    assert.ok(took < 20_000, `took ${Math.round(took)} ms`);
    const wrong: number[] = [];
    for (let n = 1; n <= total; n++) if (counts[n] !== 1) wrong.push(n);
    assert.deepEqual(wrong.slice(0, 20), [], `${wrong.length} items not executed exactly once`);
    const status = await automation.status();
    assert.equal(status.position, status.head);
    assert.equal(status.pending, 0);
  });

  it('11. a dead-letter store that is down: the item holds the checkpoint until its letter is stored, once', async () => {
    let down = true;
    let refused = 0;
    const t = setup({
      retry: { maxAttempts: 2, initialDelayMs: 1, maxDelayMs: 1 },
      trigger: (event) => {
        const key = (event.data as { key: string }).key;
        if (key === 'poison') throw new Error('cannot parse');
        return { key, payload: { n: event.position } };
      },
      execute: (item) => {
        if (item.key === 'bad') throw new Error('bounce');
        t.ran.push({ key: item.key, n: item.payload.n, attempt: 1, token: undefined, node: 'a' });
      },
    });
    openAfterTest(() => (down = false)); // so that cleanup never waits on a store that stays down
    const add = t.deadLetters.add;
    t.deadLetters.add = async (letter) => {
      if (down) {
        refused += 1;
        throw new Error('dead-letter store unreachable');
      }
      return add(letter);
    };
    await appendKeys(t.store, ['ok1', 'bad', 'ok2', 'poison', 'ok3']);
    await t.make().start();
    await waitUntil(() => refused >= 6 && t.ran.some((r) => r.key === 'ok2'), { message: 'several refused letters' });
    await t.ticks(3);
    assert.ok(((await t.checkpoint()) ?? 0) < 2, 'the undeliverable failure holds the checkpoint');
    assert.ok(!t.ran.some((r) => r.key === 'ok3'), 'reading waits while the poison event cannot be dead-lettered');

    down = false;
    await waitForCheckpoint(t.checkpoint, 5);
    const letters = (await t.deadLetters.list({ source: NAME })).sort((x, y) => x.eventPosition - y.eventPosition);
    assert.deepEqual(letters.map((l) => [l.eventPosition, l.stage]), [
      [2, 'execute'],
      [4, 'trigger'],
    ], 'each stored exactly once');
    assert.equal(letters[0]?.attempts.length, 2);
    assert.deepEqual(t.ran.map((r) => r.key), ['ok1', 'ok2', 'ok3']);
  });

  it('11b. stop() while a poison event waits for a dead-letter store that is down completes, and loses nothing', async () => {
    let down = true;
    let refused = 0;
    openAfterTest(() => (down = false));
    const t = setup({
      trigger: (event) => {
        const key = (event.data as { key: string }).key;
        if (key === 'poison') throw new Error('cannot parse');
        return { key, payload: { n: event.position } };
      },
    });
    const add = t.deadLetters.add;
    t.deadLetters.add = async (letter) => {
      if (down) {
        refused += 1;
        throw new Error('dead-letter store unreachable');
      }
      return add(letter);
    };
    await appendKeys(t.store, ['a', 'poison', 'b']);
    const first = t.make();
    await first.start();
    await waitUntil(() => refused >= 2 && t.ran.length === 1, { message: 'the poison event waiting for the dead-letter store' });
    let stopped = false;
    const stopping = first.stop().then(() => (stopped = true));
    await waitUntil(() => stopped, { timeoutMs: 3_000, message: 'stop() to complete while the dead-letter store is down' });
    await stopping;
    assert.ok(((await t.checkpoint()) ?? 0) < 2, 'the poison event is not behind the checkpoint');
    assert.equal(await t.deadLetters.count({ source: NAME }), 0);

    down = false;
    const second = t.make();
    await second.start();
    await waitForCheckpoint(t.checkpoint, 3);
    assert.deepEqual((await t.deadLetters.list({ source: NAME })).map((l) => [l.eventPosition, l.stage]), [[2, 'trigger']]);
    assert.deepEqual(t.ran.map((r) => r.key), ['a', 'b']);
  });

  it('12a. a completion store that is down while running: items run once, records are written when it is back', async () => {
    const blocker = gate();
    let down = true;
    let refused = 0;
    const inner = new MemoryCompletionStore();
    const completions: CompletionStore = {
      async markCompleted(source, items) {
        if (down) {
          refused += 1;
          throw new Error('completion store unreachable');
        }
        return inner.markCompleted(source, items);
      },
      completedAfter: (source, position) => inner.completedAfter(source, position),
      prune: (source, position) => inner.prune(source, position),
    };
    const t = setup({
      completions,
      execute: async (item) => {
        if (item.payload.n === 1) await blocker.wait;
        t.ran.push({ key: item.key, n: item.payload.n, attempt: 1, token: undefined, node: 'a' });
      },
    });
    await appendKeys(t.store, ['k1', 'k2', 'k3']);
    await t.make().start();
    await waitUntil(() => t.ran.length === 2 && refused >= 3, { message: 'records refused' });
    assert.equal((await inner.completedAfter(NAME, 0)).size, 0);
    down = false;
    await waitUntil(async () => (await inner.completedAfter(NAME, 0)).size === 2, { message: 'records written once it is back' });
    assert.deepEqual(await recordedPositions(inner), [2, 3]);
    blocker.open();
    await waitForCheckpoint(t.checkpoint, 3);
    assert.deepEqual(t.ran.map((r) => r.n).sort(), [1, 2, 3]);
  });

  it('12b. a completion store that cannot be read at start: no item runs blind (that would re-run completed ones)', async () => {
    let down = false;
    let refused = 0;
    const inner = new MemoryCompletionStore();
    const completions: CompletionStore = {
      markCompleted: (source, items) => inner.markCompleted(source, items),
      async completedAfter(source, position) {
        if (down) {
          refused += 1;
          throw new Error('completion store unreachable');
        }
        return inner.completedAfter(source, position);
      },
      prune: (source, position) => inner.prune(source, position),
    };
    const t = setup({ completions });
    await appendKeys(t.store, ['k1', 'k2', 'k3']);
    // A first node completes item 2 (recorded), while 1 and 3 hang; then it is abandoned, as by a crash.
    const hung = gate();
    const crashed = t.make({
      execute: async (item) => {
        if (item.payload.n !== 2) await hung.wait;
        else t.ran.push({ key: item.key, n: item.payload.n, attempt: 1, token: undefined, node: 'crashed' });
      },
    });
    await crashed.start();
    await waitUntil(async () => (await recordedPositions(inner)).includes(2), { message: 'item 2 recorded' });
    t.ran.length = 0;

    down = true;
    const automation = t.make();
    await automation.start();
    await waitUntil(async () => (await automation.status()).state === 'failed' || refused >= 3, { message: 'fails visibly, or keeps retrying' });
    assert.equal(t.ran.length, 0, 'nothing ran without knowing what had completed');
    const status = await automation.status();
    if (status.state === 'failed') assert.match(String(status.error), /completion store unreachable/);

    down = false;
    // A failed automation is restarted by its operator; one that retries goes on by itself.
    if ((await automation.status()).state === 'failed') await automation.start();
    await waitForCheckpoint(t.checkpoint, 3);
    assert.deepEqual(t.ran.map((r) => r.n).sort(), [1, 3], 'item 2 had completed: it is not run again');
  });

  it('13. the concurrency limit holds: never more than N side effects at once (and N is reached)', async () => {
    let active = 0;
    let peak = 0;
    const t = setup({
      concurrency: 4,
      trigger: (event) => ({ key: `k${event.position}`, payload: { n: event.position } }),
      execute: async (item) => {
        active += 1;
        peak = Math.max(peak, active);
        await new Promise((resolve) => setTimeout(resolve, 2));
        active -= 1;
        t.ran.push({ key: item.key, n: item.payload.n, attempt: 1, token: undefined, node: 'a' });
      },
    });
    await t.store.append('s', Array.from({ length: 60 }, () => ({ type: 'Happened', data: {} })));
    const automation = t.make();
    await automation.start();
    await waitForCheckpoint(t.checkpoint, 60);
    assert.equal(peak, 4);
    assert.equal(t.ran.length, 60);
  });

  it('14. maxPending back-pressure: reading pauses; pending never exceeds the bound by more than one event\'s items', async () => {
    const blocker = gate();
    const maxPending = 10;
    const perEvent = 3;
    const bound = maxPending - 1 + perEvent;
    let created = 0;
    let finished = 0;
    let peak = 0;
    const t = setup({
      maxPending,
      concurrency: 2,
      trigger: (event) => {
        peak = Math.max(peak, created - finished + perEvent);
        created += perEvent;
        return Array.from({ length: perEvent }, (_, i): TodoItem<Payload> => ({ key: `k${event.position}-${i}`, payload: { n: event.position } }));
      },
      execute: async (item) => {
        await blocker.wait;
        finished += 1;
        t.ran.push({ key: item.key, n: item.payload.n, attempt: 1, token: undefined, node: 'a' });
      },
    });
    await t.store.append('s', Array.from({ length: 50 }, () => ({ type: 'Happened', data: {} })));
    const automation = t.make();
    await automation.start();
    await waitUntil(() => created >= maxPending);
    await t.ticks(5);
    const status = await automation.status();
    assert.equal(created, 4 * perEvent, 'reading stopped once the to-do list was full');
    assert.ok(status.pending <= bound, `pending ${status.pending} <= ${bound}`);
    assert.equal(status.running, 2);
    assert.ok(peak <= bound, `peak ${peak} <= ${bound}`);

    blocker.open();
    await waitForCheckpoint(t.checkpoint, 50);
    assert.ok(peak <= bound, `peak ${peak} <= ${bound}`);
    assert.equal(t.ran.length, 50 * perEvent, 'every item ran once');
    assert.equal(new Set(t.ran.map((r) => r.key)).size, 50 * perEvent);
  });
});
