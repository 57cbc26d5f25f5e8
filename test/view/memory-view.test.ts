import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { Recorded } from '../../src/core/event.js';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import { silentLogger } from '../../src/core/logger.js';
import type { EventStore, ReadAllOptions } from '../../src/core/store.js';
import { MemoryDeadLetterStore, MemoryEventStore } from '../../src/memory/index.js';
import { sqlite } from '../../src/sqlite/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { MemoryView, RebuildFailedError, waitFor } from '../../src/view/index.js';
import type { MemoryViewOptions, RebuildProgress, ViewChange } from '../../src/view/index.js';
import { databasesAfterEach } from '../sqlite/helpers.js';
import { appendMany, counted, other } from './helpers.js';
import type { TestEvent } from './helpers.js';

type Totals = Readonly<Record<string, number>>;

const stops: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const stop of stops.splice(0)) await stop();
});

function totals(store: MemoryEventStore<TestEvent>, options: Partial<MemoryViewOptions<Totals, TestEvent>> = {}): MemoryView<Totals, TestEvent> {
  const view = new MemoryView<Totals, TestEvent>({
    name: 'totals',
    store,
    types: ['Counted'],
    initialState: {},
    evolve: (state, event) => {
      if (event.type !== 'Counted') return state;
      if (event.data.bad) throw new Error(`bad event at ${event.position}`);
      return { ...state, [event.streamId]: (state[event.streamId] ?? 0) + event.data.n };
    },
    logger: silentLogger,
    retry: { maxAttempts: 2, initialDelayMs: 1, maxDelayMs: 2 },
    ...options,
  });
  stops.push(() => view.stop());
  return view;
}

describe('MemoryView', () => {
  it('folds the events of its types into its state; waitFor resolves once an append is reflected', async () => {
    const store = new MemoryEventStore<TestEvent>();
    await store.append('a', [counted(1), counted(2)]);
    const view = totals(store);
    await view.start();
    await view.waitFor(2);
    assert.deepEqual(view.state, { a: 3 });
    const { position } = await store.append('b', [counted(10), other()]);
    await waitFor(view, position);
    assert.deepEqual(view.state, { a: 3, b: 10 });
    assert.equal(view.position, position - 1, 'the checkpoint stops at the last event of its types');
    const status = await view.status();
    assert.equal(status.state, 'leading');
    assert.equal(status.setupVersion, 0);
  });

  it('a batch whose evolve throws leaves the state untouched and stops the view at that event', async () => {
    const store = new MemoryEventStore<TestEvent>();
    await store.append('a', [counted(1), counted(2), counted(3, true), counted(4)]);
    const view = totals(store);
    await view.start();
    const status = await view.whenStopped();
    assert.equal(status.state, 'failed');
    assert.ok(isEskitError(status.error, ErrorCode.HandlerFailed));
    assert.deepEqual(view.state, { a: 3 }, 'the events before the bad one, each once');
    assert.equal(view.position, 2);
  });

  it('with a dead-letter store, skips the failing event and goes on', async () => {
    const store = new MemoryEventStore<TestEvent>();
    const deadLetters = new MemoryDeadLetterStore();
    await store.append('a', [counted(1), counted(2, true), counted(4)]);
    const view = totals(store, { deadLetters });
    await view.start();
    await view.waitFor(3);
    assert.deepEqual(view.state, { a: 5 });
    assert.deepEqual(
      (await deadLetters.list({ source: 'totals' })).map((letter) => letter.eventPosition),
      [2],
    );
  });

  it('announces changes with the keys, and times out waiting when it does not run', async () => {
    const store = new MemoryEventStore<TestEvent>();
    const view = totals(store, { keysOf: (event) => event.streamId });
    const keys = new Set<string>();
    view.changes.subscribe((change) => change.keys?.forEach((key) => keys.add(key)));
    const { position } = await store.append('x', [counted(1)]);
    await assert.rejects(view.waitFor(position, { timeoutMs: 30 }), (error: unknown) => isEskitError(error, ErrorCode.Timeout));
    await view.start();
    await store.append('y', [counted(1)]);
    await waitUntil(() => keys.size === 2, { message: 'both keys announced' });
    assert.deepEqual([...keys].sort(), ['x', 'y']);
  });
});

/** A counter that also notices an event folded twice or out of order (`repeats`). */
interface Tally {
  readonly events: number;
  readonly total: number;
  readonly last: number;
  readonly repeats: number;
}

