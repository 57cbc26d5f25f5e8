// A SQL view's commits announced to other processes (NOTIFY on the schema's `views` channel): a
// process that does not run the view learns of each commit as it happens, for waitFor and for its
// change feed, instead of polling. Another process is played by another store on its own pool; the
// readers' polls are set to a minute, so only a hint can wake them within the tests' bounds.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { silentLogger } from '../../src/core/logger.js';
import type { EventStore } from '../../src/core/store.js';
import { waitUntil } from '../../src/testing/wait.js';
import { ViewSignals } from '../../src/view/signals.js';
import { counted, other, pgCounter } from './helpers.js';
import type { TestEvent } from './helpers.js';
import { follow, NO_POLL, readerListenerPid, track, twoNodes } from './hint-nodes.js';

describe('SqlView on PostgreSQL: commits heard by other processes', () => {
  it('waitFor in a process that does not run the view resolves on the commit, not on a poll', async () => {
    const { writer, reader } = await twoNodes();
    const view = track(pgCounter(writer.host));
    await view.start();
    const follower = pgCounter(reader.host, { checkpointPollMs: NO_POLL });
    for (let i = 1; i <= 20; i++) {
      const { position } = await writer.store.append(`w-${i % 3}`, [counted(i)]);
      await follower.waitFor(position, { timeoutMs: 3000 });
    }
    assert.equal(reader.store.listening, true, "the reader's store LISTENs while it waits");
    // Events of no interest to the view move its checkpoint too (announced the same way).
    const { position } = await writer.store.append('o', [other(), other()]);
    await follower.waitFor(position, { timeoutMs: 3000 });
  });

  it("a listener in another process gets each commit's keys, once", async () => {
    const { writer, reader } = await twoNodes();
    const view = track(pgCounter(writer.host));
    await view.start();
    const { changes } = follow(reader);
    await waitUntil(() => reader.store.listening, { message: 'the reader to LISTEN' });
    const positions: number[] = [];
    for (let i = 1; i <= 5; i++) {
      const { position } = await writer.store.append(`k-${i}`, [counted(i)]);
      positions.push(position);
      await waitUntil(() => changes.some((change) => change.position === position), { timeoutMs: 3000, message: `the change at ${position}` });
    }
    const keys = changes.flatMap((change) => change.keys ?? ['<everything>']);
    assert.deepEqual(keys.sort(), ['k-1', 'k-2', 'k-3', 'k-4', 'k-5']);
    assert.deepEqual(
      changes.map((change) => change.position),
      positions,
    );
  });

  it('partitioned: waitFor in another process resolves once every partition passed the position', async () => {
    const { writer, reader } = await twoNodes();
    const view = track(pgCounter(writer.host, { partitions: 3 }));
    await view.start();
    const follower = pgCounter(reader.host, { partitions: 3, checkpointPollMs: NO_POLL });
    for (let i = 1; i <= 12; i++) {
      const { position } = await writer.store.append(`p-${i}`, [counted(i)]);
      await follower.waitFor(position, { timeoutMs: 3000 });
    }
  });

  it("a rebuild swapped in by another process is announced as 'anything may have changed'", async () => {
    const { writer, reader } = await twoNodes();
    const view = track(pgCounter(writer.host, { keysOf: (event) => event.streamId }));
    await view.start();
    const { position } = await writer.store.append('r', [counted(1), counted(2)]);
    await view.waitFor(position);
    const { changes } = follow(reader);
    await waitUntil(() => reader.store.listening, { message: 'the reader to LISTEN' });
    const rebuilt = await view.rebuild();
    await waitUntil(() => changes.some((change) => change.keys === undefined && change.position === rebuilt.position), {
      timeoutMs: 3000,
      message: 'the swap to reach the listener',
    });
  });

  it('a lost LISTEN connection: waiting goes on through the reconnect, and listeners hear that anything may have changed', async () => {
    const { schema, writer, reader } = await twoNodes();
    const view = track(pgCounter(writer.host, { keysOf: (event) => event.streamId }));
    await view.start();
    const readerPid = await readerListenerPid(schema, writer);
    const { follower, changes } = follow(reader);
    // LISTEN in place, not only connected: a connection killed before its LISTEN was never heard on, so
    // its successor's start is no gap (and announces nothing).
    await waitUntil(() => reader.store.listening, { message: 'the reader to LISTEN' });
    const first = await waitUntil(() => readerPid(), { message: "the reader's LISTEN connection" });
    const before = changes.length;
    await reader.store.pool.query('SELECT pg_terminate_backend($1)', [first]);
    // Committed while the reader hears nothing: the reconnect must make up for it.
    const { position } = await writer.store.append('gap', [counted(1)]);
    await view.waitFor(position);
    await follower.waitFor(position, { timeoutMs: 5000 });
    // Once LISTEN is back, 'anything may have changed' (at whatever the follower knew then: the
    // reconnect may come before or after the commit), and the commit itself reaches the listener,
    // by its keys (found by the poll) or inside an 'anything' at or past it.
    await waitUntil(() => changes.slice(before).some((change) => change.keys === undefined), {
      timeoutMs: 5000,
      message: "the listener to hear 'anything may have changed' after the reconnect",
    });
    await waitUntil(() => changes.some((change) => change.position >= position && (change.keys === undefined || change.keys.includes('gap'))), {
      timeoutMs: 5000,
      message: 'the listener to hear of the commit made while LISTEN was down',
    });
    const second = await waitUntil(async () => {
      const pid = await readerPid();
      return pid !== undefined && pid !== first ? pid : undefined;
    }, { message: 'a new LISTEN connection' });
    assert.notEqual(second, first);
    const after = await writer.store.append('after', [counted(2)]);
    await waitUntil(() => changes.some((change) => change.keys?.includes('after')), { timeoutMs: 3000, message: 'a commit heard over the new connection' });
    await follower.waitFor(after.position, { timeoutMs: 3000 });
  });

  it('progress no hint announced (an older eskit writing, a proxy dropping NOTIFY): the poll goes back from 1 s to checkpointPollMs', async () => {
    // The signals alone, with a watch that hears nothing: the checkpoint moves only in the database.
    let checkpoint = 10;
    let reads = 0;
    const signals = new ViewSignals<TestEvent>({
      view: 'quiet',
      store: {} as EventStore<TestEvent>,
      types: undefined,
      keysOf: undefined,
      debounceMs: 0,
      maxKeys: undefined,
      pollIntervalMs: 20,
      logger: silentLogger,
      readCheckpoint: async () => {
        reads++;
        return checkpoint;
      },
      // Every position is one the view applies (the backend would say so from the log).
      lastRelevant: async (_after, upTo) => upTo,
      isLeading: () => false,
      positionLane: 'quiet',
      watch: () => ({ stop: () => undefined, hearing: true }),
    });
    const moveWhileWaiting = async (to: number, timeoutMs: number): Promise<void> => {
      const before = reads;
      const waiting = signals.waitFor(to, { timeoutMs });
      // After waitFor's own first read: only a poll can find the move.
      await waitUntil(() => reads > before, { message: "waitFor's first read" });
      checkpoint = to;
      await waiting;
    };
    // The first unannounced move is found by the 1 s safety-net poll ...
    await moveWhileWaiting(11, 3000);
    // ... and from then on the poll runs every checkpointPollMs: well within 300 ms, every time.
    for (let to = 12; to <= 16; to++) await moveWhileWaiting(to, 300);
  });
});
