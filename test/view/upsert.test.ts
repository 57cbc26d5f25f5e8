// tx.upsert: one call per event on both backends; on PostgreSQL the rows of a batch are folded and
// written by one statement per run of one shape. The state must equal applying every upsert in order.
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import type { Recorded } from '../../src/core/event.js';
import { silentLogger } from '../../src/core/logger.js';
import { MemoryDeadLetterStore } from '../../src/memory/index.js';
import { PendingRows, rowShape } from '../../src/core/view-rows.js';
import { postgres as postgresBackend } from '../../src/postgres/index.js';
import { sqlite } from '../../src/sqlite/index.js';
import { SqlView } from '../../src/view/index.js';
import type { Upsert } from '../../src/view/index.js';
import { createTestSchema } from '../support/postgres.js';
import { removeDatabase, tempDatabasePath } from '../sqlite/helpers.js';

type CartEvent =
  | { type: 'ItemAdded'; data: { cart: string; qty: number } }
  | { type: 'Noted'; data: { cart: string; note: string } };

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const CARTS = ['a', 'b', 'c', 'd', 'e', 'f', 'g'];
/** Over 20 characters: the table's CHECK refuses it, so the whole statement (and batch) fails. */
const TOO_LONG = 'a note far too long for the column';

/** Many events per cart per batch (to fold), notes in between (another shape: another run). */
function events(count: number, badAt?: number): CartEvent[] {
  const out: CartEvent[] = [];
  for (let i = 0; i < count; i++) {
    const cart = CARTS[(i * 5) % CARTS.length] as string;
    if (i === badAt) out.push({ type: 'Noted', data: { cart, note: TOO_LONG } });
    else if (i % 9 === 4) out.push({ type: 'Noted', data: { cart, note: `${i % 2 === 0 ? '!' : ''}note ${i}` } });
    else out.push({ type: 'ItemAdded', data: { cart, qty: (i % 4) + 1 } });
  }
  return out;
}

const notedAt = (position: number): Date => new Date(Date.UTC(2026, 0, 1) + position * 1000);

/** The same evolve for both backends. */
function applyRow(event: Recorded<CartEvent>, upsert: Upsert): void {
  if (event.type === 'ItemAdded') {
    upsert('carts', { cart: event.data.cart, items: event.data.qty, lines: 1, last_position: BigInt(event.position) }, { key: ['cart'], increment: ['items', 'lines'] });
    // Another table between every two rows of carts: still one run per table and shape.
    upsert('totals', { id: 'all', items: event.data.qty }, { key: ['id'], increment: ['items'] });
  } else {
    const { cart, note } = event.data;
    upsert('carts', { cart, note, flagged: note.startsWith('!'), noted_at: notedAt(event.position) }, { key: ['cart'] });
  }
}

interface CartRow {
  cart: string;
  items: number;
  lines: number;
  note: string | null;
  lastPosition: number | null;
  flagged: boolean | null;
  notedAt: string | null;
}

/** What applying every event one at a time gives, skipping the positions in `skipped`. */
function expected(recorded: readonly Recorded<CartEvent>[], skipped: readonly number[] = []): CartRow[] {
  const rows = new Map<string, CartRow>();
  for (const event of recorded) {
    if (skipped.includes(event.position)) continue;
    const row = rows.get(event.data.cart) ?? { cart: event.data.cart, items: 0, lines: 0, note: null, lastPosition: null, flagged: null, notedAt: null };
    if (event.type === 'ItemAdded') {
      row.items += event.data.qty;
      row.lines += 1;
      row.lastPosition = event.position;
    } else {
      row.note = event.data.note;
      row.flagged = event.data.note.startsWith('!');
      row.notedAt = notedAt(event.position).toISOString();
    }
    rows.set(row.cart, row);
  }
  return [...rows.values()].sort((x, y) => x.cart.localeCompare(y.cart));
}

function expectedItems(recorded: readonly Recorded<CartEvent>[]): number {
  return recorded.reduce((sum, event) => sum + (event.type === 'ItemAdded' ? event.data.qty : 0), 0);
}

async function readAllEvents(store: { readAll(options?: object): AsyncIterable<Recorded<CartEvent>> }): Promise<Recorded<CartEvent>[]> {
  const out: Recorded<CartEvent>[] = [];
  for await (const event of store.readAll()) out.push(event);
  return out;
}

