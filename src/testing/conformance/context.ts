import assert from 'node:assert/strict';
import { it as nodeIt } from 'node:test';
import type { TestOptions } from 'node:test';
import { isEskitError } from '../../core/errors.js';
import type { EskitError } from '../../core/errors.js';
import type { EventShape } from '../../core/event.js';
import type { EventRegistry } from '../../core/registry.js';
import type { EventStore } from '../../core/store.js';

export interface CreateStoreOptions<E extends EventShape = EventShape> {
  registry?: EventRegistry<E>;
  pageSize?: number;
}

/** What an adapter hands the conformance suite. */
export interface ConformanceHarness {
  /** Shown in test names, e.g. 'memory', 'sqlite', 'postgres'. */
  name: string;
  /** A fresh, empty store for one test (own schema/file); called once per test. Options pass through to the adapter. */
  createStore<E extends EventShape = EventShape>(options?: CreateStoreOptions<E>): Promise<EventStore<E>>;
  /**
   * Optional: a second, independent handle (own connection) on the same storage as `store`. Without it
   * the cross-handle tests are not registered.
   */
  openAnother?<E extends EventShape = EventShape>(store: EventStore<E>): Promise<EventStore<E>>;
  /**
   * Makes the stored event at `position` unreadable as eskit would write it: invalid JSON data where
   * the backend allows it, else metadata that is not an object.
   */
  corruptEvent(store: EventStore, position: number): Promise<void>;
  /** Optional: what the lifecycle tests look at beside the log (stream lifecycle, issue 19). Without it those checks are skipped. */
  lifecycle?: LifecycleHooks;
  /** Called after each test (once its stores are closed), to drop schemas/files. */
  dispose?(): Promise<void>;
  /** Fails a test that runs longer than this (a hung read or lock must fail, not stall CI). Default 60 000. */
  testTimeoutMs?: number;
  /** Optional: runs once before the suite (e.g. to open a shared admin connection). */
  setup?(): Promise<void>;
  /** Optional: runs once after the suite. */
  teardown?(): Promise<void>;
}

/** Storage a stream's deletion must clear, as the adapter keeps it. */
export interface LifecycleHooks {
  /** The stream versions of the stream's rows kept by soft deletes (deleted_events), ascending. */
  deletedVersions(store: EventStore, streamId: string): Promise<number[]>;
  /** Stores a snapshot of the stream under `name` in the adapter's snapshot storage. */
  writeSnapshot(store: EventStore, streamId: string, name: string): Promise<void>;
  /** How many snapshots the adapter's snapshot storage holds for the stream. */
  snapshotCount(store: EventStore, streamId: string): Promise<number>;
}

type TestFn = () => Promise<void>;

/**
 * Per-test bookkeeping: every store a test opens is closed after it, before `dispose`, so a failing
 * assertion cannot leak connections into the next test.
 */
export class SuiteContext {
  #open: EventStore<EventShape>[] = [];

  constructor(readonly harness: ConformanceHarness) {}

  /** node:test `it` with the harness's per-test timeout unless the test sets its own. */
  readonly it = (name: string, optionsOrFn: TestOptions | TestFn, maybeFn?: TestFn): void => {
    const [options, fn] = typeof optionsOrFn === 'function' ? [{}, optionsOrFn] : [optionsOrFn, maybeFn as TestFn];
    nodeIt(name, { timeout: this.harness.testTimeoutMs ?? 60_000, ...options }, fn);
  };

  async store<E extends EventShape = EventShape>(options?: CreateStoreOptions<E>): Promise<EventStore<E>> {
    const store = await this.harness.createStore<E>(options);
    this.#open.push(store as unknown as EventStore<EventShape>);
    return store;
  }

  async another<E extends EventShape = EventShape>(store: EventStore<E>): Promise<EventStore<E>> {
    if (!this.harness.openAnother) throw new Error(`harness ${this.harness.name} has no openAnother`);
    const other = await this.harness.openAnother(store);
    this.#open.push(other as unknown as EventStore<EventShape>);
    return other;
  }

  async cleanup(): Promise<void> {
    const stores = this.#open;
    this.#open = [];
    // Close every handle even if one fails, then report the first failure.
    const results = await Promise.allSettled(stores.map((s) => s.close()));
    await this.harness.dispose?.();
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }
}

/**
 * Reads an iterable to the end. The cap turns a read whose paging never advances (an endless loop
 * over the same rows) into a failure instead of a hang: no test here reads more than a few hundred.
 */
export async function collect<T>(iterable: AsyncIterable<T>, cap = 20_000): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) {
    out.push(item);
    assert.ok(out.length <= cap, `a read yielded more than ${cap} events: its paging does not advance`);
  }
  return out;
}

function describeError(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return `${error.name}${code === undefined ? '' : ` [${String(code)}]`}: ${error.message}`;
  }
  return String(error);
}

/** Runs `fn`, asserts it throws an eskit error with one of `codes`, and returns that error. */
export async function expectCode(fn: () => unknown, codes: string | readonly string[]): Promise<EskitError> {
  const wanted = typeof codes === 'string' ? [codes] : codes;
  let error: unknown;
  try {
    await fn();
  } catch (caught) {
    error = caught;
  }
  if (error === undefined) assert.fail(`expected an error with code ${wanted.join(' or ')}, but the call succeeded`);
  assert.ok(
    isEskitError(error) && wanted.includes(error.code),
    `expected an error with code ${wanted.join(' or ')}, got ${describeError(error)}`,
  );
  return error;
}

/** Everything a write could have changed: checked before and after a call that must write nothing. */
export interface Snapshot {
  head: number;
  versions: Record<string, number>;
  all: { id: string; position: number }[];
}

export async function snapshot(store: EventStore, streams: readonly string[]): Promise<Snapshot> {
  const versions: Record<string, number> = {};
  for (const s of streams) versions[s] = await store.streamVersion(s);
  const all = (await collect(store.readAll({ raw: true }))).map((e) => ({ id: e.id, position: e.position }));
  return { head: await store.headPosition(), versions, all };
}

export async function assertUnchanged(store: EventStore, before: Snapshot, what: string): Promise<void> {
  const after = await snapshot(store, Object.keys(before.versions));
  assert.deepEqual(after, before, `${what} must write nothing`);
}

/** Lets other tasks (and I/O callbacks) run; used by pollers that found nothing new. */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;

export function assertStrictlyIncreasing(values: readonly number[], what: string): void {
  for (let i = 1; i < values.length; i++) {
    assert.ok((values[i] as number) > (values[i - 1] as number), `${what} must be strictly increasing, got ${values.join(',')}`);
  }
}
