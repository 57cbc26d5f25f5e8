// Red team: lifecycle races in the automation engine (failures, stops and lease losses while its
// to-do list has work in flight). On the memory adapters; interleavings are forced with gates.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  Automation,
  FencedError,
  PermanentFailure,
  isEskitError,
  silentLogger,
} from '../../src/index.js';
import type { CheckpointStore, CompletionStore, LogFilter, StoredEventRow } from '../../src/adapter/index.js';
import { StoreClosedError } from '../../src/adapter/index.js';
import { MemoryCheckpointStore, MemoryCompletionStore, MemoryDeadLetterStore, MemoryEventStore, MemoryLockRegistry } from '../../src/memory/index.js';
import type { AutomationOptions, DeadLetterStore, EventShape } from '../../src/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { gate, openAfterTest, openGatesThenStopAfterEach, stopAfterTest, until } from '../support/gates.js';

const NAME = 'auto';
type Payload = { n: number };
type Options = AutomationOptions<EventShape, Payload>;

openGatesThenStopAfterEach();

/** An event store whose single-event reads (the redrive path's) can be made to fail, as a dropped connection would. */
class FlakyPointReads extends MemoryEventStore {
  failPointReads = false;
  pointReadFailures = 0;
  protected override async readAllRows(after: number, limit: number, filter: LogFilter): Promise<StoredEventRow[]> {
    if (this.failPointReads && limit === 1) {
      this.pointReadFailures += 1;
      throw new Error('connection terminated unexpectedly');
    }
    return super.readAllRows(after, limit, filter);
  }
}

function setup(overrides: Partial<Options> = {}) {
  const store = new FlakyPointReads();
  const checkpoints = new MemoryCheckpointStore();
  const deadLetters = new MemoryDeadLetterStore();
  const completions = new MemoryCompletionStore();
  const started: number[] = [];
  const ran: Array<{ n: number; token: number | undefined }> = [];
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
    execute: (item, context) => {
      started.push(item.payload.n);
      ran.push({ n: item.payload.n, token: context.fencingToken });
    },
    ...overrides,
  };
  const make = (extra: Partial<Options> = {}): Automation<EventShape, Payload> => {
    const automation = new Automation<EventShape, Payload>({ ...options, ...extra });
    stopAfterTest(() => automation.stop());
    return automation;
  };
  const recorded = async (): Promise<number[]> =>
    [...(await completions.completedAfter(NAME, 0))].map((id) => Number(id.split('/')[0])).sort((a, b) => a - b);
  return { store, checkpoints, deadLetters, completions, started, ran, make, recorded };
}

async function appendKeys(store: MemoryEventStore, keys: readonly string[]): Promise<void> {
  for (const key of keys) await store.append(`s-${key}`, [{ type: 'Happened', data: { key } }]);
}

