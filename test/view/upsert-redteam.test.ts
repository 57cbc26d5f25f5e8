// Red-team tests of tx.upsert. The promise: the tables end as if every upsert had run one at a time,
// in order (increment columns stored + given, other columns the given value, insert when missing), on
// SQLite and on PostgreSQL, where a batch's upserts are written by one
// `INSERT ... SELECT ... ON CONFLICT` per run. The later groups hold what red-team passes found wrong
// in earlier versions.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { DeadLetter } from '../../src/core/dead-letter.js';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import { silentLogger } from '../../src/core/logger.js';
import { MemoryDeadLetterStore } from '../../src/memory/index.js';
import { rowShape } from '../../src/core/view-rows.js';
import { postgres } from '../../src/postgres/index.js';
import type { PostgresViewTx } from '../../src/postgres/index.js';
import { sqlite } from '../../src/sqlite/index.js';
import { SqlView } from '../../src/view/index.js';
import type { SqlViewOptions, Upsert } from '../../src/view/index.js';
import { createTestSchema } from '../support/postgres.js';
import { removeDatabase, tempDatabasePath } from '../sqlite/helpers.js';

type StepEvent = { type: 'Step'; data: { i: number } };
/** One evolve for both backends: what event `i` upserts. */
type Apply = (i: number, upsert: Upsert) => void;
type Tables = (t: (name: string) => string) => string[];

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const retry = { maxAttempts: 2, initialDelayMs: 1, maxDelayMs: 5 };
const steps = (count: number): StepEvent[] => Array.from({ length: count }, (_, i) => ({ type: 'Step' as const, data: { i } }));

/**
 * A PostgreSQL view over `count` events appended at once (so, with the default batch size, one batch:
 * everything is folded), started and caught up. `query` reads with `t(name)` naming the live table.
 */
async function onPostgres(options: {
  tables: Tables;
  count: number;
  apply?: Apply;
  evolve?: SqlViewOptions<StepEvent, PostgresViewTx>['evolve'];
  evolveBatch?: SqlViewOptions<StepEvent, PostgresViewTx>['evolveBatch'];
  batchSize?: number;
}) {
  const schema = await createTestSchema({ create: false, poolSize: 6 });
  cleanups.push(() => schema.drop());
  const backend = postgres<StepEvent>({ pool: schema.pool, schema: schema.name, leaderElection: false });
  cleanups.push(() => backend.close());
  await backend.migrate();
  const { store } = backend;
  const head = (await store.append('s', steps(options.count))).position;
  const deadLetters = new MemoryDeadLetterStore();
  const { apply } = options;
  const evolve: SqlViewOptions<StepEvent, PostgresViewTx>['evolve'] = options.evolve ?? ((event, { upsert }) => apply?.(event.data.i, upsert));
  const view = new SqlView({
    name: 'redteam',
    backend,
    setup: { version: 1, statements: options.tables },
    deadLetters,
    logger: silentLogger,
    retry,
    ...(options.batchSize === undefined ? {} : { batchSize: options.batchSize }),
    ...(options.evolveBatch ? { evolveBatch: options.evolveBatch } : { evolve }),
  });
  cleanups.push(() => view.stop());
  await view.start();
  await view.waitFor(head, { timeoutMs: 20_000 });
  const query = async <R extends object>(sql: (t: (name: string) => string) => string): Promise<R[]> =>
    (await schema.pool.query<R>(sql((name) => `"${schema.name}"."${name}"`))).rows;
  const letters = async (): Promise<DeadLetter[]> => deadLetters.list({ source: 'redteam' });
  return { schema, store, view, query, letters };
}

/** The same on SQLite (upserts run at once there). */
async function onSqlite(options: { tables: Tables; count: number; apply: Apply }) {
  const path = tempDatabasePath('upsert-redteam');
  const backend = sqlite<StepEvent>({ path });
  cleanups.push(() => removeDatabase(path));
  cleanups.push(() => backend.close());
  const { store } = backend;
  const head = (await store.append('s', steps(options.count))).position;
  const deadLetters = new MemoryDeadLetterStore();
  const view = new SqlView({
    name: 'redteam',
    backend,
    setup: { version: 1, statements: options.tables },
    deadLetters,
    logger: silentLogger,
    retry,
    evolve: (event, { upsert }) => options.apply(event.data.i, upsert),
  });
  cleanups.push(() => view.stop());
  await view.start();
  await view.waitFor(head, { timeoutMs: 20_000 });
  const all = <R>(sql: string): R[] => store.database.prepare(sql).safeIntegers(true).all() as R[];
  const letters = async (): Promise<DeadLetter[]> => deadLetters.list({ source: 'redteam' });
  return { store, view, all, letters };
}

