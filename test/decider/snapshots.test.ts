import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { allOf, anyOf, ErrorCode, everyEvents, isEskitError, onEventTypes, slowerThan, snapshotWhen } from '../../src/core/index.js';
import type { EventShape, ReadStreamOptions, Recorded, SnapshotContext, SnapshotStore } from '../../src/core/index.js';
import { CommandHandler } from '../../src/decider/index.js';
import type { Decider } from '../../src/decider/index.js';
import { memory, MemoryEventStore } from '../../src/memory/index.js';
import { SnapshotCache } from '../../src/decider/snapshot-cache.js';
import { assertSnapshotsMatchReplay } from '../../src/testing/index.js';
import { account } from './account.js';
import type { AccountCommand, AccountEvent, AccountState } from './account.js';

function context(over: Partial<SnapshotContext> = {}): SnapshotContext {
  return { streamId: 's', version: 1, loadedVersion: 0, snapshotVersion: 0, loadedEvents: 0, loadMs: 0, events: [{ type: 'A', data: {} }], ...over };
}

const silent = { debug() {}, info() {}, warn() {}, error() {} };

/** A memory store whose stream reads start at `from`: a stream truncated before it, without the lifecycle API. */
class TruncatedReads<E extends EventShape> extends MemoryEventStore<E> {
  from = 1;
  override readStream(streamId: string, options: ReadStreamOptions & { raw: true }): AsyncIterable<Recorded>;
  override readStream(streamId: string, options?: ReadStreamOptions): AsyncIterable<Recorded<E>>;
  override readStream(streamId: string, options: ReadStreamOptions = {}): AsyncIterable<Recorded> {
    return super.readStream(streamId, { ...options, fromVersion: Math.max(this.from, options.fromVersion ?? 1) }) as AsyncIterable<Recorded>;
  }
}

async function openAccount(handler: CommandHandler<AccountState, AccountCommand, AccountEvent>, streamId: string, deposits: number): Promise<void> {
  await handler.handle(streamId, { type: 'Open', owner: 'ada' });
  for (let i = 1; i <= deposits; i++) await handler.handle(streamId, { type: 'Deposit', amount: i });
  await handler.flushSnapshots();
}

describe('snapshot policies', () => {
  it('everyEvents(n): due once n events were appended since the snapshot loaded; may be due when one more event gets there', () => {
    const policy = everyEvents(10);
    assert.equal(policy.due(context({ version: 9 })), false);
    assert.equal(policy.due(context({ version: 10 })), true);
    assert.equal(policy.due(context({ version: 25, snapshotVersion: 20 })), false);
    assert.equal(policy.due(context({ version: 30, snapshotVersion: 20 })), true);
    assert.equal(policy.mayBeDue?.(context({ loadedVersion: 8 })), false);
    assert.equal(policy.mayBeDue?.(context({ loadedVersion: 9 })), true);
    assert.throws(() => everyEvents(0), (e: unknown) => isEskitError(e, ErrorCode.InvalidArgument));
  });

  it('onEventTypes, slowerThan, snapshotWhen, anyOf and allOf', () => {
    const closed = onEventTypes('Closed');
    assert.equal(closed.due(context({ events: [{ type: 'Opened', data: {} }, { type: 'Closed', data: {} }] })), true);
    assert.equal(closed.due(context()), false);
    assert.equal(closed.mayBeDue, undefined, 'cannot know before decide: the copy is always taken');
    const slow = slowerThan(50);
    assert.equal(slow.due(context({ loadMs: 49 })), false);
    assert.equal(slow.mayBeDue?.(context({ loadMs: 50 })), true);
    assert.equal(snapshotWhen((c) => c.version === 3).due(context({ version: 3 })), true);
    const either = anyOf(everyEvents(100), closed);
    assert.equal(either.due(context({ version: 5 })), false);
    assert.equal(either.due(context({ version: 5, events: [{ type: 'Closed', data: {} }] })), true);
    assert.equal(either.mayBeDue?.(context()), true, 'a member without mayBeDue may always be due');
    const both = allOf(everyEvents(2), slow);
    assert.equal(both.due(context({ version: 2, loadMs: 60 })), true);
    assert.equal(both.due(context({ version: 2, loadMs: 10 })), false);
    assert.equal(both.mayBeDue?.(context({ loadedVersion: 5, loadMs: 10 })), false);
    assert.throws(() => anyOf(), (e: unknown) => isEskitError(e, ErrorCode.InvalidArgument));
    assert.throws(() => onEventTypes(), (e: unknown) => isEskitError(e, ErrorCode.InvalidArgument));
  });
});