async function appendAll(store: { append(stream: string, events: CartEvent[]): Promise<{ position: number }> }, all: CartEvent[]): Promise<number> {
  let head = 0;
  for (let i = 0; i < all.length; i += 25) head = (await store.append(`s-${i}`, all.slice(i, i + 25))).position;
  return head;
}

async function postgres() {
  const schema = await createTestSchema({ create: false, poolSize: 6 });
  cleanups.push(() => schema.drop());
  const backend = postgresBackend<CartEvent>({ pool: schema.pool, schema: schema.name, leaderElection: false });
  cleanups.push(() => backend.close());
  await backend.migrate();
  const { store } = backend;
  const read = async (): Promise<CartRow[]> => {
    const result = await schema.pool.query<{ cart: string; items: string; lines: number; note: string | null; last_position: string | null; flagged: boolean | null; noted_at: Date | null }>(
      `SELECT cart, items::text, lines, note, last_position::text, flagged, noted_at FROM "${schema.name}".carts ORDER BY cart COLLATE "C"`,
    );
    return result.rows.map((row) => ({
      cart: row.cart,
      items: Number(row.items),
      lines: row.lines,
      note: row.note,
      lastPosition: row.last_position === null ? null : Number(row.last_position),
      flagged: row.flagged,
      notedAt: row.noted_at?.toISOString() ?? null,
    }));
  };
  return { schema, backend, store, read };
}

const pgSetup = {
  version: 1,
  statements: (t: (name: string) => string) => [
    `CREATE TABLE ${t('carts')} (cart text PRIMARY KEY, items bigint NOT NULL DEFAULT 0, lines integer NOT NULL DEFAULT 0,
       note text CHECK (length(note) <= 20), last_position bigint, flagged boolean, noted_at timestamptz)`,
    `CREATE TABLE ${t('totals')} (id text PRIMARY KEY, items bigint NOT NULL)`,
  ],
};

describe('upsert on PostgreSQL', () => {
  it('folds a batch into one statement per run and ends equal to applying each upsert in order', async () => {
    const { schema, backend, store, read } = await postgres();
    const deadLetters = new MemoryDeadLetterStore();
    const head = await appendAll(store, events(600, 333));
    const view = new SqlView({
      name: 'carts',
      backend,
      setup: pgSetup,
      batchSize: 64,
      deadLetters,
      logger: silentLogger,
      retry: { maxAttempts: 2, initialDelayMs: 1, maxDelayMs: 5 },
      evolve: (event, { upsert }) => applyRow(event, upsert),
    });
    cleanups.push(() => view.stop());
    await view.start();
    await view.waitFor(head, { timeoutMs: 20_000 });
    const recorded = await readAllEvents(store);
    const bad = recorded.find((event) => event.type === 'Noted' && event.data.note === TOO_LONG)?.position as number;
    // The failing statement took its whole batch back; one event at a time pinned it on the bad one.
    assert.deepEqual((await deadLetters.list({ source: 'carts' })).map((letter) => letter.eventPosition), [bad]);
    assert.deepEqual(await read(), expected(recorded, [bad]));
    const totals = await schema.pool.query<{ items: string }>(`SELECT items::text FROM "${schema.name}".totals WHERE id = 'all'`);
    assert.equal(Number(totals.rows[0]?.items), expectedItems(recorded));
  });

  it('rebuilds an upsert view into the same rows', async () => {
    const { backend, store, read } = await postgres();
    const head = await appendAll(store, events(300));
    const view = new SqlView({ name: 'carts', backend, setup: pgSetup, logger: silentLogger, evolve: (event, { upsert }) => applyRow(event, upsert) });
    cleanups.push(() => view.stop());
    await view.start();
    await view.waitFor(head);
    const live = await read();
    const result = await view.rebuild({ batchSize: 37 });
    assert.equal(result.events, 300);
    assert.deepEqual(await read(), live);
    assert.deepEqual(live, expected(await readAllEvents(store)));
  });

  it('writes a JSON document as it was at the upsert, even if the caller changes it before the batch ends', async () => {
    const { schema, backend, store } = await postgres();
    const head = (await store.append('s', [{ type: 'ItemAdded', data: { cart: 'a', qty: 1 } }, { type: 'ItemAdded', data: { cart: 'b', qty: 2 } }])).position;
    const doc: { qty: number; tags: string[] } = { qty: 0, tags: [] };
    const view = new SqlView({
      name: 'docs',
      backend,
      setup: { version: 1, statements: (t) => [`CREATE TABLE ${t('docs')} (cart text PRIMARY KEY, body jsonb NOT NULL)`] },
      logger: silentLogger,
      evolve: (event, { upsert }) => {
        if (event.type !== 'ItemAdded') return;
        doc.qty = event.data.qty;
        doc.tags.push(event.data.cart);
        upsert('docs', { cart: event.data.cart, body: doc }, { key: ['cart'] });
      },
    });
    cleanups.push(() => view.stop());
    await view.start();
    await view.waitFor(head);
    const rows = await schema.pool.query<{ cart: string; body: unknown }>(`SELECT cart, body FROM "${schema.name}".docs ORDER BY cart`);
    assert.deepEqual(rows.rows, [
      { cart: 'a', body: { qty: 1, tags: ['a'] } },
      { cart: 'b', body: { qty: 2, tags: ['a', 'b'] } },
    ]);
  });

  it('refuses a query through tx.client while upserts wait, and reads them after flush()', async () => {
    const { backend, store } = await postgres();
    const head = (await store.append('s', [{ type: 'ItemAdded', data: { cart: 'a', qty: 3 } }])).position;
    const seen: unknown[] = [];
    const view = new SqlView({
      name: 'carts',
      backend,
      setup: pgSetup,
      logger: silentLogger,
      evolve: async (event, { upsert, client, flush, table }) => {
        applyRow(event, upsert);
        try {
          await client.query('SELECT 1');
          seen.push('no error');
        } catch (error) {
          seen.push(isEskitError(error, ErrorCode.InvalidArgument) ? (error as Error).message : error);
        }
        await flush();
        const result = await client.query<{ items: string }>(`SELECT items::text FROM ${table('carts')} WHERE cart = 'a'`);
        seen.push(result.rows[0]?.items);
      },
    });
    cleanups.push(() => view.stop());
    await view.start();
    await view.waitFor(head);
    assert.equal(seen.length, 2);
    assert.match(String(seen[0]), /not written yet.*await tx\.flush\(\)/s);
    assert.equal(seen[1], '3');
  });
});