describe('upsert red team: regression tests', () => {
  const KEYS = ['plain', "it's", 'back\\slash', 'new\nline', 'tab\there', 'ünïcödé ✓ 🎉', '"quoted"', '', 'NULL', '%_*'];
  const LONG = 'é'.repeat(100_000);
  const at = (i: number): Date => new Date(Date.UTC(2026, 0, 31, 23, 59, 59, 999) + i * 1000);
  /** Quoted mixed-case and reserved column names; bigint sums beyond 2^53; Dates, booleans, long text. */
  const apply: Apply = (i, upsert) => {
    KEYS.forEach((k, j) => {
      upsert(
        'odd',
        { k, itemCount: i % 2 === 0 ? j + 5 : -2, order: i, user: j === 0 ? LONG : `u${i}`, big: 2n ** 60n + BigInt(i), at: at(i), at_text: at(i), flag: i % 2 === 0, ratio: i + 0.5 },
        { key: ['k'], increment: ['itemCount', 'big'] },
      );
    });
  };
  const COUNT = 5;
  const expected = KEYS.map((k, j) => {
    let itemCount = 0;
    let big = 0n;
    for (let i = 0; i < COUNT; i++) {
      itemCount += i % 2 === 0 ? j + 5 : -2;
      big += 2n ** 60n + BigInt(i);
    }
    const last = COUNT - 1;
    return { k, itemCount: String(itemCount), order: String(last), user: j === 0 ? LONG : `u${last}`, big: String(big), at: at(last).toISOString(), at_text: at(last).toISOString(), flag: last % 2 === 0, ratio: last + 0.5 };
  }).sort((x, y) => (x.k < y.k ? -1 : x.k > y.k ? 1 : 0));

  it('quoted column names, awkward keys and values: PostgreSQL (folded, then rebuilt into shadow tables) and SQLite give the rows of one-at-a-time', async () => {
    interface PgRow {
      k: string;
      itemCount: string;
      order: string;
      user: string;
      big: string;
      at: Date;
      at_text: string;
      flag: boolean;
      ratio: number;
    }
    const pg = await onPostgres({
      count: COUNT,
      batchSize: 3,
      apply,
      tables: (t) => [
        `CREATE TABLE ${t('odd')} (k text PRIMARY KEY, "itemCount" bigint NOT NULL, "order" integer, "user" text, big bigint,
           at timestamptz, at_text text, flag boolean, ratio double precision)`,
      ],
    });
    const readPg = async () =>
      (
        await pg.query<PgRow>((t) => `SELECT k, "itemCount"::text AS "itemCount", "order"::text AS "order", "user", big::text AS big, at, at_text, flag, ratio FROM ${t('odd')} ORDER BY k COLLATE "C"`)
      ).map((row) => ({ ...row, at: row.at.toISOString() }));
    assert.deepEqual(await pg.letters(), []);
    assert.deepEqual(await readPg(), expected);
    const rebuilt = await pg.view.rebuild({ batchSize: 2 });
    assert.equal(rebuilt.events, COUNT);
    assert.deepEqual(await readPg(), expected);

    const lite = await onSqlite({
      count: COUNT,
      apply,
      tables: (t) => [`CREATE TABLE ${t('odd')} (k TEXT PRIMARY KEY, "itemCount" INTEGER NOT NULL, "order" INTEGER, "user" TEXT, big INTEGER, at TEXT, at_text TEXT, flag INTEGER, ratio REAL)`],
    });
    assert.deepEqual(await lite.letters(), []);
    const rows = lite
      .all<{ k: string; itemCount: bigint; order: bigint; user: string; big: bigint; at: string; at_text: string; flag: bigint; ratio: number }>(
        `SELECT k, "itemCount", "order", "user", big, at, at_text, flag, ratio FROM odd ORDER BY k`,
      )
      .map((row) => ({ ...row, itemCount: String(row.itemCount), order: String(row.order), big: String(row.big), flag: row.flag === 1n }));
    assert.deepEqual(rows, expected);
  });

  it('shapes: column order, increment vs set, increment [] vs undefined keep one-at-a-time order on both backends', async () => {
    // For one row, in one event: every step changes the shape (another run) but never the key.
    const applyShapes: Apply = (i, upsert) => {
      if (i !== 0) return;
      upsert('n', { id: 'a', n: 1, tag: 'one' }, { key: ['id'], increment: ['n'] }); // insert: 1
      upsert('n', { tag: 'two', n: 2, id: 'a' }, { key: ['id'], increment: ['n'] }); // 3 (columns reordered)
      upsert('n', { id: 'a', n: 10, tag: 'set' }, { key: ['id'] }); // 10 (same columns, no increment)
      upsert('n', { id: 'a', n: 5, tag: 'inc' }, { key: ['id'], increment: ['n'] }); // 15
      upsert('n', { id: 'a', n: 7, tag: 'empty' }, { key: ['id'], increment: [] }); // 7 ([] is "no increment")
      upsert('n', { id: 'a', n: 1, tag: 'inc2' }, { key: ['id'], increment: ['n'] }); // 8
      upsert('n', { id: 'a', n: 100, tag: 'undef' }, { key: ['id'], increment: undefined }); // 100
      upsert('n', { id: 'a', n: -1, tag: 'last' }, { key: ['id'], increment: ['n'] }); // 99
      upsert('n', { id: 'a' }, { key: ['id'] }); // DO NOTHING
      upsert('n', { id: 'b' }, { key: ['id'] }); // inserts b with the defaults
      upsert('n', { id: 'b' }, { key: ['id'] });
    };
    const pg = await onPostgres({ count: 1, apply: applyShapes, tables: (t) => [`CREATE TABLE ${t('n')} (id text PRIMARY KEY, n integer NOT NULL DEFAULT 0, tag text)`] });
    assert.deepEqual(await pg.letters(), []);
    const expectedRows = [
      { id: 'a', n: 99, tag: 'last' },
      { id: 'b', n: 0, tag: null },
    ];
    assert.deepEqual(await pg.query((t) => `SELECT id, n, tag FROM ${t('n')} ORDER BY id`), expectedRows);
    const lite = await onSqlite({ count: 1, apply: applyShapes, tables: (t) => [`CREATE TABLE ${t('n')} (id TEXT PRIMARY KEY, n INTEGER NOT NULL DEFAULT 0, tag TEXT)`] });
    assert.deepEqual(
      lite.all<{ id: string; n: bigint; tag: string | null }>('SELECT id, n, tag FROM n ORDER BY id').map((row) => ({ ...row, n: Number(row.n) })),
      expectedRows,
    );
    // Same columns, another key or other increments: never the same shape (never folded together).
    const signatures = [
      rowShape('redteam-shapes', 't', { a: 1, b: 2 }, { key: ['a'] }),
      rowShape('redteam-shapes', 't', { a: 1, b: 2 }, { key: ['a', 'b'] }),
      rowShape('redteam-shapes', 't', { a: 1, b: 2 }, { key: ['a'], increment: ['b'] }),
      rowShape('redteam-shapes', 't', { b: 2, a: 1 }, { key: ['a'] }),
    ].map((shape) => shape.signature);
    assert.equal(new Set(signatures).size, signatures.length);
  });

  it('flush(): twice, with nothing queued, then upserts after it; tx.client works after it; an evolve that throws after queuing writes nothing', async () => {
    const seen: string[] = [];
    const pg = await onPostgres({
      count: 3,
      tables: (t) => [`CREATE TABLE ${t('c')} (id text PRIMARY KEY, n bigint NOT NULL)`],
      evolve: async (event, { upsert, flush, client, table }) => {
        const read = async (): Promise<string> => (await client.query<{ n: string }>(`SELECT coalesce(sum(n), 0)::text AS n FROM ${table('c')}`)).rows[0]?.n ?? '?';
        if (event.data.i === 0) {
          await flush(); // nothing queued
          upsert('c', { id: 'a', n: 1 }, { key: ['id'], increment: ['n'] });
          await flush();
          await flush();
          seen.push(await read());
          upsert('c', { id: 'a', n: 2 }, { key: ['id'], increment: ['n'] });
          upsert('c', { id: 'b', n: 1 }, { key: ['id'], increment: ['n'] });
          await flush();
          seen.push(await read());
          upsert('c', { id: 'a', n: 4 }, { key: ['id'], increment: ['n'] }); // written when evolve returns
        } else if (event.data.i === 1) {
          upsert('c', { id: 'a', n: 1000 }, { key: ['id'], increment: ['n'] });
          upsert('c', { id: 'z', n: 1000 }, { key: ['id'], increment: ['n'] });
          throw new Error('evolve fails after queuing');
        } else {
          seen.push(await read()); // rows of event 0 were written, none of event 1
          upsert('c', { id: 'a', n: 8 }, { key: ['id'], increment: ['n'] });
        }
      },
    });
    assert.deepEqual(
      (await pg.letters()).map((letter) => letter.eventPosition),
      [2],
    );
    assert.deepEqual(await pg.query((t) => `SELECT id, n::text AS n FROM ${t('c')} ORDER BY id`), [
      { id: 'a', n: '15' },
      { id: 'b', n: '1' },
    ]);
    // The batch of 3 ran (and failed on event 1) before the events ran one at a time; the reads of the
    // last successful attempts come last.
    assert.deepEqual(seen.slice(-3), ['1', '4', '8']);
  });

  it('evolveBatch: upserts of the whole batch are folded, flush() in the middle makes them readable', async () => {
    const reads: string[] = [];
    const pg = await onPostgres({
      count: 6,
      tables: (t) => [`CREATE TABLE ${t('c')} (id text PRIMARY KEY, n bigint NOT NULL, last integer)`],
      evolveBatch: async (events, { upsert, flush, client, table }) => {
        for (const [index, event] of events.entries()) {
          upsert('c', { id: event.data.i % 2 === 0 ? 'even' : 'odd', n: 1, last: event.data.i }, { key: ['id'], increment: ['n'] });
          if (index === 2) {
            await flush();
            reads.push((await client.query<{ n: string }>(`SELECT sum(n)::text AS n FROM ${table('c')}`)).rows[0]?.n ?? '?');
          }
        }
      },
    });
    assert.deepEqual(await pg.letters(), []);
    assert.deepEqual(reads, ['3']);
    assert.deepEqual(await pg.query((t) => `SELECT id, n::text AS n, last FROM ${t('c')} ORDER BY id`), [
      { id: 'even', n: '3', last: 4 },
      { id: 'odd', n: '3', last: 5 },
    ]);
  });

  it('a value PostgreSQL cannot store (NUL in text) fails the batch, and only its event is dead-lettered', async () => {
    const pg = await onPostgres({
      count: 4,
      tables: (t) => [`CREATE TABLE ${t('c')} (id text PRIMARY KEY, n integer NOT NULL, note text)`],
      // On a key of its own: a later upsert of the same key would fold it away (see the divergence below).
      apply: (i, upsert) => upsert('c', { id: i === 2 ? 'nul' : 'a', n: 1, note: i === 2 ? 'nul \u0000 here' : `note ${i}` }, { key: ['id'], increment: ['n'] }),
    });
    const letters = await pg.letters();
    assert.deepEqual(
      letters.map((letter) => letter.eventPosition),
      [3],
    );
    assert.match(letters[0]?.attempts.at(-1)?.error ?? '', /Unicode escape/);
    assert.deepEqual(await pg.query((t) => `SELECT id, n, note FROM ${t('c')}`), [{ id: 'a', n: 3, note: 'note 3' }]);
  });

  it('tables written in first-touched order against a foreign key: the batch fails, one at a time gets it right, no dead letter', async () => {
    const applyFk: Apply = (i, upsert) => {
      // Event 0 touches lines first (its cart exists from the setup); event 1 adds a cart and its line.
      if (i === 0) upsert('lines', { cart: 'old', line: 1, qty: 1 }, { key: ['cart', 'line'], increment: ['qty'] });
      else {
        upsert('carts', { cart: 'new', lines: 1 }, { key: ['cart'], increment: ['lines'] });
        upsert('lines', { cart: 'new', line: 1, qty: 1 }, { key: ['cart', 'line'], increment: ['qty'] });
      }
    };
    const tables: Tables = (t) => [
      `CREATE TABLE ${t('carts')} (cart text PRIMARY KEY, lines integer NOT NULL)`,
      `INSERT INTO ${t('carts')} VALUES ('old', 0)`,
      `CREATE TABLE ${t('lines')} (cart text NOT NULL REFERENCES ${t('carts')}, line integer NOT NULL, qty integer NOT NULL, PRIMARY KEY (cart, line))`,
    ];
    const pg = await onPostgres({ count: 2, apply: applyFk, tables });
    assert.deepEqual(await pg.letters(), []);
    assert.deepEqual(await pg.query((t) => `SELECT cart, line, qty FROM ${t('lines')} ORDER BY cart`), [
      { cart: 'new', line: 1, qty: 1 },
      { cart: 'old', line: 1, qty: 1 },
    ]);
  });
});

