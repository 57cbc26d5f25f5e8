import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { ErrorCode } from '../core/errors.js';
import type { SubjectKey, SubjectKeyStore } from '../core/personal/types.js';
import { expectCode } from './conformance/context.js';
import { closeAll } from './personal/context.js';

/** A key store on fresh, empty storage. */
export interface SubjectKeyStores {
  keys: SubjectKeyStore;
  /** Releases what `create` (or `openAnother`) opened. */
  close(): Promise<void>;
}

/** What an adapter hands `subjectKeyConformance`. */
export interface SubjectKeyConformanceHarness {
  /** Shown in test names, e.g. 'memory', 'sqlite', 'postgres'. */
  name: string;
  /** A key store on fresh, empty storage for one test; called once per test and closed when it ends. */
  create(): Promise<SubjectKeyStores>;
  /**
   * Optional: a second key store on the same storage as `stores.keys`, with its own connection (what
   * another process would have). Without it the cross-handle tests are not registered.
   */
  openAnother?(stores: SubjectKeyStores): Promise<SubjectKeyStores>;
  /** Fails a test that runs longer than this (a hung query must fail, not stall CI). Default 60 000. */
  testTimeoutMs?: number;
}

/** `another()`: a second handle on the test's storage (only in tests registered when openAnother is given). */
type Body = (keys: SubjectKeyStore, another: () => Promise<SubjectKeyStore>) => Promise<void>;

/** A subject of its own for each use: no test depends on another's leftovers. */
const subject = (label: string): string => `${label}-${randomUUID()}`;

function assertKey(key: SubjectKey, what: string): void {
  assert.equal(typeof key.kid, 'string', `${what}: kid is a string`);
  assert.ok(key.kid.length > 0, `${what}: kid is not empty`);
  assert.ok(key.key instanceof Uint8Array, `${what}: key is a Uint8Array`);
  assert.equal(key.key.length, 32, `${what}: key is 32 bytes (AES-256)`);
  assert.ok(key.key.some((byte) => byte !== 0), `${what}: key is not all zeros`);
}

const bytes = (key: Uint8Array | null | undefined): number[] | null | undefined => (key instanceof Uint8Array ? [...key] : key);

/**
 * Registers the SubjectKeyStore conformance tests (node:test `describe`/`it`) for one key store: one
 * live key per subject, created once even under concurrent first use; keysById telling live, destroyed
 * and unknown keys apart; forget destroying every key behind a fence that outlives it (also for a
 * subject never seen); allowNewKey; argument checks. Every adapter in eskit runs it, and so can a key
 * store of your own (a KMS):
 *
 * ```ts
 * subjectKeyConformance({
 *   name: 'my-kms',
 *   create: async () => {
 *     const kms = await freshKms();
 *     return { keys: new MyKmsKeyStore(kms), close: () => kms.drop() };
 *   },
 * });
 * ```
 */
