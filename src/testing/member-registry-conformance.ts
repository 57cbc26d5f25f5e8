import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { ErrorCode, isEskitError } from '../core/errors.js';
import type { LiveMember, MemberHeartbeat, MemberRegistry } from '../core/members.js';
import { waitUntil } from './wait.js';

/** One backend (a database file, a schema, an in-process table) for one test. */
export interface MemberRegistryBackend<R extends MemberRegistry = MemberRegistry> {
  /**
   * A registry on this backend: a node. Registries of one backend see the same members, as processes
   * sharing a database do. Return a new one (its own connections) on every call if the adapter can; an
   * in-process adapter whose nodes all share one instance may return that instance every time.
   */
  registry(): R | Promise<R>;
  /** Closes every registry it made and releases the backend (drops the schema, deletes the file). */
  close(): Promise<void>;
}

/** What an adapter hands `memberRegistryConformance`. */
export interface MemberRegistryConformanceHarness<R extends MemberRegistry = MemberRegistry> {
  /** Shown in test names, e.g. 'memory', 'sqlite', 'postgres'. */
  name: string;
  /** A fresh, empty backend for one test; called once per test. */
  create(): Promise<MemberRegistryBackend<R>>;
  /** Fails a test that runs longer than this. Default 30 000. */
  testTimeoutMs?: number;
  /** The longest the suite waits for a notification or an expiry. Default 10 000. */
  waitTimeoutMs?: number;
  /** The ttl of a member the suite lets expire. Default 200 ms. */
  shortTtlMs?: number;
}

interface MemberTestContext<R extends MemberRegistry> {
  /** A registry (a node) of this test's backend. */
  registry(): Promise<R>;
  /** The groups `registry`'s `onChange` reports, in order; the listener is removed after the test. */
  heard(registry: R): string[];
  until<T>(condition: () => T | Promise<T>, message: string): Promise<NonNullable<T>>;
}

const LONG_TTL_MS = 60_000;

const member = (id: string, partitions = 4, ttlMs = LONG_TTL_MS): MemberHeartbeat => ({ id, partitions, ttlMs });

const ids = (members: LiveMember[]): string[] => members.map((m) => m.id);

/** The promise `call` returns; fails the test if it throws instead. */
function promiseOf<T>(what: string, call: () => Promise<T>): Promise<T> {
  try {
    return call();
  } catch (error) {
    assert.fail(`${what} threw synchronously (${String(error)}); it must return a rejected promise`);
  }
}

const invalid = (mentions: RegExp) => (error: unknown): boolean => {
  const described = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  assert.ok(isEskitError(error, ErrorCode.InvalidArgument), `expected ${ErrorCode.InvalidArgument}, got ${described}`);
  assert.match((error as Error).message, mentions);
  return true;
};

/**
 * Registers the MemberRegistry conformance tests (node:test `describe`/`it`) for one adapter. Every
 * registry in eskit runs it, and so can third-party ones:
 *
 * ```ts
 * memberRegistryConformance<MyMemberRegistry>({
 *   name: 'my-adapter',
 *   create: async () => {
 *     const database = await freshDatabase();
 *     const made: MyMemberRegistry[] = [];
 *     return {
 *       registry: () => made[made.push(new MyMemberRegistry({ url: database.url })) - 1],
 *       close: async () => { for (const r of made) await r.close(); await database.drop(); },
 *     };
 *   },
 * });
 * ```
 *
 * What it checks: a heartbeat returns the member itself with its partition count; members of a group
 * see each other sorted by id (code units, as JavaScript sorts); a changed partition count shows at the
 * next heartbeat; leave takes a member out at once, tells the others, and is safe twice; a member whose
 * ttl ran out is dead for the others and announced again when it comes back; a new member's heartbeat
 * is announced and a live member's is not; onChange's remover stops its listener; groups are separate;
 * bad input is refused with ESKIT_INVALID_ARGUMENT and writes nothing. Tests run one after another.
 */
