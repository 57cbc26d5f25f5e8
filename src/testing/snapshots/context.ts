import assert from 'node:assert/strict';
import { it } from 'node:test';
import type { EventShape, Recorded } from '../../core/event.js';
import type { Logger } from '../../core/logger.js';
import type { Snapshot, SnapshotStore } from '../../core/snapshot.js';
import type { EventStore, ReadStreamOptions } from '../../core/store.js';
import { fold } from '../../decider/decider.js';
import type { Decider } from '../../decider/decider.js';

/** An event store and a snapshot store on the same fresh, empty storage. */
export interface SnapshotStores {
  store: EventStore;
  snapshots: SnapshotStore;
  /** Releases what `create` opened (connections, files, schemas). */
  close(): Promise<void>;
}

/** What an adapter hands `snapshotConformance`. */
export interface SnapshotConformanceHarness {
  /** Shown in test names, e.g. 'memory', 'sqlite', 'postgres'. */
  name: string;
  /** Fresh, empty stores for one test; called once per test and closed when it ends. */
  create(): Promise<SnapshotStores>;
  /**
   * Optional: overwrites the stored state of the snapshot (streamId, name) with text that is not JSON,
   * where the backend can hold such text. Without it that test is not run.
   */
  corruptSnapshot?(stores: SnapshotStores, streamId: string, name: string): Promise<void>;
  /** Fails a test that runs longer than this (a hung query must fail, not stall CI). Default 60 000. */
  testTimeoutMs?: number;
}

export type TallyEvent = { type: 'Added'; data: { n: number; label: string } } | { type: 'Reset'; data: { reason: string } };
export type TallyCommand = { type: 'add'; n: number } | { type: 'reset' };
export interface TallyState {
  count: number;
  total: number;
  labels: string[];
}

/**
 * A small decider whose `evolve` changes the state it is given (as many real ones do) and whose
 * state depends on every event's data and order, so that a wrong snapshot shows.
 */
export function tally(options: { mutatingDecide?: boolean; weight?: number } = {}): Decider<TallyState, TallyCommand, TallyEvent> {
  const weight = options.weight ?? 1;
  return {
    initialState: () => ({ count: 0, total: 0, labels: [] }),
    decide(state, command) {
      if (options.mutatingDecide) {
        // Changes the state it was handed: none of this may reach a snapshot.
        state.count += 1000;
        state.labels.push('decide was here');
      }
      if (command.type === 'reset') return { type: 'Reset', data: { reason: 'asked' } };
      return { type: 'Added', data: { n: command.n, label: `#${state.count}` } };
    },
    evolve(state, event) {
      if (event.type === 'Reset') {
        state.total = 0;
        state.labels.length = 0;
      } else {
        state.count += 1;
        state.total += event.data.n * weight;
        state.labels.push(event.data.label);
      }
      return state;
    },
  };
}

export async function readAll(store: EventStore, streamId: string): Promise<Recorded[]> {
  const out: Recorded[] = [];
  for await (const event of store.readStream(streamId)) out.push(event);
  return out;
}

/** The state folding the stream's events 1..upTo gives (from a fresh initial state). */
export async function replayed<S>(store: EventStore, decider: Decider<S, never, EventShape>, streamId: string, upTo = Number.MAX_SAFE_INTEGER): Promise<S> {
  const events = (await readAll(store, streamId)).filter((event) => event.streamVersion <= upTo);
  return fold(decider, events as EventShape[]);
}

/** Asserts the stored snapshot is the fold of exactly the events up to its version, ending with its event. */
export async function assertSnapshotFaithful<S>(
  stores: SnapshotStores,
  decider: Decider<S, never, EventShape>,
  streamId: string,
  name: string,
): Promise<Snapshot> {
  const snapshot = await stores.snapshots.load(streamId, name);
  assert.ok(snapshot !== undefined, `a snapshot of ${streamId} was written`);
  const events = await readAll(stores.store, streamId);
  const last = events.find((event) => event.streamVersion === snapshot.streamVersion);
  assert.equal(snapshot.eventId, last?.id, 'the snapshot names the event at its stream version');
  assert.deepStrictEqual(snapshot.state, await replayed(stores.store, decider, streamId, snapshot.streamVersion), 'snapshot state == replay up to its version');
  return snapshot;
}

/** A view of `store` that counts the events its stream reads yield (a proxy: the store itself does the work). */
export function countingReads<T extends EventStore>(store: T): { store: T; read: () => number } {
  let read = 0;
  const proxy = new Proxy(store, {
    get(target, key) {
      if (key === 'readStream') {
        return (streamId: string, options?: ReadStreamOptions) => {
          const iterable = target.readStream(streamId, options);
          return {
            [Symbol.asyncIterator]: () => {
              const iterator = iterable[Symbol.asyncIterator]();
              return {
                next: async () => {
                  const result = await iterator.next();
                  if (!result.done) read++;
                  return result;
                },
                return: async () => (await iterator.return?.()) ?? { done: true as const, value: undefined },
              };
            },
          };
        };
      }
      const value: unknown = Reflect.get(target, key, target);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
  return { store: proxy, read: () => read };
}

/** A logger that keeps what it is told (warnings are how snapshot failures surface). */
export function recordingLogger(): Logger & { warnings: string[] } {
  const warnings: string[] = [];
  return { warnings, debug() {}, info() {}, warn: (_fields, message) => void warnings.push(message), error: (_fields, message) => void warnings.push(message) };
}

/** Resolves when `release()` is called: holds a write open for as long as a test needs. */
export function gate(): { wait: Promise<void>; release: () => void } {
  let release = (): void => undefined;
  const wait = new Promise<void>((resolve) => {
    release = resolve;
  });
  return { wait, release };
}

export type SnapshotTest = (name: string, fn: TestBody) => void;
type TestBody = (stores: SnapshotStores) => Promise<void>;

/** `it` with fresh stores from the harness for each test, closed when it ends whatever happened. */
export function snapshotTest(harness: SnapshotConformanceHarness): SnapshotTest {
  return (name, fn) => {
    it(name, { timeout: harness.testTimeoutMs ?? 60_000 }, async () => {
      const stores = await harness.create();
      try {
        await fn(stores);
      } finally {
        await stores.close();
      }
    });
  };
}