const noTally: Tally = { events: 0, total: 0, last: 0, repeats: 0 };

function fold(state: Tally, event: Recorded<TestEvent>): Tally {
  if (event.type !== 'Counted') return state;
  return { events: state.events + 1, total: state.total + event.data.n, last: event.position, repeats: state.repeats + (event.position <= state.last ? 1 : 0) };
}

function tally(store: EventStore<TestEvent>, options: Partial<MemoryViewOptions<Tally, TestEvent>> = {}): MemoryView<Tally, TestEvent> {
  const view = new MemoryView<Tally, TestEvent>({
    name: 'tally',
    store,
    types: ['Counted'],
    initialState: noTally,
    evolve: fold,
    logger: silentLogger,
    retry: { maxAttempts: 2, initialDelayMs: 1, maxDelayMs: 2 },
    ...options,
  });
  stops.push(() => view.stop());
  return view;
}

/** What a view must hold: every event of the log folded once, in order. */
async function expectedTally(store: EventStore<TestEvent>): Promise<Tally> {
  let state = noTally;
  for await (const event of store.readAll()) state = fold(state, event);
  return state;
}

/** The store, with the reads `holds` picks held after reading (so with what they read) until `release()`. */
function holdingReads(
  inner: EventStore<TestEvent>,
  holds: (options: ReadAllOptions | undefined, events: readonly Recorded<TestEvent>[]) => boolean,
): { store: EventStore<TestEvent>; waiting(): number; release(): void } {
  let waiting = 0;
  let gate: Promise<void> | undefined;
  let open = (): void => undefined;
  async function* readAll(options?: ReadAllOptions): AsyncGenerator<Recorded<TestEvent>> {
    const events: Recorded<TestEvent>[] = [];
    for await (const event of inner.readAll(options)) events.push(event);
    if (holds(options, events)) {
      waiting++;
      await (gate ??= new Promise((resolve) => (open = resolve)));
      waiting--;
    }
    yield* events;
  }
  const store: EventStore<TestEvent> = {
    append: inner.append.bind(inner),
    readStream: inner.readStream.bind(inner),
    readAll: readAll as EventStore<TestEvent>['readAll'],
    streamVersion: inner.streamVersion.bind(inner),
    deleteStream: inner.deleteStream.bind(inner),
    truncateStream: inner.truncateStream.bind(inner),
    archiveStream: inner.archiveStream.bind(inner),
    readArchived: inner.readArchived.bind(inner) as EventStore<TestEvent>['readArchived'],
    forget: inner.forget.bind(inner),
    allowNewKey: inner.allowNewKey.bind(inner),
    headPosition: inner.headPosition.bind(inner),
    onAppend: inner.onAppend.bind(inner),
    close: inner.close.bind(inner),
  };
  return {
    store,
    waiting: () => waiting,
    release: () => {
      gate = undefined;
      open();
    },
  };
}

const databases = databasesAfterEach('memory-view');

