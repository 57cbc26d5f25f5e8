import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import { silentLogger } from '../../src/core/logger.js';
import { MemoryDeadLetterStore, MemoryEventStore } from '../../src/memory/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import { MemoryView, waitFor } from '../../src/view/index.js';
import type { MemoryViewOptions } from '../../src/view/index.js';
import { counted, other } from './helpers.js';
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
