// Issue 14, item 9: commands to one stream from one process queue in-process (one writer per
// stream), so a hot stream costs no conflicts and no retries; across processes (other store objects)
// the retry stays, and an exhausted retry says how many attempts it made.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { ConcurrencyError, isEskitError } from '../../src/core/index.js';
import type { AppendOptions, AppendResult, EventShape, EventStore, NewEvent, ReadStreamOptions, Recorded } from '../../src/core/index.js';
import { CommandHandler } from '../../src/decider/index.js';
import type { Decider } from '../../src/decider/index.js';
import { busyStreams } from '../../src/decider/stream-queue.js';
import { MemoryEventStore } from '../../src/memory/index.js';
import { PostgresEventStore } from '../../src/postgres/index.js';
import { SqliteEventStore } from '../../src/sqlite/index.js';
import { createTestSchema } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';

type CounterEvent = { type: 'Incremented'; data: { by: number; n: number } };
type Increment = { n: number };
const counter: Decider<number, Increment, CounterEvent> = {
  initialState: 0,
  decide: (_count, command) => ({ type: 'Incremented', data: { by: 1, n: command.n } }),
  evolve: (count, event) => count + event.data.by,
};

/** A memory store that counts appends, conflicts and stream reads, and can hold an append of one stream. */
class CountingStore<E extends EventShape> extends MemoryEventStore<E> {
  appends = 0;
  conflicts = 0;
  streamReads = 0;
  /** Appends to a stream named here wait for the promise first. */
  readonly holds = new Map<string, Promise<void>>();

  override async append(streamId: string, events: readonly NewEvent<E>[], options?: AppendOptions): Promise<AppendResult<E>> {
    this.appends++;
    await this.holds.get(streamId);
    try {
      return await super.append(streamId, events, options);
    } catch (error) {
      if (isEskitError(error, 'ESKIT_CONCURRENCY')) this.conflicts++;
      throw error;
    }
  }

  override readStream(streamId: string, options: ReadStreamOptions & { raw: true }): AsyncIterable<Recorded>;
  override readStream(streamId: string, options?: ReadStreamOptions): AsyncIterable<Recorded<E>>;
  override readStream(streamId: string, options?: ReadStreamOptions): AsyncIterable<Recorded> {
    this.streamReads++;
    return super.readStream(streamId, options) as AsyncIterable<Recorded>;
  }

  /** A write by another process: not counted, not held. */
  competitorAppend(streamId: string, events: readonly NewEvent<E>[]): Promise<AppendResult<E>> {
    return super.append(streamId, events);
  }
}

/** Another store object on the same storage, as a second process would have: every call delegates. */
function anotherHandle<E extends EventShape>(store: EventStore<E>): EventStore<E> {
  return {
    append: (streamId, events, options) => store.append(streamId, events, options),
    readStream: ((streamId: string, options?: ReadStreamOptions) => store.readStream(streamId, options)) as EventStore<E>['readStream'],
    readAll: ((options?: ReadStreamOptions) => store.readAll(options)) as EventStore<E>['readAll'],
    streamVersion: (streamId) => store.streamVersion(streamId),
    deleteStream: (streamId, options) => store.deleteStream(streamId, options),
    truncateStream: (streamId, before, options) => store.truncateStream(streamId, before, options),
    archiveStream: (streamId, options) => store.archiveStream(streamId, options),
    readArchived: ((streamId: string, options?: { raw?: boolean }) => store.readArchived(streamId, options)) as EventStore<E>['readArchived'],
    forget: (subject) => store.forget(subject),
    allowNewKey: (subject) => store.allowNewKey(subject),
    headPosition: () => store.headPosition(),
    onAppend: (listener) => store.onAppend(listener),
    close: () => Promise.resolve(),
  };
}

