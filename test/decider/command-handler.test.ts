import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConcurrencyError, isEskitError } from '../../src/core/index.js';
import type { AppendOptions, AppendResult, EventShape, NewEvent, ReadStreamOptions, Recorded } from '../../src/core/index.js';
import { CommandHandler } from '../../src/decider/index.js';
import type { Decider } from '../../src/decider/index.js';
import { MemoryEventStore, memory } from '../../src/memory/index.js';
import { AccountError, account, deposited, withdrawn } from './account.js';
import type { AccountEvent } from './account.js';

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** A memory store that records every append call and can let a competitor write just before one. */
class InterferingStore<E extends EventShape> extends MemoryEventStore<E> {
  readonly appendCalls: { streamId: string; events: readonly NewEvent<E>[]; options: AppendOptions | undefined }[] = [];
  /** Runs before each append the handler makes; whatever it writes lands between the handler's read and write. */
  beforeAppend: ((streamId: string) => Promise<void>) | undefined;
  /** How often a stream was read: each attempt of the handler loads the stream once. */
  streamReads = 0;
  /** Runs after an append the handler made failed. */
  afterFailedAppend: ((error: unknown) => void) | undefined;

  override async append(streamId: string, events: readonly NewEvent<E>[], options?: AppendOptions): Promise<AppendResult<E>> {
    this.appendCalls.push({ streamId, events, options });
    await this.beforeAppend?.(streamId);
    try {
      return await super.append(streamId, events, options);
    } catch (error) {
      this.afterFailedAppend?.(error);
      throw error;
    }
  }

  override readStream(streamId: string, options: ReadStreamOptions & { raw: true }): AsyncIterable<Recorded>;
  override readStream(streamId: string, options?: ReadStreamOptions): AsyncIterable<Recorded<E>>;
  override readStream(streamId: string, options?: ReadStreamOptions): AsyncIterable<Recorded> {
    this.streamReads++;
    return super.readStream(streamId, options) as AsyncIterable<Recorded>;
  }

  /** A write by someone else, not counted and not intercepted. */
  competitorAppend(streamId: string, events: readonly NewEvent<E>[]): Promise<AppendResult<E>> {
    return super.append(streamId, events);
  }
}

async function readStream<E extends EventShape>(store: MemoryEventStore<E>, streamId: string): Promise<{ type: string; data: unknown; metadata: unknown; streamVersion: number; position: number }[]> {
  const out = [];
  for await (const event of store.readStream(streamId)) out.push(event);
  return out;
}

function countingDecide<S, C, E extends EventShape>(decider: Decider<S, C, E>): { decider: Decider<S, C, E>; calls: () => number } {
  let calls = 0;
  return {
    decider: {
      ...decider,
      decide(state, command) {
        calls++;
        return decider.decide(state, command);
      },
    },
    calls: () => calls,
  };
}

function accountSetup(retry?: ConstructorParameters<typeof CommandHandler>[0]['retry']) {
  const store = new InterferingStore<AccountEvent>();
  const counted = countingDecide(account);
  const handler = new CommandHandler({ store, decider: counted.decider, retry });
  return { store, handler, decideCalls: counted.calls };
}