describe('Automation lifecycle red team', () => {
  it('1. a checkpoint store that fails for good: the automation drains what runs and starts nothing more before it reports failure', async () => {
    const held = gate();
    let saveAttempts = 0;
    const t = setup({ concurrency: 1 });
    const inner = t.checkpoints;
    const checkpoints: CheckpointStore = {
      load: (name) => inner.load(name),
      claim: (name, token) => inner.claim(name, token),
      save: async () => {
        saveAttempts += 1;
        throw new StoreClosedError('checkpoint store');
      },
      list: () => inner.list(),
    };
    const automation = t.make({
      checkpoints,
      execute: async (item, context) => {
        t.started.push(item.payload.n);
        if (item.payload.n === 2) await held.wait;
        t.ran.push({ n: item.payload.n, token: context.fencingToken });
      },
    });
    // Item 1 (a) finishes, so the checkpoint wants to move to 1; item 2 (b) is held; item 3 (c) waits for a slot.
    await appendKeys(t.store, ['a', 'b', 'c']);
    await automation.start();
    await waitUntil(() => saveAttempts >= 1, { message: 'the failing save' });
    held.open();
    const status = await automation.whenStopped();
    assert.equal(status.state, 'failed');
    assert.ok(isEskitError(status.error, 'ESKIT_STORE_CLOSED'), String(status.error));
    await waitUntil(() => t.ran.some((r) => r.n === 2), { message: 'item 2 finished' });
    assert.deepEqual(t.started, [1, 2], 'nothing started after the failure (item 3 stays for the next run)');
    assert.equal(status.pending, 1, 'item 3 is still owed');
    assert.equal(status.running, 0, 'nothing runs once whenStopped() resolved');
    assert.deepEqual(await t.recorded(), [1, 2], 'what finished is recorded, though the checkpoint could not move');
  });

  it('2. a redrive whose event cannot be read for a moment is picked up again later; no unhandled rejection', async () => {
    const rejections: unknown[] = [];
    const onRejection = (reason: unknown): void => {
      rejections.push(reason);
    };
    process.on('unhandledRejection', onRejection);
    try {
      const t = setup();
      await appendKeys(t.store, ['a']);
      const letter = await t.deadLetters.add({
        source: NAME,
        stage: 'execute',
        key: 'a',
        payload: { n: 1 },
        eventId: 'unused',
        eventType: 'Happened',
        eventPosition: 1,
        streamId: 's-a',
        attempts: [{ at: new Date(), error: 'bounced' }],
      });
      await t.checkpoints.save(NAME, 1);
      await t.deadLetters.redrive({ id: letter.id });
      t.store.failPointReads = true;
      const automation = t.make();
      await automation.start();
      await waitUntil(() => t.store.pointReadFailures >= 2, { message: 'the redrive read failing at two ticks' });
      t.store.failPointReads = false;
      await waitUntil(async () => (await t.deadLetters.count({ source: NAME })) === 0, { message: 'the redrive settled' });
      assert.deepEqual(t.ran.map((r) => r.n), [1], 'the redriven item ran once');
      await automation.stop();
      assert.deepEqual(rejections, []);
    } finally {
      process.off('unhandledRejection', onRejection);
    }
  });

  it('3. the lease lost while a stop drains: the running side effect is told (its signal fires), its late end is not recorded, the next leader runs it', async () => {
    const locks = new MemoryLockRegistry();
    const held = gate();
    const signals: AbortSignal[] = [];
    const t = setup({ leaderLock: locks });
    const first = t.make({
      execute: async (item, context) => {
        t.started.push(item.payload.n);
        signals.push(context.signal);
        await until(held.wait, context.signal);
        t.ran.push({ n: item.payload.n, token: context.fencingToken });
      },
    });
    await appendKeys(t.store, ['a']);
    await first.start();
    await waitUntil(() => signals.length === 1);
    const stopping = first.stop();
    // The stop reaches the drain through microtasks alone (memory stores); let them run.
    await new Promise((resolve) => setImmediate(resolve));
    locks.revoke(NAME);
    await waitUntil(() => signals[0]?.aborted, { message: 'the side effect told that leadership was lost' });
    await stopping;
    assert.equal((await first.status()).state, 'stopped');
    assert.deepEqual(t.ran, [], 'the abandoned attempt did not finish');
    assert.deepEqual(await t.recorded(), []);
    assert.equal((await t.checkpoints.load(NAME)) ?? 0, 0);

    const second = t.make({ leaderLock: locks });
    await second.start();
    await waitUntil(async () => (await t.checkpoints.load(NAME)) === 1);
    assert.deepEqual(t.ran, [{ n: 1, token: 2 }]);
  });

  it('4. a graceful handoff while a poll tick\'s completion write is in flight: the stop waits for it (and redoes it if it failed); no item runs twice', async () => {
    const locks = new MemoryLockRegistry();
    const inner = new MemoryCompletionStore();
    let releaseWrite!: (outcome: Error | undefined) => void;
    const heldWrite = new Promise<Error | undefined>((resolve) => (releaseWrite = resolve));
    openAfterTest(() => releaseWrite(undefined));
    let writes = 0;
    const completions: CompletionStore = {
      async markCompleted(source, items) {
        writes += 1;
        if (writes === 1) {
          const failure = await heldWrite;
          if (failure) throw failure;
        }
        return inner.markCompleted(source, items);
      },
      completedAfter: (source, position) => inner.completedAfter(source, position),
      prune: (source, position) => inner.prune(source, position),
    };
    // Item 1 can never be dead-lettered (the store is down): it holds the checkpoint at 0, so item 2
    // is kept from running again only by its completion record.
    const downLetters = new MemoryDeadLetterStore();
    const deadLetters = Object.create(downLetters) as DeadLetterStore;
    deadLetters.add = async () => {
      throw new Error('dead-letter store unreachable');
    };
    const t = setup({ leaderLock: locks, completions, deadLetters });
    const execute = (node: string) => (item: { payload: Payload }, context: { fencingToken: number | undefined }) => {
      if (item.payload.n === 1) throw new PermanentFailure('never works');
      t.ran.push({ n: item.payload.n, token: context.fencingToken });
      t.started.push(node === 'a' ? item.payload.n : -item.payload.n);
    };
    const a = t.make({ execute: execute('a') });
    const b = t.make({ execute: execute('b') });
    await a.start();
    await waitUntil(async () => (await a.status()).state === 'leading');
    await b.start();
    await waitUntil(async () => (await b.status()).lockDenied);
    await appendKeys(t.store, ['p', 'x']);
    await waitUntil(() => writes === 1, { message: 'the tick writing item 2\'s record' });
    const stopping = a.stop();
    // The stop runs on microtasks alone (memory stores): let it get as far as it goes, then fail the write.
    await new Promise((resolve) => setImmediate(resolve));
    releaseWrite(new Error('completion store unreachable'));
    await stopping;
    await waitUntil(async () => (await b.status()).handled === 2, { message: 'b triggered both events' });
    assert.deepEqual(t.started, [2], 'item 2 ran once, on a; b found its record');
    assert.deepEqual([...(await inner.completedAfter(NAME, 0))], ['2/1:x']);
    assert.equal((await t.checkpoints.load(NAME)) ?? 0, 0, 'item 1 still holds the checkpoint');
  });

  it('5. an execute fenced downstream (a newer token won there) steps the node down: not retried, not dead-lettered; the next leadership runs it with a newer token', async () => {
    for (const leaderLock of [new MemoryLockRegistry(), undefined]) {
      // The downstream system already saw token 2 from a newer leader (or, without leader election,
      // some other writer); this node's first leadership holds token 1 (or none).
      const downstream = { token: 2 };
      const calls: Array<number | undefined> = [];
      const t = setup({
        leaderLock,
        execute: (item, context) => {
          calls.push(context.fencingToken);
          const token = context.fencingToken ?? 0;
          if (token < downstream.token) {
            if (!leaderLock) downstream.token = 0; // without a lock, a later try gets through
            throw new FencedError(NAME, token, 2);
          }
          t.ran.push({ n: item.payload.n, token: context.fencingToken });
        },
      });
      const automation = t.make();
      await appendKeys(t.store, ['a']);
      await automation.start();
      await waitUntil(async () => (await t.checkpoints.load(NAME)) === 1, { message: 'the item to run and be checkpointed' });
      const what = leaderLock ? 'with a lock' : 'without one';
      assert.equal(await t.deadLetters.count({ source: NAME }), 0, `${what}: a fenced side effect is not the item's fault`);
      assert.deepEqual(calls, leaderLock ? [1, 2] : [undefined, undefined], `${what}: one attempt per leadership, none retried`);
      assert.deepEqual(t.ran, [{ n: 1, token: leaderLock ? 2 : undefined }], what);
      assert.equal((await automation.status()).state, 'leading', what);
      await automation.stop();
    }
  });
});