describe('upsert red team: found and fixed', () => {
  it(
    'keys equal to PostgreSQL (1 vs 1n in a composite key, 1 vs "1" in a text key) are one row, as the database compares them',
    async () => {
      // One at a time, each second upsert finds the row of the first: n = 2 in both tables.
      const pg = await onPostgres({
        count: 1,
        tables: (t) => [`CREATE TABLE ${t('pos')} (stream text, pos bigint, n integer NOT NULL, PRIMARY KEY (stream, pos))`, `CREATE TABLE ${t('txt')} (id text PRIMARY KEY, n integer NOT NULL)`],
        apply: (_, upsert) => {
          upsert('pos', { stream: 's', pos: 1, n: 1 }, { key: ['stream', 'pos'], increment: ['n'] });
          upsert('pos', { stream: 's', pos: 1n, n: 1 }, { key: ['stream', 'pos'], increment: ['n'] });
          upsert('txt', { id: 1, n: 1 }, { key: ['id'], increment: ['n'] });
          upsert('txt', { id: '1', n: 1 }, { key: ['id'], increment: ['n'] });
        },
      });
      assert.deepEqual(
        (await pg.letters()).map((letter) => letter.attempts.at(-1)?.error),
        [],
      );
      assert.deepEqual(await pg.query((t) => `SELECT n FROM ${t('pos')} UNION ALL SELECT n FROM ${t('txt')}`), [{ n: 2 }, { n: 2 }]);
    },
  );

  it(
    'SQLite: a number into a TEXT column is stored as PostgreSQL stores it ("1", not "1.0"), so it meets the string key "1"',
    async () => {
      const lite = await onSqlite({
        count: 1,
        tables: (t) => [`CREATE TABLE ${t('txt')} (id TEXT PRIMARY KEY, label TEXT, n INTEGER NOT NULL)`],
        apply: (_, upsert) => {
          upsert('txt', { id: 1, label: 2, n: 1 }, { key: ['id'], increment: ['n'] });
          upsert('txt', { id: '1', label: 2, n: 1 }, { key: ['id'], increment: ['n'] });
        },
      });
      assert.deepEqual(lite.all('SELECT id, label, n FROM txt'), [{ id: '1', label: '2', n: 2n }]);
    },
  );

  it(
    'an object into a jsonb column is stored as that JSON document',
    async () => {
      const pg = await onPostgres({
        count: 1,
        tables: (t) => [`CREATE TABLE ${t('docs')} (id text PRIMARY KEY, body jsonb NOT NULL)`],
        apply: (_, upsert) => upsert('docs', { id: 'a', body: { x: 1 } }, { key: ['id'] }),
      });
      assert.deepEqual(await pg.letters(), []);
      assert.deepEqual(await pg.query((t) => `SELECT jsonb_typeof(body) AS type, body->>'x' AS x FROM ${t('docs')}`), [{ type: 'object', x: '1' }]);
    },
  );

  it(
    'increments of one key in one batch are exact, as PostgreSQL adds them one at a time (numeric 0.1 + 0.2; bigint sums past 2^53)',
    async () => {
      const pg = await onPostgres({
        count: 1,
        tables: (t) => [`CREATE TABLE ${t('sums')} (id text PRIMARY KEY, amount numeric NOT NULL, total bigint NOT NULL)`],
        apply: (_, upsert) => {
          upsert('sums', { id: 'a', amount: 0.1, total: Number.MAX_SAFE_INTEGER }, { key: ['id'], increment: ['amount', 'total'] });
          upsert('sums', { id: 'a', amount: 0.2, total: 2 }, { key: ['id'], increment: ['amount', 'total'] });
        },
      });
      assert.deepEqual(await pg.letters(), []);
      assert.deepEqual(await pg.query((t) => `SELECT amount::text AS amount, total::text AS total FROM ${t('sums')}`), [{ amount: '0.3', total: '9007199254740993' }]);
    },
  );

  it(
    'an increment mixing a fractional number and a bigint (numeric column) folds like SQL adds it',
    async () => {
      const applyMixed: Apply = (_, upsert) => {
        upsert('sums', { id: 'a', amount: 1.5 }, { key: ['id'], increment: ['amount'] });
        upsert('sums', { id: 'a', amount: 1n }, { key: ['id'], increment: ['amount'] });
      };
      const lite = await onSqlite({ count: 1, apply: applyMixed, tables: (t) => [`CREATE TABLE ${t('sums')} (id TEXT PRIMARY KEY, amount NUMERIC NOT NULL)`] });
      assert.deepEqual(lite.all<{ amount: number }>('SELECT amount FROM sums'), [{ amount: 2.5 }]);
      const pg = await onPostgres({ count: 1, apply: applyMixed, tables: (t) => [`CREATE TABLE ${t('sums')} (id text PRIMARY KEY, amount numeric NOT NULL)`] });
      assert.deepEqual(
        (await pg.letters()).map((letter) => letter.attempts.at(-1)?.error),
        [],
      );
      assert.deepEqual(await pg.query((t) => `SELECT amount::text AS amount FROM ${t('sums')}`), [{ amount: '2.5' }]);
    },
  );

  it(
    'rows with a NULL key (a unique index on a nullable column) never meet, as one at a time: two inserts',
    async () => {
      const applyNull: Apply = (_, upsert) => {
        upsert('u', { k: null, n: 1 }, { key: ['k'], increment: ['n'] });
        upsert('u', { k: null, n: 1 }, { key: ['k'], increment: ['n'] });
      };
      const lite = await onSqlite({ count: 1, apply: applyNull, tables: (t) => [`CREATE TABLE ${t('u')} (k TEXT UNIQUE, n INTEGER NOT NULL)`] });
      assert.deepEqual(lite.all<{ n: bigint }>('SELECT n FROM u'), [{ n: 1n }, { n: 1n }]);
      const pg = await onPostgres({ count: 1, apply: applyNull, tables: (t) => [`CREATE TABLE ${t('u')} (k text UNIQUE, n integer NOT NULL)`] });
      assert.deepEqual(await pg.query((t) => `SELECT n FROM ${t('u')}`), [{ n: 1 }, { n: 1 }]);
    },
  );

  it(
    'a string with a lone surrogate (an emoji cut by slice()) is stored as the pg driver binds it: U+FFFD',
    async () => {
      const cut = 'hi 🎉'.slice(0, 4); // 'hi \ud83c'
      const pg = await onPostgres({
        count: 1,
        tables: (t) => [`CREATE TABLE ${t('c')} (id text PRIMARY KEY, note text)`],
        apply: (_, upsert) => upsert('c', { id: 'a', note: cut }, { key: ['id'] }),
      });
      // One at a time, a text parameter: the driver encodes the lone surrogate as U+FFFD.
      assert.deepEqual((await pg.schema.pool.query<{ note: string }>('SELECT $1::text AS note', [cut])).rows, [{ note: 'hi \uFFFD' }]);
      assert.deepEqual(
        (await pg.letters()).map((letter) => letter.attempts.at(-1)?.error),
        [],
      );
      assert.deepEqual(await pg.query((t) => `SELECT note FROM ${t('c')}`), [{ note: 'hi \uFFFD' }]);
    },
  );

  it(
    'the shape cache does not skip validation: key ["a,b"] is refused after key ["a", "b"] was cached',
    () => {
      const view = 'redteam-cache';
      const refused = (error: unknown): boolean => isEskitError(error, ErrorCode.InvalidArgument) && /key column "a,b" is missing/.test((error as Error).message);
      // Not cached yet: refused.
      assert.throws(() => rowShape(view, 'fresh', { a: 1, b: 2 }, { key: ['a,b'] }), refused);
      // Cached by a correct call first: the same mistake now passes, as the composite key (a, b).
      rowShape(view, 't', { a: 1, b: 2 }, { key: ['a', 'b'] });
      assert.throws(() => rowShape(view, 't', { a: 1, b: 2 }, { key: ['a,b'] }), refused);
    },
  );
});