/** Another object on the same store, as another process's store would be; methods run on the store itself. */
function anotherHandle<T extends object>(store: T): T {
  return new Proxy(store, {
    get: (target, key) => {
      const value: unknown = Reflect.get(target, key, target);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

// A counter: the smallest decider where every command conflicts with every concurrent one.
type CounterEvent = { type: 'Incremented'; data: { by: number } };
const counter: Decider<number, { type: 'Increment' }, CounterEvent> = {
  initialState: 0,
  decide: () => ({ type: 'Incremented', data: { by: 1 } }),
  evolve: (count, event) => count + event.data.by,
};

describe('CommandHandler', () => {
  describe('happy path', () => {
    it('folds the stream, decides, appends and returns the new state', async () => {
      const { store, handler } = accountSetup();
      const first = await handler.handle('account-1', { type: 'Open', owner: 'ada' });
      assert.deepStrictEqual(first.state, { status: 'open', owner: 'ada', balance: 0 });
      // The result is typed from the decider.
      const eventTypes: AccountEvent['type'][] = first.events.map((e) => e.type);
      assert.deepStrictEqual(eventTypes, ['AccountOpened']);
      assert.equal(first.nextExpectedVersion, 1);
      assert.equal(first.events.length, 1);
      assert.equal(first.events[0]?.type, 'AccountOpened');
      assert.equal(first.position, first.events[0]?.position);

      await store.competitorAppend('other', [deposited(1)]);
      const second = await handler.handle('account-1', { type: 'Deposit', amount: 70 });
      assert.deepStrictEqual(second.state, { status: 'open', owner: 'ada', balance: 70 });
      assert.equal(second.nextExpectedVersion, 2);
      assert.equal(second.position, 3, 'the global position skips the event of the other stream');

      const third = await handler.handle('account-1', { type: 'Close', reason: 'moved' });
      assert.deepStrictEqual(third.state, { status: 'closed', owner: 'ada', balance: 0 });
      assert.deepStrictEqual(
        third.events.map((e) => [e.type, e.data, e.streamId, e.streamVersion, e.position]),
        [
          ['MoneyWithdrawn', { amount: 70 }, 'account-1', 3, 4],
          ['AccountClosed', { reason: 'moved' }, 'account-1', 4, 5],
        ],
      );
      assert.equal(third.nextExpectedVersion, 4);
      assert.equal(third.position, 5);

      const stored = await readStream(store, 'account-1');
      assert.deepStrictEqual(
        stored.map((e) => [e.type, e.data]),
        [
          ['AccountOpened', { owner: 'ada' }],
          ['MoneyDeposited', { amount: 70 }],
          ['MoneyWithdrawn', { amount: 70 }],
          ['AccountClosed', { reason: 'moved' }],
        ],
      );
      // The handler appends with the exact version it read, never 'any'.
      assert.deepStrictEqual(
        store.appendCalls.map((c) => c.options?.expectedVersion),
        [0, 1, 2],
      );
    });

    it('starts from a fresh initial state from a factory for every command', async () => {
      const store = new MemoryEventStore<CounterEvent>();
      const mutable: Decider<{ n: number }, { type: 'Increment' }, CounterEvent> = {
        initialState: () => ({ n: 0 }),
        decide: () => ({ type: 'Incremented', data: { by: 1 } }),
        evolve(state, event) {
          state.n += event.data.by;
          return state;
        },
      };
      const handler = new CommandHandler({ store, decider: mutable });
      assert.deepStrictEqual((await handler.handle('a', { type: 'Increment' })).state, { n: 1 });
      assert.deepStrictEqual((await handler.handle('b', { type: 'Increment' })).state, { n: 1 });
      assert.deepStrictEqual((await handler.handle('a', { type: 'Increment' })).state, { n: 2 });
    });
  });

  describe('metadata', () => {
    it('uses the command id as correlation and causation id of every event', async () => {
      const { store, handler } = accountSetup();
      await handler.handle('acc', { type: 'Open', owner: 'ada' });
      await handler.handle('acc', { type: 'Deposit', amount: 5 });
      const commandId = '01890a5d-ac96-774b-bcce-b302099a8057';
      const result = await handler.handle('acc', { type: 'Close', reason: 'x' }, { commandId, metadata: { userId: 'u-7', tenant: 3 } });
      assert.equal(result.events.length, 2);
      for (const event of result.events) {
        assert.deepStrictEqual(event.metadata, { userId: 'u-7', tenant: 3, correlationId: commandId, causationId: commandId });
      }
      const stored = await readStream(store, 'acc');
      assert.deepStrictEqual(stored.slice(2).map((e) => e.metadata), result.events.map((e) => e.metadata));
    });

    it('keeps a correlation and causation id given in the metadata', async () => {
      const { handler } = accountSetup();
      const result = await handler.handle(
        'acc',
        { type: 'Open', owner: 'ada' },
        { commandId: 'cmd-1', metadata: { correlationId: 'flow-9', source: 'api' } },
      );
      assert.deepStrictEqual(result.events[0]?.metadata, { correlationId: 'flow-9', causationId: 'cmd-1', source: 'api' });
      const caused = await handler.handle('acc', { type: 'Deposit', amount: 1 }, { metadata: { correlationId: 'flow-9', causationId: 'evt-4' } });
      assert.deepStrictEqual(caused.events[0]?.metadata, { correlationId: 'flow-9', causationId: 'evt-4' });
    });

    it('generates a UUIDv7 command id when none is given', async () => {
      const { handler } = accountSetup();
      const a = await handler.handle('acc', { type: 'Open', owner: 'ada' });
      const b = await handler.handle('acc', { type: 'Deposit', amount: 1 });
      const idA = a.events[0]?.metadata.causationId;
      const idB = b.events[0]?.metadata.causationId;
      assert.match(String(idA), UUID_V7);
      assert.match(String(idB), UUID_V7);
      assert.notEqual(idA, idB);
      assert.equal(a.events[0]?.metadata.correlationId, idA);
    });

    it('keeps the same command id across retries', async () => {
      const { store, handler } = accountSetup({ maxAttempts: 3, initialDelayMs: 0 });
      await handler.handle('acc', { type: 'Open', owner: 'ada' });
      let interfere = 2;
      store.beforeAppend = async (streamId) => {
        if (interfere-- > 0) await store.competitorAppend(streamId, [deposited(1)]);
      };
      const result = await handler.handle('acc', { type: 'Deposit', amount: 5 });
      assert.equal(store.appendCalls.length, 4, 'one open, then three attempts');
      const ids = store.appendCalls.slice(1).map((c) => c.events[0]?.metadata?.causationId);
      assert.match(String(ids[0]), UUID_V7);
      assert.deepStrictEqual(ids, [ids[0], ids[0], ids[0]]);
      assert.equal(result.events[0]?.metadata.causationId, ids[0]);
    });

    it('rejects metadata that is not an object and an empty command id', async () => {
      const { handler } = accountSetup();
      await assert.rejects(handler.handle('acc', { type: 'Open', owner: 'ada' }, { metadata: 'x' as never }), { code: 'ESKIT_INVALID_ARGUMENT' });
      await assert.rejects(handler.handle('acc', { type: 'Open', owner: 'ada' }, { commandId: '' }), { code: 'ESKIT_INVALID_ARGUMENT' });
    });
  });

  describe('no-op decisions', () => {
    it('appends nothing and reports the loaded state, version and last position', async () => {
      const { store, handler } = accountSetup();
      const open = await handler.handle('acc', { type: 'Open', owner: 'ada' });
      await store.competitorAppend('other', [deposited(1)]);
      const head = await store.headPosition();
      const again = await handler.handle('acc', { type: 'Open', owner: 'ada' });
      assert.deepStrictEqual(again.events, []);
      assert.deepStrictEqual(again.state, open.state);
      assert.equal(again.nextExpectedVersion, 1);
      assert.equal(again.position, open.position, 'the position of the last event the state reflects');
      assert.equal(store.appendCalls.length, 1);
      assert.equal(await store.headPosition(), head);
      assert.equal(await store.streamVersion('acc'), 1);
    });

    it('reports no position on an empty stream', async () => {
      const store = new MemoryEventStore<CounterEvent>();
      const idle: Decider<number, 'noop', CounterEvent> = { ...counter, decide: () => [] };
      const handler = new CommandHandler({ store, decider: idle });
      const result = await handler.handle('nothing-here', 'noop');
      assert.deepStrictEqual(result, { state: 0, events: [], nextExpectedVersion: 0, position: undefined });
      assert.equal(await store.headPosition(), 0);
    });
  });

  describe('domain errors', () => {
    it('throws the error of decide unchanged, once, and writes nothing', async () => {
      const { store, handler, decideCalls } = accountSetup({ maxAttempts: 5 });
      await handler.handle('acc', { type: 'Open', owner: 'ada' });
      await handler.handle('acc', { type: 'Deposit', amount: 10 });
      const callsBefore = decideCalls();
      await assert.rejects(handler.handle('acc', { type: 'Withdraw', amount: 11 }), (error: unknown) => {
        assert.ok(error instanceof AccountError);
        assert.equal(error.code, 'INSUFFICIENT_FUNDS');
        return true;
      });
      assert.equal(decideCalls() - callsBefore, 1);
      assert.equal(store.appendCalls.length, 2);
      assert.equal(await store.streamVersion('acc'), 2);
    });

    it('does not retry an error of decide even when it is a concurrency error', async () => {
      const store = new MemoryEventStore<CounterEvent>();
      let calls = 0;
      const thrown = new ConcurrencyError('elsewhere', 1, 2);
      const failing: Decider<number, 'go', CounterEvent> = {
        ...counter,
        decide: () => {
          calls++;
          throw thrown;
        },
      };
      const handler = new CommandHandler({ store, decider: failing, retry: { maxAttempts: 5, initialDelayMs: 0 } });
      await assert.rejects(handler.handle('s', 'go'), (error) => error === thrown);
      assert.equal(calls, 1);
    });

    it('re-decides on the fresh state after a conflict, so a rule broken meanwhile is reported', async () => {
      const { store, handler, decideCalls } = accountSetup({ maxAttempts: 5, initialDelayMs: 0 });
      await handler.handle('acc', { type: 'Open', owner: 'ada' });
      await handler.handle('acc', { type: 'Deposit', amount: 100 });
      let interfered = false;
      store.beforeAppend = async (streamId) => {
        if (interfered) return;
        interfered = true;
        await store.competitorAppend(streamId, [withdrawn(50)]);
      };
      const before = decideCalls();
      await assert.rejects(handler.handle('acc', { type: 'Withdraw', amount: 80 }), { code: 'INSUFFICIENT_FUNDS' });
      assert.equal(decideCalls() - before, 2, 'decided once on balance 100, once on balance 50');
      assert.deepStrictEqual((await readStream(store, 'acc')).map((e) => e.type), ['AccountOpened', 'MoneyDeposited', 'MoneyWithdrawn']);
    });
  });

  describe('concurrency', () => {
    it('lets 20 concurrent commands on one stream all succeed through retries', async () => {
      const store = new MemoryEventStore<CounterEvent>();
      // A command fails only when another one succeeded between its read and its write, and each of
      // the other 19 succeeds once, so 20 attempts always suffice.
      const handler = new CommandHandler({ store, decider: counter, retry: { maxAttempts: 20, initialDelayMs: 1, maxDelayMs: 20 } });
      const results = await Promise.all(Array.from({ length: 20 }, () => handler.handle('counter', { type: 'Increment' })));
      assert.equal(await store.streamVersion('counter'), 20);
      const final = await handler.handle('counter', { type: 'Increment' });
      assert.equal(final.state, 21);
      assert.deepStrictEqual(
        results.map((r) => r.nextExpectedVersion).sort((a, b) => a - b),
        Array.from({ length: 20 }, (_, i) => i + 1),
      );
      // Each result's state is the count its own event brought the stream to.
      for (const r of results) assert.equal(r.state, r.nextExpectedVersion);
    });

    it('without retries, losers fail with ESKIT_CONCURRENCY carrying the actual version', async () => {
      const store = new MemoryEventStore<CounterEvent>();
      // A store object each, as 20 processes would have: through one store object, commands queue instead.
      const handlers = Array.from({ length: 20 }, () => new CommandHandler({ store: anotherHandle(store), decider: counter, retry: { maxAttempts: 1 } }));
      const settled = await Promise.allSettled(handlers.map((handler) => handler.handle('counter', { type: 'Increment' })));
      const won = settled.filter((s) => s.status === 'fulfilled');
      const lost = settled.flatMap((s) => (s.status === 'rejected' ? [s.reason as unknown] : []));
      assert.ok(won.length >= 1);
      assert.ok(lost.length >= 1, 'all 20 read the stream before any wrote, so some must lose');
      assert.equal(won.length + lost.length, 20);
      const version = await store.streamVersion('counter');
      assert.equal(version, won.length);
      for (const error of lost) {
        assert.ok(isEskitError(error, 'ESKIT_CONCURRENCY'), `unexpected ${String(error)}`);
        assert.ok(error instanceof ConcurrencyError);
        assert.equal(error.streamId, 'counter');
        assert.equal(typeof error.expectedVersion, 'number');
        assert.ok(error.actualVersion > Number(error.expectedVersion) && error.actualVersion <= version, error.message);
      }
    });

    it('rethrows the last conflict after maxAttempts attempts', async () => {
      const { store, handler, decideCalls } = accountSetup({ maxAttempts: 3, initialDelayMs: 0 });
      await handler.handle('acc', { type: 'Open', owner: 'ada' });
      store.beforeAppend = (streamId) => store.competitorAppend(streamId, [deposited(1)]).then(() => undefined);
      const before = decideCalls();
      await assert.rejects(handler.handle('acc', { type: 'Deposit', amount: 5 }), (error: unknown) => {
        assert.ok(error instanceof ConcurrencyError);
        // Versions 1→2, 2→3, 3→4: the error of the third attempt, not the first.
        assert.equal(error.expectedVersion, 3);
        assert.equal(error.actualVersion, 4);
        return true;
      });
      assert.equal(decideCalls() - before, 3);
      assert.equal(store.appendCalls.length, 1 + 3);
      assert.equal(store.streamReads, 1 + 3, 'every attempt reloads the stream');
    });

    it('retries 5 times by default', async () => {
      const store = new InterferingStore<CounterEvent>();
      const handler = new CommandHandler({ store, decider: counter });
      store.beforeAppend = (streamId) => store.competitorAppend(streamId, [{ type: 'Incremented', data: { by: 1 } }]).then(() => undefined);
      await assert.rejects(handler.handle('c', { type: 'Increment' }), { code: 'ESKIT_CONCURRENCY', actualVersion: 5 });
      assert.equal(store.appendCalls.length, 5);
    });

    it('succeeds after a one-off conflict with the competitor event folded in', async () => {
      const store = new InterferingStore<CounterEvent>();
      const handler = new CommandHandler({ store, decider: counter, retry: { initialDelayMs: 0 } });
      let interfere = true;
      store.beforeAppend = async (streamId) => {
        if (!interfere) return;
        interfere = false;
        await store.competitorAppend(streamId, [{ type: 'Incremented', data: { by: 10 } }]);
      };
      const result = await handler.handle('c', { type: 'Increment' });
      assert.equal(result.state, 11);
      assert.equal(result.nextExpectedVersion, 2);
      assert.deepStrictEqual(store.appendCalls.map((c) => c.options?.expectedVersion), [0, 1]);
    });
  });

  describe('explicit expectedVersion', () => {
    it('appends with the version the caller gave', async () => {
      const { store, handler } = accountSetup();
      await handler.handle('acc', { type: 'Open', owner: 'ada' }, { expectedVersion: 'no_stream' });
      const result = await handler.handle('acc', { type: 'Deposit', amount: 4 }, { expectedVersion: 1 });
      assert.equal(result.nextExpectedVersion, 2);
      await handler.handle('acc', { type: 'Deposit', amount: 4 }, { expectedVersion: 'stream_exists' });
      assert.deepStrictEqual(store.appendCalls.map((c) => c.options?.expectedVersion), ['no_stream', 1, 'stream_exists']);
    });

    it('fails at once, before deciding, when the stream is not at that version', async () => {
      const { store, handler, decideCalls } = accountSetup({ maxAttempts: 5, initialDelayMs: 0 });
      await handler.handle('acc', { type: 'Open', owner: 'ada' });
      await handler.handle('acc', { type: 'Deposit', amount: 4 });
      const before = decideCalls();
      await assert.rejects(handler.handle('acc', { type: 'Deposit', amount: 1 }, { expectedVersion: 1 }), (error: unknown) => {
        assert.ok(isEskitError(error, 'ESKIT_CONCURRENCY'));
        assert.ok(error instanceof ConcurrencyError);
        assert.equal(error.expectedVersion, 1);
        assert.equal(error.actualVersion, 2);
        return true;
      });
      await assert.rejects(handler.handle('acc', { type: 'Open', owner: 'ada' }, { expectedVersion: 'no_stream' }), {
        code: 'ESKIT_CONCURRENCY',
        actualVersion: 2,
      });
      assert.equal(decideCalls(), before, 'a no-op decision must not hide the stale version');
      assert.equal(store.appendCalls.length, 2);
    });

    it('does not retry a conflict at the append', async () => {
      const { store, handler, decideCalls } = accountSetup({ maxAttempts: 5, initialDelayMs: 0 });
      await handler.handle('acc', { type: 'Open', owner: 'ada' });
      store.beforeAppend = (streamId) => store.competitorAppend(streamId, [deposited(1)]).then(() => undefined);
      const before = decideCalls();
      const readsBefore = store.streamReads;
      await assert.rejects(handler.handle('acc', { type: 'Deposit', amount: 5 }, { expectedVersion: 1 }), {
        code: 'ESKIT_CONCURRENCY',
        expectedVersion: 1,
        actualVersion: 2,
      });
      assert.equal(store.streamReads - readsBefore, 1, 'a retry would have loaded the stream again');
      assert.equal(decideCalls() - before, 1);
      assert.equal(store.appendCalls.length, 2);
    });
  });

  describe('cancellation', () => {
    it('stops waiting for a retry when the signal aborts', async () => {
      const store = new InterferingStore<CounterEvent>();
      // Waits this long would time the test out: only the abort can end the call in time.
      const handler = new CommandHandler({ store, decider: counter, retry: { maxAttempts: 5, initialDelayMs: 600_000, maxDelayMs: 600_000 } });
      const controller = new AbortController();
      const reason = new Error('shutting down');
      store.beforeAppend = (streamId) => store.competitorAppend(streamId, [{ type: 'Incremented', data: { by: 1 } }]).then(() => undefined);
      // setImmediate runs after the microtasks that take the handler from the failed append into its wait.
      store.afterFailedAppend = () => setImmediate(() => controller.abort(reason));
      const started = performance.now();
      await assert.rejects(handler.handle('c', { type: 'Increment' }, { signal: controller.signal }), (error) => error === reason);
      assert.ok(performance.now() - started < 10_000);
      assert.equal(store.appendCalls.length, 1);
    });

    it('does nothing when the signal is already aborted', async () => {
      const store = new InterferingStore<CounterEvent>();
      const handler = new CommandHandler({ store, decider: counter });
      const controller = new AbortController();
      controller.abort(new Error('too late'));
      await assert.rejects(handler.handle('c', { type: 'Increment' }, { signal: controller.signal }), /too late/);
      assert.equal(store.appendCalls.length, 0);
      assert.equal(await store.headPosition(), 0);
    });
  });

  describe('options', () => {
    it('rejects invalid retry settings and a missing store or decider', () => {
      const store = new MemoryEventStore<CounterEvent>();
      for (const retry of [{ maxAttempts: 0 }, { maxAttempts: 1.5 }, { initialDelayMs: -1 }, { maxDelayMs: Number.NaN }]) {
        assert.throws(() => new CommandHandler({ store, decider: counter, retry }), { code: 'ESKIT_INVALID_ARGUMENT' }, JSON.stringify(retry));
      }
      assert.throws(() => new CommandHandler({ store: undefined as never, decider: counter }), { code: 'ESKIT_INVALID_ARGUMENT' });
      assert.throws(() => new CommandHandler({ store, decider: {} as never }), { code: 'ESKIT_INVALID_ARGUMENT' });
    });

    it('takes a backend instead of a store', async () => {
      const backend = memory<AccountEvent>();
      const handler = new CommandHandler({ backend, decider: account });
      await handler.handle('acc-1', { type: 'Open', owner: 'ada' });
      assert.equal(await backend.store.headPosition(), 1);
    });
  });
});