describe('CommandHandler snapshots', () => {
  it('uses backend.snapshots under the name "decider" by default, and aggregate reads the same state as a command', async () => {
    const backend = memory<AccountEvent>();
    const handler = new CommandHandler({ backend, decider: account, snapshots: { version: 1, every: 5 } });
    await openAccount(handler, 'account-1', 11);
    const snapshot = await backend.snapshots.load('account-1', 'decider');
    assert.equal(snapshot?.streamVersion, 10);
    assert.deepEqual(snapshot?.state, { status: 'open', owner: 'ada', balance: 45 });
    const plain = new CommandHandler({ backend, decider: account });
    assert.deepEqual(await handler.aggregate('account-1'), await plain.aggregate('account-1'));
    assert.deepEqual(await plain.aggregate('account-1'), { state: { status: 'open', owner: 'ada', balance: 66 }, version: 12, position: 12 });
    assert.deepEqual(await plain.aggregate('nobody'), { state: account.initialState, version: 0, position: undefined });
  });

  it('still checks the caller\'s expected version against the stream, not the snapshot', async () => {
    const backend = memory<AccountEvent>();
    const handler = new CommandHandler({ backend, decider: account, snapshots: { version: 1, every: 2 } });
    await openAccount(handler, 'account-1', 4);
    await assert.rejects(handler.handle('account-1', { type: 'Deposit', amount: 1 }, { expectedVersion: 4 }), (e: unknown) => isEskitError(e, ErrorCode.Concurrency));
    const result = await handler.handle('account-1', { type: 'Deposit', amount: 1 }, { expectedVersion: 5 });
    assert.equal(result.nextExpectedVersion, 6);
  });

  it('a state JSON cannot hold is not snapshotted (a warning, the command unaffected) unless toJSON/fromJSON are given', async () => {
    type Dated = { at: Date | null; n: number };
    type Stamp = { type: 'Stamped'; data: { at: string } };
    const decider: Decider<Dated, { at: string }, Stamp> = {
      initialState: () => ({ at: null, n: 0 }),
      decide: (_state, command) => ({ type: 'Stamped', data: { at: command.at } }),
      evolve: (state, event) => ({ at: new Date(event.data.at), n: state.n + 1 }),
    };
    const backend = memory<Stamp>();
    const warnings: string[] = [];
    const logger = { ...silent, warn: (_f: Record<string, unknown>, m: string) => void warnings.push(m) };
    const plain = new CommandHandler({ backend, decider, snapshots: { version: 1, every: 1, logger } });
    await plain.handle('d-1', { at: '2024-01-01T00:00:00.000Z' });
    await plain.handle('d-1', { at: '2024-01-02T00:00:00.000Z' });
    await plain.flushSnapshots();
    assert.equal(await backend.snapshots.load('d-1', 'decider'), undefined);
    assert.ok(warnings.some((w) => w.includes('state.at') && w.includes('toJSON')), warnings.join(' | '));

    const withCodec = new CommandHandler({
      backend,
      decider,
      snapshots: {
        version: 1,
        every: 1,
        name: 'dated',
        toJSON: (state) => ({ at: state.at?.toISOString() ?? null, n: state.n }),
        fromJSON: (json) => {
          const { at, n } = json as { at: string | null; n: number };
          return { at: at === null ? null : new Date(at), n };
        },
      },
    });
    await withCodec.handle('d-1', { at: '2024-01-03T00:00:00.000Z' });
    await withCodec.flushSnapshots();
    assert.deepEqual((await backend.snapshots.load('d-1', 'dated'))?.state, { at: '2024-01-03T00:00:00.000Z', n: 3 });
    assert.deepEqual((await withCodec.aggregate('d-1')).state, { at: new Date('2024-01-03T00:00:00.000Z'), n: 3 });
  });

  it('a stream whose first events are gone and no usable snapshot covers them fails with ESKIT_STREAM_HISTORY_MISSING', async () => {
    const store = new TruncatedReads<AccountEvent>();
    const snapshots = memory().snapshots;
    const handler = new CommandHandler({ store, decider: account, snapshots: { store: snapshots, version: 1, every: 5 } });
    await openAccount(handler, 'account-1', 11); // snapshot at 10
    store.from = 8;
    assert.deepEqual((await handler.aggregate('account-1')).state.balance, 66, 'the snapshot at 10 covers the cut');
    const plain = new CommandHandler({ store, decider: account });
    const error = await plain.aggregate('account-1').then(
      () => assert.fail('a replay from 1 must not fold a history that starts at 8'),
      (e: unknown) => e,
    );
    assert.ok(isEskitError(error, ErrorCode.StreamHistoryMissing));
    assert.match((error as Error).message, /Stream "account-1" was truncated before version 8 and no usable snapshot covers it/);
    await assert.rejects(plain.handle('account-1', { type: 'Deposit', amount: 1 }), (e: unknown) => isEskitError(e, ErrorCode.StreamHistoryMissing));
    store.from = 11; // past the snapshot too
    await assert.rejects(handler.aggregate('account-1'), (e: unknown) => isEskitError(e, ErrorCode.StreamHistoryMissing));
  });

  it('loads from the snapshot it wrote last without reading the store; one that no longer fits the stream falls back to the store\'s', async () => {
    const store = new TruncatedReads<AccountEvent>();
    const stored = memory().snapshots;
    let loads = 0;
    const snapshots: SnapshotStore = {
      load: (streamId, name) => {
        loads++;
        return stored.load(streamId, name);
      },
      save: (snapshot, options) => stored.save(snapshot, options),
      deleteStream: (streamId) => stored.deleteStream(streamId),
    };
    const a = new CommandHandler({ store, decider: account, snapshots: { store: snapshots, version: 1, every: 5 } });
    await openAccount(a, 'account-1', 9); // a wrote (and keeps) the snapshot at 10
    loads = 0;
    assert.equal((await a.aggregate('account-1')).version, 10);
    assert.equal(loads, 0, 'read from the cache');
    // Another process (another handler) goes on and writes snapshots at 15 and 20.
    const b = new CommandHandler({ store, decider: account, snapshots: { store: snapshots, version: 1, every: 5, cacheSize: 0 } });
    for (let i = 0; i < 11; i++) await b.handle('account-1', { type: 'Deposit', amount: 1 });
    await b.flushSnapshots();
    assert.equal((await stored.load('account-1', 'decider'))?.streamVersion, 20);
    assert.ok(loads >= 11, 'without a cache every load reads the store');
    store.from = 17; // truncated past a's cached snapshot, not past the stored one
    loads = 0;
    assert.deepEqual(await a.aggregate('account-1'), await b.aggregate('account-1'));
    assert.equal(loads, 2, 'a: its cached snapshot no longer fits, so the store\'s; b: the store\'s');
    assert.equal((await a.aggregate('account-1')).state.balance, 45 + 11);
  });

  it('SnapshotCache: least recently used out first, by entries and by bytes; never moves back to a lower version', () => {
    const cache = new SnapshotCache(2, 1000);
    const entry = (streamVersion: number, state = '{}') => ({ streamVersion, eventId: 'id', state, kids: [] });
    cache.set('a', entry(1));
    cache.set('b', entry(1));
    cache.get('a');
    cache.set('c', entry(1));
    assert.equal(cache.get('b'), undefined, 'b was least recently used');
    assert.ok(cache.get('a') && cache.get('c'));
    cache.set('a', entry(5));
    cache.set('a', entry(3));
    assert.equal(cache.get('a')?.streamVersion, 5);
    cache.set('big', entry(1, 'x'.repeat(200)));
    assert.equal(cache.get('big'), undefined, 'an entry over an eighth of the budget is not kept');
    // 90 bytes each (UTF-16), within the 100 an entry may take of 800: the ninth pushes the first out.
    const small = new SnapshotCache(100, 800);
    for (let i = 0; i < 9; i++) small.set(`s${i}`, entry(1, 'x'.repeat(45)));
    assert.equal(small.get('s0'), undefined, 'pushed out by bytes');
    for (let i = 1; i < 9; i++) assert.ok(small.get(`s${i}`), `s${i} kept`);
    const off = new SnapshotCache(0, 1000);
    off.set('a', entry(1));
    assert.equal(off.get('a'), undefined);
  });

  it('checks its options', () => {
    const backend = memory<AccountEvent>();
    const bad = (snapshots: unknown, withBackend = true): void => {
      assert.throws(
        () => new CommandHandler({ ...(withBackend ? { backend } : { store: backend.store }), decider: account, snapshots: snapshots as { version: number } }),
        (e: unknown) => isEskitError(e, ErrorCode.InvalidArgument),
        JSON.stringify(snapshots),
      );
    };
    bad({});
    bad({ version: '' });
    bad({ version: Number.NaN });
    bad({ version: 1, every: 0 });
    bad({ version: 1, every: 5, policy: everyEvents(5) });
    bad({ version: 1, policy: () => true });
    bad({ version: 1, name: '' });
    bad({ version: 1, toJSON: 'no' });
    bad({ version: 1, cacheSize: -1 });
    bad({ version: 1 }, false); // a bare store: no snapshot store to default to
    const store: SnapshotStore = backend.snapshots;
    assert.ok(new CommandHandler({ store: backend.store, decider: account, snapshots: { version: 'v1', store } }));
  });
});