async function versionsOf(store: EventStore, streamId: string): Promise<number[]> {
  const out: number[] = [];
  for await (const event of store.readStream(streamId)) out.push((event.data as { n: number }).n);
  return out;
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe('hot streams: one writer per stream in a process', () => {
  it('50 concurrent commands on one stream all succeed, in arrival order, with one read and one append each', async () => {
    const store = new CountingStore<CounterEvent>();
    const handler = new CommandHandler({ store, decider: counter });
    const results = await Promise.all(Array.from({ length: 50 }, (_, n) => handler.handle('hot', { n })));
    assert.deepEqual(results.map((r) => r.nextExpectedVersion), Array.from({ length: 50 }, (_, i) => i + 1), 'arrival order');
    assert.deepEqual(results.map((r) => r.state), Array.from({ length: 50 }, (_, i) => i + 1));
    assert.equal(store.conflicts, 0);
    assert.equal(store.appends, 50, 'no wasted appends');
    assert.equal(store.streamReads, 50, 'no wasted reads');
    assert.deepEqual(await versionsOf(store, 'hot'), Array.from({ length: 50 }, (_, i) => i));
    assert.equal(busyStreams(store), 0, 'an idle stream leaves no queue behind');
  });

  it('every CommandHandler on one store shares the queue of a stream, whatever its decider', async () => {
    const store = new CountingStore<CounterEvent>();
    const byTwo: Decider<number, Increment, CounterEvent> = { ...counter, decide: (_c, command) => ({ type: 'Incremented', data: { by: 2, n: command.n } }) };
    const a = new CommandHandler({ store, decider: counter, retry: { maxAttempts: 1 } });
    const b = new CommandHandler({ store, decider: byTwo, retry: { maxAttempts: 1 } });
    const results = await Promise.all(Array.from({ length: 20 }, (_, n) => (n % 2 === 0 ? a : b).handle('shared', { n })));
    assert.equal(results.length, 20);
    assert.equal(store.conflicts, 0, 'with one attempt each, a conflict would have failed a command');
    assert.deepEqual(await versionsOf(store, 'shared'), Array.from({ length: 20 }, (_, i) => i));
  });

  it('other streams do not wait for a busy one', async () => {
    const store = new CountingStore<CounterEvent>();
    const handler = new CommandHandler({ store, decider: counter });
    const held = deferred();
    store.holds.set('slow', held.promise);
    const slow = handler.handle('slow', { n: 0 });
    const queued = handler.handle('slow', { n: 1 });
    const other = await handler.handle('fast', { n: 0 });
    assert.equal(other.nextExpectedVersion, 1);
    assert.equal(store.appends, 2, 'the second command of the busy stream waits for the first before it reads or appends');
    assert.equal(store.streamReads, 2);
    held.resolve();
    assert.deepEqual([(await slow).nextExpectedVersion, (await queued).nextExpectedVersion], [1, 2]);
    assert.equal(busyStreams(store), 0);
  });

  it('a command that fails (decide throws, the append is refused) frees the stream for the next', async () => {
    const store = new CountingStore<CounterEvent>();
    const picky: Decider<number, Increment, CounterEvent> = {
      ...counter,
      decide: (count, command) => {
        if (command.n === 1) throw new Error('rejected by decide');
        return { type: 'Incremented', data: { by: 1, n: command.n === 2 ? Number.NaN : command.n } };
      },
    };
    const handler = new CommandHandler({ store, decider: picky });
    const settled = await Promise.allSettled([0, 1, 2, 3].map((n) => handler.handle('s', { n })));
    assert.deepEqual(settled.map((s) => s.status), ['fulfilled', 'rejected', 'rejected', 'fulfilled']);
    assert.match(String((settled[1] as PromiseRejectedResult).reason), /rejected by decide/);
    assert.ok(isEskitError((settled[2] as PromiseRejectedResult).reason, 'ESKIT_SERIALIZATION'));
    assert.deepEqual(await versionsOf(store, 's'), [0, 3]);
    assert.equal(busyStreams(store), 0);
  });

  it('a queued command whose signal aborts leaves the queue at once and never runs', async () => {
    const store = new CountingStore<CounterEvent>();
    const handler = new CommandHandler({ store, decider: counter });
    const held = deferred();
    store.holds.set('s', held.promise);
    const first = handler.handle('s', { n: 0 });
    const controller = new AbortController();
    const reason = new Error('caller gave up');
    const aborted = handler.handle('s', { n: 1 }, { signal: controller.signal });
    const third = handler.handle('s', { n: 2 });
    controller.abort(reason);
    await assert.rejects(aborted, (error) => error === reason);
    assert.equal(store.streamReads, 1, 'only the first command has read the stream');
    held.resolve();
    await Promise.all([first, third]);
    assert.deepEqual(await versionsOf(store, 's'), [0, 2]);
    assert.equal(busyStreams(store), 0);
  });

  it('another store object on the same storage is another writer: its conflicts are retried', async () => {
    const store = new CountingStore<CounterEvent>();
    const here = new CommandHandler({ store, decider: counter, retry: { maxAttempts: 50, initialDelayMs: 0, maxDelayMs: 1 } });
    const there = new CommandHandler({ store: anotherHandle(store), decider: counter, retry: { maxAttempts: 50, initialDelayMs: 0, maxDelayMs: 1 } });
    const results = await Promise.all(Array.from({ length: 20 }, (_, n) => (n % 2 === 0 ? here : there).handle('s', { n })));
    assert.equal(results.length, 20);
    assert.ok(store.conflicts > 0, 'the two writers raced: some appends conflicted and were retried');
    assert.deepEqual((await versionsOf(store, 's')).sort((x, y) => x - y), Array.from({ length: 20 }, (_, i) => i));
  });

  it('when the retries run out, the error says how many attempts were made and what to do', async () => {
    const store = new CountingStore<CounterEvent>();
    const handler = new CommandHandler({ store, decider: counter, retry: { initialDelayMs: 0 } });
    const competitor = store.append.bind(store);
    store.append = async (streamId, events, options) => {
      await store.competitorAppend(streamId, [{ type: 'Incremented', data: { by: 1, n: -1 } }]);
      return competitor(streamId, events, options);
    };
    await assert.rejects(handler.handle('c', { n: 0 }), (error: unknown) => {
      assert.ok(error instanceof ConcurrencyError);
      assert.equal(error.code, 'ESKIT_CONCURRENCY');
      assert.equal(error.attempts, 5);
      assert.equal(error.streamId, 'c');
      assert.equal(error.expectedVersion, 4);
      assert.equal(error.actualVersion, 5);
      assert.match(error.message, /gave up after 5 attempts/);
      assert.match(error.message, /retry\.maxAttempts/);
      assert.ok(isEskitError(error.cause, 'ESKIT_CONCURRENCY'), 'the last conflict is the cause');
      return true;
    });
    assert.equal(store.appends, 5);
    assert.equal(busyStreams(store), 0);
  });
});

describe('hot streams on the database adapters', () => {
  const schemas: TestSchema[] = [];
  after(async () => {
    await Promise.all(schemas.map((s) => s.drop()));
  });

  async function hot50(store: EventStore<CounterEvent>): Promise<void> {
    try {
      const handler = new CommandHandler({ store, decider: counter });
      const settled = await Promise.allSettled(Array.from({ length: 50 }, (_, n) => handler.handle('hot', { n })));
      const failed = settled.filter((s) => s.status === 'rejected');
      assert.equal(failed.length, 0, `failures: ${failed.map((f) => String((f as PromiseRejectedResult).reason)).join('; ')}`);
      assert.deepEqual(await versionsOf(store, 'hot'), Array.from({ length: 50 }, (_, i) => i), 'in arrival order');
      assert.equal(busyStreams(store), 0);
    } finally {
      await store.close();
    }
  }

  it('PostgreSQL: 50 concurrent commands on one stream, default retries: 50 of 50', async () => {
    const schema = await createTestSchema({ create: false });
    schemas.push(schema);
    await hot50(new PostgresEventStore<CounterEvent>({ connectionString: schema.connectionString, schema: schema.name }));
  });

  it('SQLite: 50 concurrent commands on one stream, default retries: 50 of 50', async () => {
    await hot50(new SqliteEventStore<CounterEvent>({ path: ':memory:' }));
  });

  it('PostgreSQL: two store objects (two processes) on one schema still retry each other\'s conflicts', async () => {
    const schema = await createTestSchema({ create: false });
    schemas.push(schema);
    const options = { connectionString: schema.connectionString, schema: schema.name };
    const one = new PostgresEventStore<CounterEvent>(options);
    const two = new PostgresEventStore<CounterEvent>(options);
    try {
      const retry = { maxAttempts: 30, initialDelayMs: 1, maxDelayMs: 5 };
      const handlers = [new CommandHandler({ store: one, decider: counter, retry }), new CommandHandler({ store: two, decider: counter, retry })];
      await one.migrate();
      const results = await Promise.all(Array.from({ length: 20 }, (_, n) => (handlers[n % 2] as CommandHandler<number, Increment, CounterEvent>).handle('s', { n })));
      assert.equal(results.length, 20);
      assert.deepEqual((await versionsOf(one, 's')).sort((x, y) => x - y), Array.from({ length: 20 }, (_, i) => i));
    } finally {
      await Promise.all([one.close(), two.close()]);
    }
  });
});