export function subjectKeyConformance(harness: SubjectKeyConformanceHarness): void {
  const test = (name: string, fn: Body): void => {
    it(name, { timeout: harness.testTimeoutMs ?? 60_000 }, async () => {
      const stores = await harness.create();
      const opened: SubjectKeyStores[] = [];
      const another = async (): Promise<SubjectKeyStore> => {
        if (!harness.openAnother) throw new Error(`harness ${harness.name} has no openAnother`);
        const other = await harness.openAnother(stores);
        opened.push(other);
        return other.keys;
      };
      try {
        await fn(stores.keys, another);
      } finally {
        // The second handles first: they live on the storage the first one owns.
        await closeAll([...opened, stores]);
      }
    });
  };

  describe(`SubjectKeyStore conformance: ${harness.name}`, () => {
    test('keyFor creates a key on first use and returns the same one after', async (keys) => {
      const alice = subject('alice');
      assert.equal(await keys.isForgotten(alice), false, 'a subject never seen is not forgotten');
      const first = await keys.keyFor(alice);
      assertKey(first, 'first keyFor');
      const again = await keys.keyFor(alice);
      assert.equal(again.kid, first.kid, 'the same kid');
      assert.deepEqual(bytes(again.key), bytes(first.key), 'the same key bytes');
      assert.equal(await keys.isForgotten(alice), false);
      const found = await keys.keysById([first.kid]);
      assert.deepEqual(bytes(found.get(first.kid)), bytes(first.key), 'keysById finds the key keyFor made');
    });

    test('concurrent first keyFor calls of a subject all get the one key', async (keys) => {
      const racing = subject('racing');
      const got = await Promise.all(Array.from({ length: 10 }, () => keys.keyFor(racing)));
      assert.equal(new Set(got.map((key) => key.kid)).size, 1, `one kid, got ${[...new Set(got.map((key) => key.kid))].join(', ')}`);
      for (const key of got) assert.deepEqual(bytes(key.key), bytes(got[0]?.key), 'the same bytes');
      assert.equal((await keys.keyFor(racing)).kid, got[0]?.kid, 'and it stays the live key');
    });

    test('subjects have keys of their own; forgetting one leaves the others', async (keys) => {
      const names = Array.from({ length: 5 }, (_, index) => subject(`subject${index}`));
      const made = await Promise.all(names.map((name) => keys.keyFor(name)));
      assert.equal(new Set(made.map((key) => key.kid)).size, 5, 'five kids');
      assert.equal(new Set(made.map((key) => Buffer.from(key.key).toString('hex'))).size, 5, 'five different keys');
      const forgotten = await keys.forget(names[0] as string);
      assert.equal(forgotten.keysDestroyed, 1);
      const found = await keys.keysById(made.map((key) => key.kid));
      assert.equal(found.get(made[0]?.kid as string), null, 'the forgotten one is destroyed');
      for (const [index, key] of made.entries()) {
        if (index === 0) continue;
        assert.deepEqual(bytes(found.get(key.kid)), bytes(key.key), `subject ${index} keeps its key`);
        assert.equal(await keys.isForgotten(names[index] as string), false);
        assert.equal((await keys.keyFor(names[index] as string)).kid, key.kid);
      }
    });

    test('keysById: live keys, null for destroyed ones, unknown ids left out', async (keys) => {
      const live = await keys.keyFor(subject('live'));
      const gone = subject('gone');
      const destroyed = await keys.keyFor(gone);
      await keys.forget(gone);
      const unknown = randomUUID();
      const found = await keys.keysById([live.kid, destroyed.kid, unknown, live.kid]);
      assert.deepEqual(bytes(found.get(live.kid)), bytes(live.key), 'live: its bytes');
      assert.equal(found.has(destroyed.kid), true, 'destroyed: present...');
      assert.equal(found.get(destroyed.kid), null, '...as null');
      assert.equal(found.has(unknown), false, 'unknown: left out (a lost key must not read as a forgotten subject)');
      assert.equal(found.size, 2, 'a kid asked twice is one entry');
      assert.equal((await keys.keysById([])).size, 0, 'no kids: an empty map');
      assert.equal((await keys.keysById(['not-a-uuid'])).size, 0, 'a kid of any shape may be asked for');
    });

    test('keysById answers many kids at once', async (keys) => {
      const made = await Promise.all(Array.from({ length: 60 }, (_, index) => keys.keyFor(subject(`many${index}`))));
      const found = await keys.keysById(made.map((key) => key.kid));
      assert.equal(found.size, 60);
      for (const key of made) assert.deepEqual(bytes(found.get(key.kid)), bytes(key.key));
    });

    test('forget destroys the key behind a fence: keyFor refuses, and a second forget destroys nothing', async (keys) => {
      const bob = subject('bob');
      const key = await keys.keyFor(bob);
      const result = await keys.forget(bob);
      assert.deepEqual(result, { subject: bob, keysDestroyed: 1, alreadyForgotten: false });
      assert.equal((await keys.keysById([key.kid])).get(key.kid), null, 'the key is destroyed, and known to be');
      assert.equal(await keys.isForgotten(bob), true);
      const error = await expectCode(() => keys.keyFor(bob), ErrorCode.SubjectForgotten);
      assert.equal((error as { subject?: unknown }).subject, bob, 'the error names the subject');
      const again = await keys.forget(bob);
      assert.deepEqual(again, { subject: bob, keysDestroyed: 0, alreadyForgotten: true });
      assert.equal((await keys.keysById([key.kid])).get(key.kid), null, 'still destroyed');
      await expectCode(() => keys.keyFor(bob), ErrorCode.SubjectForgotten);
    });

    test('forget of a subject never seen fences it: no key can be made for it until allowNewKey', async (keys) => {
      const stranger = subject('stranger');
      assert.deepEqual(await keys.forget(stranger), { subject: stranger, keysDestroyed: 0, alreadyForgotten: false });
      assert.equal(await keys.isForgotten(stranger), true);
      await expectCode(() => keys.keyFor(stranger), ErrorCode.SubjectForgotten);
      assert.deepEqual(await keys.forget(stranger), { subject: stranger, keysDestroyed: 0, alreadyForgotten: true });
      const fresh = await keys.allowNewKey(stranger);
      assertKey(fresh, 'allowNewKey after a fence');
      assert.equal((await keys.keyFor(stranger)).kid, fresh.kid);
      assert.equal(await keys.isForgotten(stranger), false);
    });

    test('allowNewKey after forget: a new key, while the old one stays destroyed', async (keys) => {
      const carol = subject('carol');
      const old = await keys.keyFor(carol);
      await keys.forget(carol);
      const fresh = await keys.allowNewKey(carol);
      assertKey(fresh, 'allowNewKey');
      assert.notEqual(fresh.kid, old.kid, 'a new kid');
      assert.notDeepEqual(bytes(fresh.key), bytes(old.key), 'new bytes');
      assert.equal(await keys.isForgotten(carol), false);
      const live = await keys.keyFor(carol);
      assert.equal(live.kid, fresh.kid, 'keyFor returns the new key');
      assert.deepEqual(bytes(live.key), bytes(fresh.key));
      const found = await keys.keysById([old.kid, fresh.kid]);
      assert.equal(found.get(old.kid), null, 'the old key never comes back');
      assert.deepEqual(bytes(found.get(fresh.kid)), bytes(fresh.key));
      assert.equal((await keys.allowNewKey(carol)).kid, fresh.kid, 'allowNewKey of a live subject returns its live key');
      assert.deepEqual(await keys.forget(carol), { subject: carol, keysDestroyed: 1, alreadyForgotten: false }, 'forgetting again destroys the new key only');
      const after = await keys.keysById([old.kid, fresh.kid]);
      assert.equal(after.get(old.kid), null);
      assert.equal(after.get(fresh.kid), null);
    });

    test('allowNewKey of a subject never seen makes its key; concurrent allowNewKey calls make one', async (keys) => {
      const dave = subject('dave');
      const made = await keys.allowNewKey(dave);
      assertKey(made, 'allowNewKey of a new subject');
      assert.equal((await keys.keyFor(dave)).kid, made.kid);
      await keys.forget(dave);
      const racing = await Promise.all(Array.from({ length: 8 }, () => keys.allowNewKey(dave)));
      assert.equal(new Set(racing.map((key) => key.kid)).size, 1, 'one live key per subject');
      assert.notEqual(racing[0]?.kid, made.kid);
      assert.equal((await keys.keyFor(dave)).kid, racing[0]?.kid);
      assert.equal((await keys.forget(dave)).keysDestroyed, 1, 'one key was live');
    });

    test('forget racing keyFor: once forget returned, every key handed out is destroyed', async (keys) => {
      for (let round = 0; round < 5; round++) {
        const erin = subject(`erin${round}`);
        const got: SubjectKey[] = [];
        const calls = Array.from({ length: 6 }, () =>
          keys.keyFor(erin).then(
            (key) => void got.push(key),
            (error: unknown) => assert.equal((error as { code?: unknown }).code, ErrorCode.SubjectForgotten, `keyFor fails only as forgotten, got ${String(error)}`),
          ),
        );
        const forgotten = await keys.forget(erin);
        await Promise.all(calls);
        assert.ok(forgotten.keysDestroyed <= 1, 'at most one key was live');
        assert.ok(new Set(got.map((key) => key.kid)).size <= 1, 'one key at most was handed out');
        if (got.length > 0) {
          const kid = got[0]?.kid as string;
          assert.equal((await keys.keysById([kid])).get(kid), null, 'the key handed out is destroyed');
        }
        assert.equal(await keys.isForgotten(erin), true);
        await expectCode(() => keys.keyFor(erin), ErrorCode.SubjectForgotten);
      }
    });

    test('subjects of any text: unicode, quotes, long', async (keys) => {
      for (const name of ['ünïcödé 🎉 / with:chars', `quote ' and " and \\ and %_`, 'x'.repeat(500), 'Case', 'case']) {
        const key = await keys.keyFor(name);
        assert.equal((await keys.keyFor(name)).kid, key.kid, `${name.slice(0, 20)}: the same key`);
      }
      assert.notEqual((await keys.keyFor('Case')).kid, (await keys.keyFor('case')).kid, 'subjects are case-sensitive');
      await keys.forget('Case');
      assert.equal(await keys.isForgotten('case'), false, 'forgetting "Case" leaves "case"');
    });

    test('an empty subject is refused with ESKIT_INVALID_ARGUMENT', async (keys) => {
      for (const bad of ['', undefined, 7]) {
        const what = JSON.stringify(bad) ?? 'undefined';
        await expectCode(() => keys.keyFor(bad as string), ErrorCode.InvalidArgument).catch((error: unknown) => assert.fail(`keyFor(${what}): ${String(error)}`));
        await expectCode(() => keys.forget(bad as string), ErrorCode.InvalidArgument).catch((error: unknown) => assert.fail(`forget(${what}): ${String(error)}`));
        await expectCode(() => keys.allowNewKey(bad as string), ErrorCode.InvalidArgument).catch((error: unknown) => assert.fail(`allowNewKey(${what}): ${String(error)}`));
        await expectCode(() => keys.isForgotten(bad as string), ErrorCode.InvalidArgument).catch((error: unknown) => assert.fail(`isForgotten(${what}): ${String(error)}`));
      }
    });

    if (harness.openAnother) {
      describe('two handles on the same storage', () => {
        test('concurrent first keyFor calls through two handles get one key', async (keys, another) => {
          const other = await another();
          for (let round = 0; round < 5; round++) {
            const frank = subject(`frank${round}`);
            const got = await Promise.all(Array.from({ length: 6 }, (_, index) => (index % 2 === 0 ? keys : other).keyFor(frank)));
            assert.equal(new Set(got.map((key) => key.kid)).size, 1, 'one kid');
          }
        });

        test('forget through one handle is seen at once by the other', async (keys, another) => {
          const other = await another();
          const gina = subject('gina');
          const key = await other.keyFor(gina);
          assert.deepEqual(await keys.forget(gina), { subject: gina, keysDestroyed: 1, alreadyForgotten: false });
          assert.equal((await other.keysById([key.kid])).get(key.kid), null);
          assert.equal(await other.isForgotten(gina), true);
          await expectCode(() => other.keyFor(gina), ErrorCode.SubjectForgotten);
          const fresh = await other.allowNewKey(gina);
          assert.equal((await keys.keyFor(gina)).kid, fresh.kid, 'a key allowed through one handle is the other\'s live key');
        });

        test('forget through one handle racing keyFor through the other: every key handed out is destroyed', async (keys, another) => {
          const other = await another();
          for (let round = 0; round < 5; round++) {
            const hank = subject(`hank${round}`);
            const got: SubjectKey[] = [];
            const calls = Array.from({ length: 6 }, () =>
              other.keyFor(hank).then(
                (key) => void got.push(key),
                (error: unknown) => assert.equal((error as { code?: unknown }).code, ErrorCode.SubjectForgotten, String(error)),
              ),
            );
            await keys.forget(hank);
            await Promise.all(calls);
            const kids = [...new Set(got.map((key) => key.kid))];
            assert.ok(kids.length <= 1, 'one key at most');
            for (const [kid, value] of await keys.keysById(kids)) assert.equal(value, null, `${kid} is destroyed`);
            await expectCode(() => other.keyFor(hank), ErrorCode.SubjectForgotten);
          }
        });
      });
    }
  });
}
