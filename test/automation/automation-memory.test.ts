import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import {
  Automation,
  FencedError,
  PermanentFailure,
  silentLogger,
} from '../../src/index.js';
import type { CheckpointStore } from '../../src/adapter/index.js';
import { MemoryCheckpointStore, MemoryCompletionStore, MemoryDeadLetterStore, MemoryEventStore, MemoryLockRegistry } from '../../src/memory/index.js';
import type { AutomationOptions, EventShape, TodoItem } from '../../src/index.js';
import { waitUntil } from '../../src/testing/wait.js';

type Payload = { n: number };
const cleanups: Array<() => unknown> = [];
const gates: Array<() => void> = [];
afterEach(async () => {
  // Open every gate first: a stop waits for the side effects in flight.
  for (const open of gates.splice(0)) open();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((resolve) => (open = resolve));
  gates.push(() => open());
  return { wait, open };
}

function setup(overrides: Partial<AutomationOptions<EventShape, Payload>> = {}) {
  const store = new MemoryEventStore();
  const checkpoints = new MemoryCheckpointStore();
  const deadLetters = new MemoryDeadLetterStore();
  const completions = new MemoryCompletionStore();
  const executed: Array<{ key: string; n: number; attempt: number }> = [];
  const options: AutomationOptions<EventShape, Payload> = {
    name: 'mailer',
    store,
    checkpoints,
    deadLetters,
    completions,
    logger: silentLogger,
    pollIntervalMs: 10,
    retry: { maxAttempts: 3, initialDelayMs: 1, maxDelayMs: 5 },
    trigger: (event) => ({ key: String((event.data as { key: string }).key), payload: { n: event.position } }),
    execute: (item, ctx) => {
      executed.push({ key: item.key, n: item.payload.n, attempt: ctx.attempt });
    },
    ...overrides,
  };
  const automation = track(new Automation(options));
  return { store, checkpoints, deadLetters, completions, executed, automation, options };
}

function track<T extends { stop(): Promise<void> }>(runner: T): T {
  cleanups.push(() => runner.stop());
  return runner;
}

async function appendKeys(store: MemoryEventStore, keys: string[]): Promise<void> {
  for (const key of keys) await store.append(`s-${key}`, [{ type: 'Happened', data: { key } }]);
}

describe('Automation (memory)', () => {
  it('executes each item and advances the checkpoint after execution', async () => {
    const { store, checkpoints, executed, automation } = setup();
    await appendKeys(store, ['a', 'b', 'c']);
    await automation.start();
    await waitUntil(async () => (await checkpoints.load('mailer')) === 3);
    assert.deepEqual(executed.map((e) => e.n).sort(), [1, 2, 3]);
  });

  it('never advances the checkpoint past an item that has not run', async () => {
    const blocker = gate();
    const { store, checkpoints, executed, automation } = setup({
      execute: async (item) => {
        if (item.payload.n === 3) await blocker.wait;
        executed.push({ key: item.key, n: item.payload.n, attempt: 1 });
      },
    });
    await appendKeys(store, ['a', 'b', 'c', 'd', 'e']);
    await automation.start();
    await waitUntil(() => executed.length === 4);
    // Several poll ticks pass with 4, 5 done and 3 still running: the checkpoint stays below 3.
    await waitUntil(async () => (await checkpoints.load('mailer')) === 2);
    const before = (await automation.status()).handled;
    await store.append('s-f', [{ type: 'Happened', data: { key: 'f' } }]);
    await waitUntil(async () => (await automation.status()).handled === before + 1 && executed.length === 5);
    assert.equal(await checkpoints.load('mailer'), 2);
    blocker.open();
    await waitUntil(async () => (await checkpoints.load('mailer')) === 6);
  });

  it('a retrying item holds back its key and the checkpoint only; other keys go on; order per key holds', async () => {
    let failures = 0;
    const { store, checkpoints, executed, automation } = setup({
      retry: { maxAttempts: 50, initialDelayMs: 5, maxDelayMs: 5 },
      execute: (item, ctx) => {
        if (item.payload.n === 1 && failures < 10) {
          failures++;
          throw new Error('smtp down');
        }
        executed.push({ key: item.key, n: item.payload.n, attempt: ctx.attempt });
      },
    });
    await appendKeys(store, ['x', 'y', 'x', 'y', 'x']);
    await automation.start();
    await waitUntil(() => executed.filter((e) => e.key === 'y').length === 2);
    assert.equal(executed.filter((e) => e.key === 'x').length, 0, 'later x items wait behind the retrying one');
    assert.ok(((await checkpoints.load('mailer')) ?? 0) < 1);
    await waitUntil(() => executed.length === 5);
    assert.deepEqual(executed.filter((e) => e.key === 'x').map((e) => e.n), [1, 3, 5]);
    assert.equal(executed.find((e) => e.n === 1)?.attempt, 11);
    await waitUntil(async () => (await checkpoints.load('mailer')) === 5);
  });

  it('dead-letters an item after its last attempt, which releases the checkpoint', async () => {
    const { store, checkpoints, deadLetters, executed, automation } = setup({
      execute: (item, ctx) => {
        if (item.key === 'bad') throw new Error(`bounce ${ctx.attempt}`);
        executed.push({ key: item.key, n: item.payload.n, attempt: ctx.attempt });
      },
    });
    await appendKeys(store, ['ok1', 'bad', 'ok2']);
    await automation.start();
    await waitUntil(async () => (await checkpoints.load('mailer')) === 3);
    const letters = await deadLetters.list({ source: 'mailer' });
    assert.equal(letters.length, 1);
    const [letter] = letters;
    assert.equal(letter?.stage, 'execute');
    assert.equal(letter?.key, 'bad');
    assert.deepEqual(letter?.payload, { n: 2 });
    assert.equal(letter?.eventPosition, 2);
    assert.deepEqual(letter?.attempts.map((a) => a.error), ['Error: bounce 1', 'Error: bounce 2', 'Error: bounce 3']);
    assert.deepEqual(executed.map((e) => e.key).sort(), ['ok1', 'ok2']);
  });

  it('PermanentFailure skips the remaining retries', async () => {
    let calls = 0;
    const { store, checkpoints, deadLetters, automation } = setup({
      execute: () => {
        calls++;
        throw new PermanentFailure('address does not exist');
      },
    });
    await appendKeys(store, ['a']);
    await automation.start();
    await waitUntil(async () => (await checkpoints.load('mailer')) === 1);
    assert.equal(calls, 1);
    assert.equal((await deadLetters.list())[0]?.attempts.length, 1);
  });

  it('times out an execute (it gives up when its signal fires), retries it, then dead-letters it', async () => {
    const { store, checkpoints, deadLetters, automation } = setup({
      timeoutMs: 20,
      retry: { maxAttempts: 2, initialDelayMs: 1, maxDelayMs: 1 },
      execute: (item, ctx) =>
        item.key === 'hang' ? new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason))) : undefined,
    });
    await appendKeys(store, ['hang', 'fine']);
    await automation.start();
    await waitUntil(async () => (await checkpoints.load('mailer')) === 2);
    const [letter] = await deadLetters.list();
    assert.equal(letter?.attempts.length, 2);
    assert.match(letter?.attempts[0]?.error ?? '', /did not finish within 20 ms/);
  });

  it('dead-letters a poison event whose trigger keeps throwing (a non-Error) and goes on', async () => {
    const { store, checkpoints, deadLetters, executed, automation } = setup({
      triggerRetry: { maxAttempts: 2, initialDelayMs: 1, maxDelayMs: 1 },
      trigger: (event) => {
        const key = (event.data as { key: string }).key;
        if (key === 'poison') throw 'cannot parse';
        return { key, payload: { n: event.position } };
      },
    });
    await appendKeys(store, ['a', 'poison', 'b']);
    await automation.start();
    await waitUntil(async () => (await checkpoints.load('mailer')) === 3);
    const [letter] = await deadLetters.list();
    assert.equal(letter?.stage, 'trigger');
    assert.equal(letter?.eventPosition, 2);
    assert.match(letter?.attempts[0]?.error ?? '', /cannot parse/);
    assert.deepEqual(executed.map((e) => e.key).sort(), ['a', 'b']);
  });

  it('refuses a to-do key with NUL or a lone surrogate (no database can store it): the event is dead-lettered', async () => {
    const { store, checkpoints, deadLetters, executed, automation } = setup({
      triggerRetry: { maxAttempts: 1, initialDelayMs: 1, maxDelayMs: 1 },
      trigger: (event) => {
        const key = (event.data as { key: string }).key;
        return { key: key === 'nul' ? 'a\u0000b' : key === 'half' ? 'x\ud83c' : key, payload: { n: event.position } };
      },
    });
    await appendKeys(store, ['a', 'nul', 'half', 'ok \ud83c\udf89']);
    await automation.start();
    await waitUntil(async () => (await checkpoints.load('mailer')) === 4);
    const letters = await deadLetters.list();
    assert.deepEqual(
      letters.map((letter) => [letter.stage, letter.eventPosition]),
      [
        ['trigger', 2],
        ['trigger', 3],
      ],
    );
    for (const letter of letters) assert.match(letter.attempts[0]?.error ?? '', /contains NUL or a lone surrogate/);
    assert.deepEqual(executed.map((e) => e.key).sort(), ['a', 'ok \ud83c\udf89'], 'a whole emoji is fine');
  });

  it('runs two items with the same key from one event, in order, as distinct items', async () => {
    const { store, checkpoints, executed, automation, completions } = setup({
      trigger: (event) => [
        { key: 'k', payload: { n: event.position * 10 + 1 } },
        { key: 'k', payload: { n: event.position * 10 + 2 } },
      ],
    });
    await appendKeys(store, ['a', 'b']);
    await automation.start();
    await waitUntil(async () => (await checkpoints.load('mailer')) === 2);
    assert.deepEqual(executed.map((e) => e.n), [11, 12, 21, 22]);
    void completions;
  });

  it('after a restart, re-runs only items that had not completed', async () => {
    const blocker = gate();
    const first = setup({
      concurrency: 4,
      execute: async (item) => {
        if (item.key === 'slow') await blocker.wait;
        first.executed.push({ key: item.key, n: item.payload.n, attempt: 1 });
      },
    });
    await appendKeys(first.store, ['slow', 'a', 'b', 'c']);
    await first.automation.start();
    await waitUntil(() => first.executed.length === 3);
    // The completion records of a, b, c are written on the next poll tick.
    await waitUntil(async () => (await first.completions.completedAfter('mailer', 0)).size === 3);
    // Simulate a crash: abandon the first instance without letting it finish (a real SIGKILL test
    // lives in the SQLite and PostgreSQL suites) by starting a second instance on the same stores.
    const second = track(
      new Automation<EventShape, Payload>({
        ...first.options,
        execute: (item) => {
          first.executed.push({ key: `second:${item.key}`, n: item.payload.n, attempt: 1 });
        },
      }),
    );
    assert.equal(await first.checkpoints.load('mailer'), undefined, 'nothing checkpointed while slow holds it');
    await second.start();
    await waitUntil(async () => (await first.checkpoints.load('mailer')) === 4);
    assert.deepEqual(
      first.executed.filter((e) => e.key.startsWith('second:')).map((e) => e.key),
      ['second:slow'],
      'a, b and c had completed: only slow runs again',
    );
  });

  it('makes items below a pending one durable while reading is paused by back-pressure', async () => {
    // The batch waits for capacity behind the blocked "slow" items, so the runner saves no checkpoint
    // at its end: the finished a and b must be made durable all the same (the checkpoint covers them).
    const blocker = gate();
    const first = setup({
      maxPending: 2,
      execute: async (item) => {
        if (item.key === 'slow') await blocker.wait;
        first.executed.push({ key: item.key, n: item.payload.n, attempt: 1 });
      },
    });
    await appendKeys(first.store, ['a', 'b', 'slow', 'slow']);
    await first.automation.start();
    await waitUntil(async () => (await first.checkpoints.load('mailer')) === 2, { message: 'a and b covered by the checkpoint' });
    const second = track(
      new Automation<EventShape, Payload>({
        ...first.options,
        execute: (item) => {
          first.executed.push({ key: `second:${item.key}`, n: item.payload.n, attempt: 1 });
        },
      }),
    );
    await second.start();
    await waitUntil(async () => (await first.checkpoints.load('mailer')) === 4);
    assert.deepEqual(
      first.executed.filter((e) => e.key.startsWith('second:')).map((e) => e.n),
      [3, 4],
      'a and b had completed: only the slow items run again',
    );
  });

  it('an item that completed while stopping is recorded when the final checkpoint save does not happen (fenced)', async () => {
    const blocker = gate();
    let fenceSaves = false;
    const first = setup({
      execute: async (item) => {
        if (item.key === 'slow') await blocker.wait;
        first.executed.push({ key: item.key, n: item.payload.n, attempt: 1 });
      },
    });
    // The stop's own save is refused, as when a newer leader took over during the drain.
    const real = first.checkpoints;
    const refusing: CheckpointStore = {
      load: (name) => real.load(name),
      claim: (name, token) => real.claim(name, token),
      list: () => real.list(),
      save: (name, position, options) => (fenceSaves ? Promise.reject(new FencedError(name, 0, 1)) : real.save(name, position, options)),
    };
    const automation = track(new Automation<EventShape, Payload>({ ...first.options, checkpoints: refusing }));
    await appendKeys(first.store, ['a', 'slow']);
    await automation.start();
    await waitUntil(async () => first.executed.length === 1 && (await real.load('mailer')) === 1, { message: 'a done and checkpointed' });
    const stopping = automation.stop();
    fenceSaves = true;
    blocker.open();
    await stopping;
    assert.equal(await real.load('mailer'), 1, 'the final save was refused');

    const second = track(
      new Automation<EventShape, Payload>({
        ...first.options,
        execute: (item) => {
          first.executed.push({ key: `second:${item.key}`, n: item.payload.n, attempt: 1 });
        },
      }),
    );
    await second.start();
    await waitUntil(async () => (await real.load('mailer')) === 2);
    assert.deepEqual(first.executed.map((e) => e.key), ['a', 'slow'], 'slow completed under the first node: its completion was recorded, not run again');
  });

  it('after a restart, does not run again an item that was dead-lettered above the checkpoint', async () => {
    const blocker = gate();
    const first = setup({
      concurrency: 4,
      execute: async (item) => {
        if (item.key === 'slow') await blocker.wait;
        first.executed.push({ key: item.key, n: item.payload.n, attempt: 1 });
        if (item.key === 'bad') throw new PermanentFailure('550 no such domain');
      },
    });
    await appendKeys(first.store, ['slow', 'bad', 'a']);
    await first.automation.start();
    await waitUntil(async () => (await first.deadLetters.count({ source: 'mailer' })) === 1 && first.executed.length === 2);
    // Its record is written on the next poll tick, like a completion's.
    await waitUntil(async () => (await first.completions.completedAfter('mailer', 0)).size === 2);
    const second = track(
      new Automation<EventShape, Payload>({
        ...first.options,
        execute: (item) => {
          first.executed.push({ key: `second:${item.key}`, n: item.payload.n, attempt: 1 });
          if (item.key === 'bad') throw new PermanentFailure('550 no such domain');
        },
      }),
    );
    assert.equal(await first.checkpoints.load('mailer'), undefined, 'nothing checkpointed while slow holds it');
    await second.start();
    await waitUntil(async () => (await first.checkpoints.load('mailer')) === 3);
    assert.deepEqual(
      first.executed.filter((e) => e.key.startsWith('second:')).map((e) => e.key),
      ['second:slow'],
      'bad was dead-lettered and a completed: only slow runs again',
    );
    assert.equal(await first.deadLetters.count({ source: 'mailer' }), 1, 'one dead letter, not one per leader');
  });

  it('redrives dead letters: success removes them, failure puts them back with the new attempts', async () => {
    let healthy = false;
    const { store, checkpoints, deadLetters, executed, automation } = setup({
      retry: { maxAttempts: 1, initialDelayMs: 1, maxDelayMs: 1 },
      execute: (item, ctx) => {
        if (!healthy) throw new Error('down');
        executed.push({ key: ctx.redrive ? `redrive:${item.key}` : item.key, n: item.payload.n, attempt: ctx.attempt });
      },
    });
    await appendKeys(store, ['a', 'b']);
    await automation.start();
    await waitUntil(async () => (await checkpoints.load('mailer')) === 2);
    assert.equal(await deadLetters.count({ source: 'mailer' }), 2);

    const [first] = await deadLetters.list();
    assert.equal(await deadLetters.redrive({ id: first?.id as string }), 1);
    await waitUntil(async () => (await deadLetters.get(first?.id as string))?.status === 'dead');
    assert.equal((await deadLetters.get(first?.id as string))?.attempts.length, 2);

    healthy = true;
    assert.equal(await deadLetters.redrive({ source: 'mailer' }), 2);
    await waitUntil(async () => (await deadLetters.count({ source: 'mailer' })) === 0);
    assert.deepEqual(executed.map((e) => e.key).sort(), ['redrive:a', 'redrive:b']);
  });

  it('refuses a second start; stop waits for the side effect in flight', async () => {
    const blocker = gate();
    let finished = false;
    const { store, checkpoints, automation } = setup({
      execute: async () => {
        await blocker.wait;
        finished = true;
      },
    });
    await appendKeys(store, ['a']);
    await automation.start();
    await assert.rejects(automation.start(), { code: 'ESKIT_ALREADY_STARTED' });
    await waitUntil(async () => (await automation.status()).running === 1);
    const stopping = automation.stop();
    blocker.open();
    await stopping;
    assert.equal(finished, true);
    assert.equal(await checkpoints.load('mailer'), 1);
  });

  it('hammer: with staggered timings, no checkpoint is ever saved past an item that has not run', async () => {
    const done = new Set<number>();
    const violations: string[] = [];
    const base = new MemoryCheckpointStore();
    const checkpoints: CheckpointStore = {
      load: (name) => base.load(name),
      claim: (name, token) => base.claim(name, token),
      list: () => base.list(),
      save: async (name, position, options) => {
        for (let p = 1; p <= position; p++) if (!done.has(p)) violations.push(`checkpoint ${position} saved before item ${p} ran`);
        return base.save(name, position, options);
      },
    };
    const { store, automation } = setup({
      checkpoints,
      concurrency: 16,
      pollIntervalMs: 1,
      batchSize: 7,
      retry: { maxAttempts: 100, initialDelayMs: 0, maxDelayMs: 2 },
      trigger: (event) => ({ key: `k${event.position % 13}`, payload: { n: event.position } }) as TodoItem<Payload>,
      execute: async (item) => {
        const wait = (item.payload.n * 7919) % 5;
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        if (item.payload.n % 17 === 0 && Math.random() < 0.5) throw new Error('flaky');
        done.add(item.payload.n);
      },
    });
    await automation.start();
    for (let i = 0; i < 400; i++) {
      await store.append(`s${i % 11}`, [{ type: 'Happened', data: { key: String(i) } }]);
      if (i % 25 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    await waitUntil(async () => (await base.load('mailer')) === 400, { timeoutMs: 20_000 });
    assert.deepEqual(violations, []);
    assert.equal(done.size, 400);
  });

  it('with leader election, a lease lost mid-execute does not move the checkpoint; the new leader redoes it', async () => {
    const locks = new MemoryLockRegistry();
    const blocker = gate();
    const runs: Array<[string, number, number | undefined]> = [];
    const shared = setup();
    const node = (id: string) =>
      track(
        new Automation<EventShape, Payload>({
          ...shared.options,
          leaderLock: locks,
          execute: async (item, ctx) => {
            if (id === 'a' && item.payload.n === 2) await blocker.wait;
            runs.push([id, item.payload.n, ctx.fencingToken]);
          },
        }),
      );
    const a = node('a');
    const b = node('b');
    await appendKeys(shared.store, ['k1', 'k2', 'k3']);
    await a.start();
    await waitUntil(() => runs.some(([id, n]) => id === 'a' && n === 3));
    await b.start();
    locks.revoke('mailer');
    await waitUntil(async () => (await shared.checkpoints.load('mailer')) === 3);
    blocker.open();
    assert.ok(runs.some(([id, n, token]) => id === 'b' && n === 2 && token === 2), 'b ran the abandoned item');
    assert.ok((await a.status()).state === 'standby');
    const saved = (await shared.checkpoints.list())[0];
    assert.equal(saved?.fencingToken, 2);
  });
});