describe('upsert on SQLite', () => {
  it('gives the same rows from the same evolve', async () => {
    const path = tempDatabasePath('upsert');
    const backend = sqlite<CartEvent>({ path });
    cleanups.push(() => removeDatabase(path));
    cleanups.push(() => backend.close());
    const { store } = backend;
    const deadLetters = new MemoryDeadLetterStore();
    const head = await appendAll(store, events(600, 333));
    const view = new SqlView({
      name: 'carts',
      backend,
      batchSize: 64,
      deadLetters,
      logger: silentLogger,
      retry: { maxAttempts: 2, initialDelayMs: 1, maxDelayMs: 5 },
      setup: {
        version: 1,
        statements: (t) => [
          `CREATE TABLE ${t('carts')} (cart TEXT PRIMARY KEY, items INTEGER NOT NULL DEFAULT 0, lines INTEGER NOT NULL DEFAULT 0,
             note TEXT CHECK (length(note) <= 20), last_position INTEGER, flagged INTEGER, noted_at TEXT)`,
          `CREATE TABLE ${t('totals')} (id TEXT PRIMARY KEY, items INTEGER NOT NULL)`,
        ],
      },
      evolve: (event, { upsert }) => applyRow(event, upsert),
    });
    cleanups.push(() => view.stop());
    await view.start();
    await view.waitFor(head);
    const recorded = await readAllEvents(store);
    const bad = recorded.find((event) => event.type === 'Noted' && event.data.note === TOO_LONG)?.position as number;
    assert.deepEqual((await deadLetters.list({ source: 'carts' })).map((letter) => letter.eventPosition), [bad]);
    const rows = (
      store.database.prepare('SELECT cart, items, lines, note, last_position, flagged, noted_at FROM carts ORDER BY cart').all() as {
        cart: string;
        items: number;
        lines: number;
        note: string | null;
        last_position: number | null;
        flagged: number | null;
        noted_at: string | null;
      }[]
    ).map((row) => ({
      cart: row.cart,
      items: Number(row.items),
      lines: Number(row.lines),
      note: row.note,
      lastPosition: row.last_position === null ? null : Number(row.last_position),
      flagged: row.flagged === null ? null : row.flagged === 1,
      notedAt: row.noted_at,
    }));
    assert.deepEqual(rows, expected(recorded, [bad]));
    assert.equal(store.database.prepare(`SELECT items FROM totals WHERE id = 'all'`).pluck().get(), expectedItems(recorded));
  });
});

