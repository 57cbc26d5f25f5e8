// Red-team tests of the views' commit hints (NOTIFY on the schema's `views` channel) and of the
// signals that consume them: each pins a defect found in review.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { silentLogger } from '../../src/core/logger.js';
import type { EventStore } from '../../src/core/store.js';
import type { ViewCommitListener } from '../../src/core/view-backend.js';
import { MemoryEventStore } from '../../src/memory/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import type { ViewChange } from '../../src/view/index.js';
import { ViewSignals } from '../../src/view/signals.js';
import { counted, pgCounter } from './helpers.js';
import type { TestEvent } from './helpers.js';
import { cleanups, follow, NO_POLL, readerListenerPid, track, twoNodes } from './hint-nodes.js';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe('views commit hints: red team', () => {
  it('a range published by a poll (after a reconnect) is not published again by the next hint', async () => {
    const { schema, writer, reader } = await twoNodes();
    const view = track(pgCounter(writer.host, { keysOf: (event) => event.streamId }));
    await view.start();
    const readerPid = await readerListenerPid(schema, writer);
    const { changes } = follow(reader);
    await waitUntil(() => reader.store.listening, { message: 'the reader to LISTEN' });
    // Heard: the follower has announced up to here.
    const first = await writer.store.append('first', [counted(1)]);
    await waitUntil(() => changes.some((change) => change.keys?.includes('first')), { timeoutMs: 3000, message: 'the first change' });
    const old = await waitUntil(() => readerPid(), { message: "the reader's LISTEN connection" });
    await reader.store.pool.query('SELECT pg_terminate_backend($1)', [old]);
    const gap = await writer.store.append('gap', [counted(2)]);
    await view.waitFor(gap.position);
    // The reconnect reads the checkpoint, and that poll publishes the gap's keys.
    await waitUntil(() => changes.some((change) => change.keys?.includes('gap')), { timeoutMs: 5000, message: "the gap's keys after the reconnect" });
    await waitUntil(() => reader.store.listening, { message: 'the reader to LISTEN again' });
    await writer.store.append('after', [counted(3)]);
    await waitUntil(() => changes.some((change) => change.keys?.includes('after')), { timeoutMs: 3000, message: 'the change after the reconnect' });
    await sleep(50);
    assert.ok(first.position < gap.position);
    const withGap = changes.filter((change) => change.keys?.includes('gap'));
    assert.equal(withGap.length, 1, `the gap's keys were published ${withGap.length} times: ${JSON.stringify(changes)}`);
  });

  it("a listener that arrives while the store already LISTENs hears 'anything may have changed' after a reconnect", async () => {
    const { schema, writer, reader } = await twoNodes();
    const view = track(pgCounter(writer.host, { keysOf: (event) => event.streamId }));
    await view.start();
    const readerPid = await readerListenerPid(schema, writer);
    // Something else on the reader's store listens first (here: another view's listener).
    const bystander = pgCounter(reader.host, { name: 'bystander', checkpointPollMs: NO_POLL, debounceMs: 0 });
    cleanups.push(bystander.changes.subscribe(() => undefined));
    await waitUntil(() => reader.store.listening, { message: 'the reader to LISTEN' });
    const { changes } = follow(reader);
    const old = await waitUntil(() => readerPid(), { message: "the reader's LISTEN connection" });
    await reader.store.pool.query('SELECT pg_terminate_backend($1)', [old]);
    const gap = await writer.store.append('gap', [counted(1)]);
    await view.waitFor(gap.position);
    await waitUntil(() => changes.some((change) => change.keys === undefined), {
      timeoutMs: 5000,
      message: "the listener to hear 'anything may have changed' after the reconnect",
    });
  });

  it('waitFor on a partitioned view resolves (or times out) while hints keep arriving during every checkpoint read', async () => {
    let listener: ViewCommitListener | undefined;
    let interval: NodeJS.Timeout | undefined;
    const signals = new ViewSignals<TestEvent>({
      view: 'v',
      store: {} as EventStore<TestEvent>,
      types: undefined,
      keysOf: undefined,
      debounceMs: 0,
      maxKeys: undefined,
      pollIntervalMs: 50,
      logger: silentLogger,
      // A read that takes 20 ms; the view is well past the position waited for.
      readCheckpoint: async () => {
        await sleep(20);
        return 100;
      },
      isLeading: () => false,
      // Partitioned: every hint makes the tracker read the checkpoints.
      positionLane: undefined,
      watch: (heard) => {
        listener = heard;
        interval = setInterval(() => listener?.committed({ lane: 'v#0/2', from: 100, to: 100, swapped: false }), 5);
        return {
          stop: () => {
            clearInterval(interval);
            interval = undefined;
          },
          hearing: true,
        };
      },
    });
    cleanups.push(() => clearInterval(interval));
    const started = performance.now();
    const outcome = await Promise.race([
      signals.waitFor(50, { timeoutMs: 300 }).then(
        () => 'resolved',
        (error: unknown) => `rejected: ${String(error)}`,
      ),
      sleep(1500).then(() => 'still waiting'),
    ]);
    assert.equal(outcome, 'resolved', `after ${Math.round(performance.now() - started)} ms`);
  });

  it('a rebuild of a view whose (long, non-ASCII) name would not fit a NOTIFY still swaps in', async () => {
    const { writer } = await twoNodes();
    const name = 'é'.repeat(3500);
    const view = track(pgCounter(writer.host, { name }));
    await view.start();
    const { position } = await writer.store.append('r', [counted(1)]);
    await view.waitFor(position);
    const rebuilt = await view.rebuild();
    assert.equal(rebuilt.position, position);
  });

  it("a process that led the view for a while does not republish its own commits when the next leader's hints arrive", async () => {
    const store = new MemoryEventStore<TestEvent>();
    let listener: ViewCommitListener | undefined;
    let leading = false;
    const signals = new ViewSignals<TestEvent>({
      view: 'v',
      store,
      types: undefined,
      keysOf: (event) => event.streamId,
      debounceMs: 0,
      maxKeys: undefined,
      pollIntervalMs: NO_POLL,
      logger: silentLogger,
      readCheckpoint: () => Promise.resolve(undefined),
      isLeading: () => leading,
      positionLane: 'v',
      watch: (heard) => {
        listener = heard;
        return { stop: () => (listener = undefined), hearing: true };
      },
    });
    const changes: ViewChange[] = [];
    const unsubscribe = signals.changes.subscribe((change) => void changes.push(change));
    cleanups.push(unsubscribe);
    const published = async (key: string): Promise<void> => {
      await waitUntil(() => changes.some((change) => change.keys?.includes(key)), { timeoutMs: 2000, message: `the change of ${key}` });
    };
    // Another process leads: its commit is heard.
    const first = await store.append('first', [counted(1)]);
    listener?.committed({ lane: 'v', from: first.position, to: first.position, swapped: false });
    await published('first');
    // This process leads for a while: its own commit is published as it commits.
    leading = true;
    const own = await store.append('own', [counted(2)]);
    const ownEvents = [];
    for await (const event of store.readAll({ after: first.position })) ownEvents.push(event);
    signals.committed(ownEvents, own.position, own.position);
    await published('own');
    // Leadership moves on; the next leader's commit is heard.
    leading = false;
    const next = await store.append('next', [counted(3)]);
    listener?.committed({ lane: 'v', from: next.position, to: next.position, swapped: false });
    await published('next');
    await sleep(20);
    const withOwn = changes.filter((change) => change.keys?.includes('own'));
    assert.equal(withOwn.length, 1, `'own' was published ${withOwn.length} times: ${JSON.stringify(changes)}`);
  });
});