describe('MemoryView.rebuild', () => {
  for (const on of ['memory', 'sqlite'] as const) {
    it(`gives the state a fresh view folds (${on})`, async () => {
      let store: EventStore<TestEvent>;
      if (on === 'memory') store = new MemoryEventStore<TestEvent>();
      else {
        const backend = sqlite<TestEvent>({ path: databases.freshPath() });
        databases.closeAfterTest(() => backend.close());
        store = backend.store;
      }
      const head = await appendMany(store, 230);
      const view = tally(store);
      await view.start();
      await view.waitFor(head);
      const before = view.state;
      const result = await view.rebuild({ batchSize: 17 });
      assert.notEqual(view.state, before, 'a new state was swapped in');
      assert.deepEqual(view.state, await expectedTally(store));
      assert.equal(view.state.events, result.events);
      assert.equal(result.position, head);
      assert.equal(view.position, head);
      assert.equal(result.generation, 1);
      assert.equal((await view.rebuild()).generation, 2, 'generation counts the rebuilds of this instance');
      const fresh = tally(store, { name: 'fresh' });
      await fresh.start();
      await fresh.waitFor(head);
      assert.deepEqual(view.state, fresh.state);
      const { position } = await store.append('late', [counted(5)]);
      await view.waitFor(position);
      assert.deepEqual(view.state, await expectedTally(store), 'the live view goes on from the swap');
    });
  }

  it('keeps up with appends made while it runs: nothing is applied twice, the position never goes back', async () => {
    const store = new MemoryEventStore<TestEvent>();
    await appendMany(store, 400);
    const view = tally(store, { batchSize: 20 });
    await view.start();
    await view.waitFor(await store.headPosition());
    const samples: Array<{ position: number; events: number }> = [];
    const sample = (): void => {
      samples.push({ position: view.position ?? 0, events: view.state.events });
    };
    let rebuilt = false;
    const rebuilding = view.rebuild({ batchSize: 5, onProgress: sample }).finally(() => {
      rebuilt = true;
    });
    let appended = 0;
    let last = 0;
    while (!rebuilt) {
      last = (await store.append(`w-${appended % 3}`, [counted(appended % 7), other()])).position - 1;
      appended++;
      sample();
      await new Promise((resolve) => setImmediate(resolve));
    }
    const result = await rebuilding;
    sample();
    assert.ok(appended > 5, `appends went on during the rebuild (${appended})`);
    await view.waitFor(last);
    sample();
    assert.deepEqual(view.state, await expectedTally(store));
    assert.equal(view.state.repeats, 0);
    assert.ok(result.position >= 400);
    for (let i = 1; i < samples.length; i++) {
      const [before, after] = [samples[i - 1], samples[i]] as [{ position: number; events: number }, { position: number; events: number }];
      assert.ok(after.position >= before.position, `the position went from ${before.position} to ${after.position}`);
      assert.ok(after.events >= before.events, `the state went from ${before.events} events to ${after.events}`);
    }
  });

  it('a live batch read before the swap and applied after it is not applied again', async () => {
    const live = 50;
    let holding = false;
    const gated = holdingReads(new MemoryEventStore<TestEvent>(), (options) => holding && options?.limit === live);
    await gated.store.append('a', [counted(1), counted(2), counted(3)]);
    const view = tally(gated.store, { batchSize: live });
    await view.start();
    await view.waitFor(3);
    holding = true;
    await gated.store.append('a', [counted(4), counted(5)]);
    const result = await view.rebuild({ batchSize: 2 });
    assert.equal(result.position, 5);
    assert.equal(view.position, 5);
    gated.release();
    await waitUntil(async () => (await view.status()).position === 5, { message: 'the live view got past its held read' });
    assert.deepEqual(view.state, { events: 5, total: 15, last: 5, repeats: 0 });
  });

  it('takes in what the live view applied after its own last read, so the checkpoint does not go back', async () => {
    const rebuildBatch = 3;
    let shortReads = 0;
    // The rebuild's second read that finds the end of the log (its last round's) is held.
    const gated = holdingReads(new MemoryEventStore<TestEvent>(), (options, events) => options?.limit === rebuildBatch && !options.raw && events.length < rebuildBatch && ++shortReads === 2);
    await appendMany(gated.store, 20);
    const view = tally(gated.store);
    await view.start();
    await view.waitFor(20);
    const rebuilding = view.rebuild({ batchSize: rebuildBatch });
    await waitUntil(() => gated.waiting() === 1, { message: 'the last round read the log' });
    const { position } = await gated.store.append('late', [counted(6)]);
    await view.waitFor(position);
    const applied = view.state;
    gated.release();
    const result = await rebuilding;
    assert.equal(result.position, position);
    assert.equal(view.position, position);
    assert.notEqual(view.state, applied);
    assert.deepEqual(view.state, await expectedTally(gated.store));
    assert.deepEqual(view.state, applied);
  });

  it('works on a view that was never started; start() then goes on from where it got', async () => {
    const store = new MemoryEventStore<TestEvent>();
    const head = await appendMany(store, 60);
    const view = tally(store);
    assert.equal((await view.rebuild()).position, head);
    assert.equal(view.position, head);
    assert.deepEqual(view.state, await expectedTally(store));
    await view.start();
    const { position } = await store.append('b', [counted(2)]);
    await view.waitFor(position);
    assert.deepEqual(view.state, await expectedTally(store));
    assert.equal(view.state.repeats, 0);
  });

  it('tells change listeners that everything changed, and reports progress in status()', async () => {
    const store = new MemoryEventStore<TestEvent>();
    const head = await appendMany(store, 100, { otherEvery: 5 });
    const relevant = (await expectedTally(store)).events;
    const view = tally(store, { keysOf: (event) => event.streamId });
    await view.start();
    await view.waitFor(head);
    const changes: ViewChange[] = [];
    view.changes.subscribe((change) => {
      changes.push(change);
    });
    const statuses: Array<Promise<RebuildProgress | undefined>> = [];
    const reports: RebuildProgress[] = [];
    const result = await view.rebuild({
      batchSize: 10,
      onProgress: (progress) => {
        reports.push(progress);
        if (progress.done > 0 && progress.done < relevant) statuses.push(view.status().then((status) => status.rebuilding));
      },
    });
    const seen = await Promise.all(statuses);
    assert.ok(seen.length > 0);
    for (const progress of seen) {
      assert.ok(progress, 'status().rebuilding is set while it runs');
      assert.equal(progress.total, relevant);
      assert.ok(progress.done > 0 && progress.done <= relevant, JSON.stringify(progress));
    }
    assert.deepEqual(reports[reports.length - 1], { done: relevant, total: relevant });
    assert.equal((await view.status()).rebuilding, undefined);
    await waitUntil(() => changes.length > 0, { message: 'a change after the swap' });
    assert.deepEqual(changes, [{ view: 'tally', keys: undefined, position: result.position }]);
  });

  it('an aborted rebuild leaves the state as it was, and another can run after it', async () => {
    const store = new MemoryEventStore<TestEvent>();
    const head = await appendMany(store, 100);
    const view = tally(store);
    await view.start();
    await view.waitFor(head);
    const [before, position] = [view.state, view.position];
    const controller = new AbortController();
    await assert.rejects(
      view.rebuild({ batchSize: 10, signal: controller.signal, onProgress: ({ done }) => done >= 30 && controller.abort(new Error('enough')) }),
      /enough/,
    );
    assert.equal(view.state, before);
    assert.equal(view.position, position);
    assert.equal((await view.status()).rebuilding, undefined);
    assert.equal((await view.rebuild()).generation, 1, 'the aborted one swapped nothing in');
    assert.deepEqual(view.state, before);
  });

  it('an event evolve throws on rejects it with RebuildFailedError; the live view is untouched and goes on', async () => {
    const store = new MemoryEventStore<TestEvent>();
    const head = await appendMany(store, 50);
    let broken = false;
    const view = tally(store, {
      evolve: (state, event) => {
        if (broken && event.position === 7) throw new Error('broken evolve');
        return fold(state, event);
      },
    });
    await view.start();
    await view.waitFor(head);
    const [before, at] = [view.state, view.position];
    broken = true;
    await assert.rejects(view.rebuild({ batchSize: 4 }), (error: unknown) => {
      assert.ok(error instanceof RebuildFailedError, String(error));
      assert.ok(isEskitError(error, ErrorCode.HandlerFailed));
      assert.equal(error.position, 7);
      assert.match(error.message, /Rebuilding view "tally" stopped at the event at position 7: Error: broken evolve/);
      return true;
    });
    assert.equal(view.state, before);
    assert.equal(view.position, at);
    const { position } = await store.append('c', [counted(3)]);
    await view.waitFor(position);
    assert.deepEqual(view.state, await expectedTally(store));
  });

  it('skips an event the live view dead-lettered, without a second letter', async () => {
    const store = new MemoryEventStore<TestEvent>();
    const deadLetters = new MemoryDeadLetterStore();
    await store.append('a', [counted(1), counted(2, true), counted(4)]);
    const view = totals(store, { deadLetters });
    await view.start();
    await view.waitFor(3);
    assert.deepEqual(view.state, { a: 5 });
    const before = view.state;
    const result = await view.rebuild();
    assert.notEqual(view.state, before);
    assert.deepEqual(view.state, { a: 5 });
    assert.equal(result.events, 3);
    assert.deepEqual(
      (await deadLetters.list({ source: 'totals' })).map((letter) => letter.eventPosition),
      [2],
    );
  });

  it('one rebuild at a time: a second one while it runs is refused', async () => {
    const store = new MemoryEventStore<TestEvent>();
    await appendMany(store, 50);
    const view = tally(store);
    const first = view.rebuild({ batchSize: 5 });
    await assert.rejects(view.rebuild(), (error: unknown) => isEskitError(error, ErrorCode.AlreadyStarted));
    assert.equal((await first).generation, 1);
    assert.equal((await view.rebuild()).generation, 2);
  });

  it('refuses a batchSize that is not a positive integer', async () => {
    const view = tally(new MemoryEventStore<TestEvent>());
    await assert.rejects(view.rebuild({ batchSize: 0 }), (error: unknown) => isEskitError(error, ErrorCode.InvalidArgument));
    await assert.rejects(view.rebuild({ batchSize: 1.5 }), (error: unknown) => isEskitError(error, ErrorCode.InvalidArgument));
  });
});