describe('assertSnapshotsMatchReplay', () => {
  const events: AccountEvent[] = [
    { type: 'AccountOpened', data: { owner: 'ada' } },
    { type: 'MoneyDeposited', data: { amount: 10 } },
    { type: 'MoneyWithdrawn', data: { amount: 3 } },
    { type: 'AccountClosed', data: { reason: 'done' } },
  ];

  it('passes for a decider whose state is plain JSON', () => {
    assertSnapshotsMatchReplay(account, events);
    assertSnapshotsMatchReplay(account, events, { every: 2 });
  });

  it('fails for a state that a snapshot does not carry whole', () => {
    // A Set survives a fold but not JSON: a snapshot would lose the owners seen.
    type Seen = { owners: Set<string> };
    const seen: Decider<Seen, never, AccountEvent> = {
      initialState: () => ({ owners: new Set() }),
      decide: () => [],
      evolve: (state, event) => (event.type === 'AccountOpened' ? { owners: new Set([...state.owners, event.data.owner]) } : state),
    };
    assert.throws(() => assertSnapshotsMatchReplay(seen, events), /cannot be a snapshot|differs from a full replay/);
    assertSnapshotsMatchReplay(seen, events, {
      toJSON: (state) => [...state.owners],
      fromJSON: (json) => ({ owners: new Set(json as string[]) }),
    });
  });
});