describe('upsert red team: found and fixed in a second review', () => {
  it('array columns take the latest value (one row, several rows of one key, keys equal only to PostgreSQL), NULL and empty arrays included', async () => {
    const pg = await onPostgres({
      count: 1,
      tables: (t) => [`CREATE TABLE ${t('tags')} (id text PRIMARY KEY, tags text[], n integer NOT NULL)`],
      apply: (_, upsert) => {
        upsert('tags', { id: 'one', tags: ['x', 'y'], n: 1 }, { key: ['id'], increment: ['n'] });
        upsert('tags', { id: 'many', tags: ['a'], n: 1 }, { key: ['id'], increment: ['n'] });
        upsert('tags', { id: 'many', tags: ['b', 'c'], n: 1 }, { key: ['id'], increment: ['n'] });
        upsert('tags', { id: 'none', tags: ['gone'], n: 1 }, { key: ['id'], increment: ['n'] });
        upsert('tags', { id: 'none', tags: null, n: 1 }, { key: ['id'], increment: ['n'] });
        upsert('tags', { id: 'empty', tags: [], n: 1 }, { key: ['id'], increment: ['n'] });
        // 1 and '1' are one text key to PostgreSQL, two to JS: merged by the statement itself.
        upsert('tags', { id: 1, tags: ['first'], n: 1 }, { key: ['id'], increment: ['n'] });
        upsert('tags', { id: '1', tags: ['second'], n: 1 }, { key: ['id'], increment: ['n'] });
      },
    });
    assert.deepEqual(
      (await pg.letters()).map((letter) => letter.attempts.at(-1)?.error),
      [],
    );
    assert.deepEqual(await pg.query((t) => `SELECT id, tags, n FROM ${t('tags')} ORDER BY id`), [
      { id: '1', tags: ['second'], n: 2 },
      { id: 'empty', tags: [], n: 1 },
      { id: 'many', tags: ['b', 'c'], n: 2 },
      { id: 'none', tags: null, n: 2 },
      { id: 'one', tags: ['x', 'y'], n: 1 },
    ]);
  });

  it('a table may have columns named like the statement\'s own helpers (ordinality, eskit_at, eskit_row)', async () => {
    const pg = await onPostgres({
      count: 1,
      tables: (t) => [`CREATE TABLE ${t('odd')} (id text UNIQUE, ordinality integer, eskit_at integer, eskit_row text)`],
      apply: (_, upsert) => {
        upsert('odd', { id: 'a', ordinality: 1, eskit_at: 1, eskit_row: 'first' }, { key: ['id'] });
        upsert('odd', { id: 'a', ordinality: 2, eskit_at: 2, eskit_row: 'second' }, { key: ['id'] });
        upsert('odd', { id: null, ordinality: 3, eskit_at: 3, eskit_row: 'null key' }, { key: ['id'] });
      },
    });
    assert.deepEqual(
      (await pg.letters()).map((letter) => letter.attempts.at(-1)?.error),
      [],
    );
    assert.deepEqual(await pg.query((t) => `SELECT id, ordinality, eskit_at, eskit_row FROM ${t('odd')} ORDER BY ordinality`), [
      { id: 'a', ordinality: 2, eskit_at: 2, eskit_row: 'second' },
      { id: null, ordinality: 3, eskit_at: 3, eskit_row: 'null key' },
    ]);
  });

  it('a flush evolve did not await still runs inside the batch: its failure rolls the whole batch back, and tx.client waits for it', async () => {
    let clientRefused = false;
    const pg = await onPostgres({
      count: 1,
      tables: (t) => [`CREATE TABLE ${t('a')} (id text PRIMARY KEY)`, `CREATE TABLE ${t('b')} (id text PRIMARY KEY, n integer NOT NULL)`],
      evolve: (_, tx) => {
        tx.upsert('a', { id: 'written first' }, { key: ['id'] });
        // NOT NULL breaks: the second statement of the flush fails.
        tx.upsert('b', { id: 'x', n: null }, { key: ['id'] });
        void tx.flush();
        try {
          void tx.client.query('SELECT 1');
        } catch {
          clientRefused = true;
        }
      },
    });
    assert.equal(clientRefused, true);
    const letters = await pg.letters();
    assert.equal(letters.length, 1);
    assert.match(letters[0]?.attempts.at(-1)?.error ?? '', /null value in column "n"/);
    assert.deepEqual(await pg.query((t) => `SELECT id FROM ${t('a')}`), []);
  });

  it('a flush evolve did not await, then evolve throws: nothing of the event is written (the rollback waits for the flush)', async () => {
    const pg = await onPostgres({
      count: 1,
      tables: (t) => [`CREATE TABLE ${t('a')} (id text PRIMARY KEY)`, `CREATE TABLE ${t('b')} (id text PRIMARY KEY, n integer NOT NULL)`],
      evolve: (_, tx) => {
        tx.upsert('a', { id: 'x' }, { key: ['id'] });
        tx.upsert('b', { id: 'x', n: 1 }, { key: ['id'], increment: ['n'] });
        void tx.flush();
        throw new Error('evolve fails after starting a flush');
      },
    });
    assert.equal((await pg.letters()).length, 1);
    assert.deepEqual(await pg.query((t) => `SELECT id FROM ${t('a')} UNION ALL SELECT id FROM ${t('b')}`), []);
  });

  it('SQLite: a bigint beyond 64 bits is an InvalidArgumentError naming the column (not the driver\'s RangeError)', async () => {
    const lite = await onSqlite({
      count: 1,
      tables: (t) => [`CREATE TABLE ${t('big')} (id TEXT PRIMARY KEY, n INTEGER)`],
      apply: (_, upsert) => upsert('big', { id: 'a', n: 2n ** 64n }, { key: ['id'] }),
    });
    const errors = (await lite.letters()).map((letter) => letter.attempts.at(-1)?.error ?? '');
    assert.equal(errors.length, 1);
    assert.match(errors[0] ?? '', /View "redteam", table "big", column "n": 18446744073709551616 is beyond SQLite's 64-bit integers/);
  });

  it('a Date changed after its upsert is written as it was at the call, on both backends', async () => {
    const when = new Date(Date.UTC(2026, 10, 28, 12, 0, 0));
    const apply: Apply = (_, upsert) => {
      const at = new Date(when.getTime());
      upsert('d', { id: 'a', at }, { key: ['id'] });
      at.setTime(0);
      const merged = new Date(when.getTime());
      upsert('d', { id: 'b', at: new Date(0) }, { key: ['id'] });
      upsert('d', { id: 'b', at: merged }, { key: ['id'] });
      merged.setTime(0);
    };
    const pg = await onPostgres({ count: 1, apply, tables: (t) => [`CREATE TABLE ${t('d')} (id text PRIMARY KEY, at timestamptz NOT NULL)`] });
    assert.deepEqual(await pg.query((t) => `SELECT id, at FROM ${t('d')} ORDER BY id`), [
      { id: 'a', at: when },
      { id: 'b', at: when },
    ]);
    const lite = await onSqlite({ count: 1, apply, tables: (t) => [`CREATE TABLE ${t('d')} (id TEXT PRIMARY KEY, at TEXT NOT NULL)`] });
    assert.deepEqual(lite.all('SELECT id, at FROM d ORDER BY id'), [
      { id: 'a', at: when.toISOString() },
      { id: 'b', at: when.toISOString() },
    ]);
  });
});