describe('upsert arguments', () => {
  const shape = (row: object, options: object) => () => rowShape('v', 't', row as never, options as never);
  it('refuses bad rows and options with ESKIT_INVALID_ARGUMENT saying what is wrong', () => {
    const cases: Array<[() => unknown, RegExp]> = [
      [shape({ id: 1 }, {}), /needs options\.key/],
      [shape({ id: 1 }, { key: [] }), /needs options\.key/],
      [shape({ n: 1 }, { key: ['id'] }), /key column "id" is missing/],
      [shape({ id: 1 }, { key: ['id'], increment: ['n'] }), /increment column "n" is missing/],
      [shape({ id: 1, n: '2' }, { key: ['id'], increment: ['n'] }), /increment column "n" needs a number or a bigint, got a string/],
      [shape({ id: 1 }, { key: ['id'], increment: ['id'] }), /both a key and an increment/],
      [shape({ id: 1, 'x; DROP': 1 }, { key: ['id'] }), /not a plain SQL identifier/],
      [shape({ id: 1, v: undefined }, { key: ['id'] }), /column "v" is undefined/],
      [shape({ id: 1, v: new Map() }, { key: ['id'] }), /column "v" is a Map; upsert takes strings.*plain objects or arrays \(written as JSON\)/],
      [shape({ id: { a: 1 } }, { key: ['id'] }), /key column "id" needs a plain value, got a Object/],
      [shape({ id: 1, v: Number.NaN }, { key: ['id'] }), /column "v" is NaN/],
      [shape({ id: 1, v: new Date(Number.NaN) }, { key: ['id'] }), /invalid Date/],
      [shape(null as never, { key: ['id'] }), /needs a row object/],
      [shape({ id: 1, v: { n: 1n } }, { key: ['id'] }), /column "v" cannot be written as JSON \(Do not know how to serialize a BigInt\)/],
    ];
    for (const [call, message] of cases) {
      assert.throws(call, (error: unknown) => isEskitError(error, ErrorCode.InvalidArgument) && message.test((error as Error).message), String(message));
    }
  });

  it('queues runs per table and shape in order; merges only rows certainly equal, moving them to where their latest values came', () => {
    const pending = new PendingRows();
    const counter = rowShape('v', 't', { id: 'x', n: 1, label: 'a' }, { key: ['id'], increment: ['n'] });
    const label = rowShape('v', 't', { id: 'x', label: 'a' }, { key: ['id'] });
    pending.add('t', counter, { id: 'x', n: 1, label: 'first' });
    pending.add('t', counter, { id: 'y', n: 10n, label: 'y' });
    pending.add('u', label, { id: 'x', label: 'in u' });
    pending.add('t', counter, { id: 'x', n: 2, label: 'second' });
    // A bigint and a number: not summed here (the database adds them), so not merged.
    pending.add('t', counter, { id: 'y', n: 5, label: 'y2' });
    // Not the same JS value as 'x' (a number key): the statement groups them if the column says equal.
    pending.add('t', counter, { id: 1, n: 1, label: 'number' });
    pending.add('t', counter, { id: 'x', n: 0.5, label: 'fraction' });
    pending.add('t', label, { id: 'x', label: 'third' });
    pending.add('t', counter, { id: 'x', n: 4, label: 'fourth' });
    pending.add('u', label, { id: 'x', label: 'in u, later' });
    assert.equal(pending.pending, true);
    const runs = pending.take();
    assert.deepEqual(
      runs.map((run) => [run.table, run.rows.map((row) => [row.id, row.n, row.label])]),
      [
        [
          't',
          [
            ['y', 10n, 'y'],
            ['x', 3, 'second'],
            ['y', 5, 'y2'],
            [1, 1, 'number'],
            ['x', 0.5, 'fraction'],
          ],
        ],
        ['t', [['x', undefined, 'third']]],
        ['t', [['x', 4, 'fourth']]],
        ['u', [['x', undefined, 'in u, later']]],
      ],
    );
    assert.equal(pending.pending, false);
  });
});