export function memberRegistryConformance<R extends MemberRegistry>(harness: MemberRegistryConformanceHarness<R>): void {
  const testTimeoutMs = harness.testTimeoutMs ?? 30_000;
  const waitTimeoutMs = harness.waitTimeoutMs ?? 10_000;
  const shortTtlMs = harness.shortTtlMs ?? 200;
  const cleanups: Array<() => Promise<void>> = [];

  const test = (name: string, fn: (ctx: MemberTestContext<R>) => Promise<void>): void => {
    it(name, { timeout: testTimeoutMs }, async () => {
      // An in-process adapter has nothing pending while the suite waits for a notification that never
      // comes: node:test would then cancel every test left instead of failing this one in time.
      const keepAlive = setInterval(() => undefined, 60_000);
      const backend = await harness.create().catch((error: unknown) => {
        clearInterval(keepAlive);
        throw error;
      });
      const removers: Array<() => void> = [];
      cleanups.push(async () => {
        clearInterval(keepAlive);
        for (const remove of removers.splice(0)) remove();
        await backend.close();
      });
      await fn({
        registry: async () => backend.registry(),
        heard(registry) {
          const groups: string[] = [];
          removers.push(registry.onChange((group) => groups.push(group)));
          return groups;
        },
        until: (condition, message) => waitUntil(condition, { timeoutMs: waitTimeoutMs, message }),
      });
    });
  };

  describe(`MemberRegistry conformance: ${harness.name}`, () => {
    // After a failed or timed-out test as well: what it opened must not keep the process alive.
    afterEach(async () => {
      for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    }, { timeout: testTimeoutMs });

    test('a heartbeat returns the member itself, with its partition count', async ({ registry }) => {
      const a = await registry();
      assert.deepEqual(await a.heartbeat('g', member('node-a', 12)), [{ id: 'node-a', partitions: 12 }]);
      assert.deepEqual(await a.heartbeat('g', member('node-a', 12)), [{ id: 'node-a', partitions: 12 }], 'again, alone still');
    });

    test('members of a group see each other, sorted by id as JavaScript sorts strings (code units)', async ({ registry }) => {
      const [a, b, c] = [await registry(), await registry(), await registry()];
      await b.heartbeat('g', member('node-b'));
      await c.heartbeat('g', member('Node-c'));
      const expected = ['Node-c', 'node-a', 'node-b'];
      assert.deepEqual(ids(await a.heartbeat('g', member('node-a'))), expected);
      assert.deepEqual(ids(await b.heartbeat('g', member('node-b'))), expected);
      assert.deepEqual(ids(await c.heartbeat('g', member('Node-c'))), expected);
    });

    test("each member's partition count is returned, and a changed count shows at its next heartbeat", async ({ registry }) => {
      const [a, b] = [await registry(), await registry()];
      await a.heartbeat('g', member('a', 8));
      assert.deepEqual(await b.heartbeat('g', member('b', 12)), [{ id: 'a', partitions: 8 }, { id: 'b', partitions: 12 }]);
      await a.heartbeat('g', member('a', 16));
      assert.deepEqual(await b.heartbeat('g', member('b', 12)), [{ id: 'a', partitions: 16 }, { id: 'b', partitions: 12 }]);
    });

    test('leave takes a member out at once and tells the others; twice, or for a stranger, is fine', async ({ registry, heard, until }) => {
      const [a, b] = [await registry(), await registry()];
      const groups = heard(b);
      await a.heartbeat('g', member('a'));
      await b.heartbeat('g', member('b'));
      await until(() => groups.length >= 2, 'both joins to be announced');
      await a.leave('g', 'a');
      assert.deepEqual(ids(await b.heartbeat('g', member('b'))), ['b'], 'gone at once, long before its ttl');
      await until(() => groups.length >= 3, "b's listener to hear that a left");
      assert.equal(groups[2], 'g');
      await a.leave('g', 'a');
      await a.leave('g', 'never-seen');
      await a.leave('other', 'a');
      assert.deepEqual(ids(await b.heartbeat('g', member('b'))), ['b']);
      assert.deepEqual(ids(await a.heartbeat('g', member('a'))), ['a', 'b'], 'a member that left may join again');
    });

    test('a member whose ttl ran out is dead for the others; its next heartbeat brings it back, announced', async ({ registry, heard, until }) => {
      const [a, b] = [await registry(), await registry()];
      const groups = heard(b);
      await a.heartbeat('g', member('a', 4, shortTtlMs));
      assert.deepEqual(ids(await b.heartbeat('g', member('b'))), ['a', 'b'], 'alive within its ttl');
      await until(() => groups.length >= 2, 'both joins to be announced');
      const alone = await until(async () => {
        const live = await b.heartbeat('g', member('b'));
        return live.length === 1 ? live : undefined;
      }, `a's ttl of ${shortTtlMs} ms to run out`);
      assert.deepEqual(ids(alone), ['b']);
      const before = groups.length;
      assert.deepEqual(ids(await a.heartbeat('g', member('a'))), ['a', 'b']);
      await until(() => groups.length > before && groups.at(-1) === 'g', 'the return of a to be announced');
      assert.deepEqual(ids(await b.heartbeat('g', member('b'))), ['a', 'b']);
    });

    test("a new member's first heartbeat is announced to listeners; a live member's heartbeat is not", async ({ registry, heard, until }) => {
      const [a, b, c] = [await registry(), await registry(), await registry()];
      const groups = heard(b);
      await a.heartbeat('g', member('a'));
      await until(() => groups.includes('g'), "a's join to be announced");
      assert.deepEqual(groups, ['g']);
      await a.heartbeat('g', member('a'));
      await a.heartbeat('g', member('a', 6));
      // A join in another group fences: announced after the heartbeats above, so they are heard by then.
      await c.heartbeat('fence', member('c'));
      await until(() => groups.includes('fence'), "c's join to be announced");
      assert.deepEqual(groups, ['g', 'fence'], 'only the joins');
    });

    test("onChange's remover stops its listener, and leaves the others listening", async ({ registry, heard, until }) => {
      const [a, b] = [await registry(), await registry()];
      const kept = heard(b);
      const dropped: string[] = [];
      const remove = b.onChange((group) => dropped.push(group));
      remove();
      remove();
      await a.heartbeat('g', member('a'));
      await until(() => kept.includes('g'), 'the kept listener to hear the join');
      assert.deepEqual(dropped, []);
    });

    test('groups are separate: members, leaves and announcements of one do not touch another', async ({ registry, heard, until }) => {
      const [a, b] = [await registry(), await registry()];
      const groups = heard(b);
      assert.deepEqual(await a.heartbeat('one', member('a', 3)), [{ id: 'a', partitions: 3 }]);
      assert.deepEqual(await b.heartbeat('two', member('b', 5)), [{ id: 'b', partitions: 5 }]);
      assert.deepEqual(await a.heartbeat('two', member('a', 5)), [{ id: 'a', partitions: 5 }, { id: 'b', partitions: 5 }], 'one node in two groups');
      await a.leave('one', 'a');
      assert.deepEqual(ids(await b.heartbeat('two', member('b', 5))), ['a', 'b'], "leaving one group keeps a in the other");
      assert.deepEqual(ids(await b.heartbeat('one', member('b', 3))), ['b']);
      await until(() => groups.filter((g) => g === 'one').length >= 2, 'announcements naming their group');
      assert.ok(groups.every((g) => g === 'one' || g === 'two'), `only the groups used: ${JSON.stringify(groups)}`);
    });

    test('bad input is refused with ESKIT_INVALID_ARGUMENT and a message naming what to fix; nothing is written', async ({ registry }) => {
      const a = await registry();
      const refusals: Array<[string, () => Promise<unknown>, RegExp]> = [
        ['empty group', () => a.heartbeat('', member('x')), /group/],
        ['group not a string', () => a.heartbeat(42 as unknown as string, member('x')), /group/],
        ['group with NUL', () => a.heartbeat('g\u0000', member('x')), /group/],
        ['no member', () => a.heartbeat('g', undefined as unknown as MemberHeartbeat), /member/],
        ['empty id', () => a.heartbeat('g', member('')), /id/],
        ['id not a string', () => a.heartbeat('g', { ...member('x'), id: 7 as unknown as string }), /id/],
        ['zero partitions', () => a.heartbeat('g', member('x', 0)), /partitions/],
        ['negative partitions', () => a.heartbeat('g', member('x', -2)), /partitions/],
        ['fractional partitions', () => a.heartbeat('g', member('x', 1.5)), /partitions/],
        ['partitions as text', () => a.heartbeat('g', member('x', '4' as unknown as number)), /partitions/],
        ['NaN partitions', () => a.heartbeat('g', member('x', Number.NaN)), /partitions/],
        ['zero ttl', () => a.heartbeat('g', member('x', 4, 0)), /ttlMs/],
        ['negative ttl', () => a.heartbeat('g', member('x', 4, -100)), /ttlMs/],
        ['fractional ttl', () => a.heartbeat('g', member('x', 4, 10.5)), /ttlMs/],
        ['no ttl', () => a.heartbeat('g', { id: 'x', partitions: 4 } as MemberHeartbeat), /ttlMs/],
        ['leave: empty group', () => a.leave('', 'x'), /group/],
        ['leave: empty id', () => a.leave('g', ''), /id/],
      ];
      for (const [what, call, mentions] of refusals) {
        await assert.rejects(promiseOf(what, call), invalid(mentions), what);
      }
      assert.deepEqual(ids(await a.heartbeat('g', member('ok'))), ['ok'], 'none of the refused members was written');
    });
  });
}
