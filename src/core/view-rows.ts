// The row helpers of SQL views (`tx.upsert`): checked row shapes, queued rows and the SQL every adapter
// shares, so that `upsert` behaves the same on each of them.
import { InvalidArgumentError } from './errors.js';

/** A JSON document: for json/jsonb columns (SQLite stores its text). */
export type JsonDocument = { readonly [key: string]: unknown } | readonly unknown[];

/**
 * A column value `upsert` writes. A `Date` is written as ISO 8601 text, booleans as 1/0 in SQLite,
 * objects and arrays as JSON (pass the object for a json/jsonb column, not its JSON.stringify text).
 */
export type RowValue = string | number | bigint | boolean | Date | null | JsonDocument;

/** One row of a view table, by column name. */
export type Row = Readonly<Record<string, RowValue>>;

export interface UpsertOptions {
  /** The columns of the table's primary key (or of a unique index): the row is found by these. */
  key: readonly string[];
  /**
   * Columns added to the stored value instead of replacing it (counters, sums): the row is inserted
   * with the given values, or each of these columns becomes stored + given. Numbers or bigints.
   * Every other column not in `key` is set to the given value.
   */
  increment?: readonly string[];
}

/**
 * Writes one row of a view table: inserts it, or updates the row with the same key. The same call on
 * SQLite and PostgreSQL. On PostgreSQL the rows are queued and written together, one statement per
 * table and row shape, when `evolve` returns (or at `tx.flush()`): a view with one upsert per event
 * then costs one round trip per batch instead of one per event.
 *
 * ```ts
 * evolve: (event, { upsert }) =>
 *   upsert('carts', { cart: event.streamId, items: 1 }, { key: ['cart'], increment: ['items'] }),
 * ```
 */
export type Upsert = (table: string, row: Row, options: UpsertOptions) => void;

const COLUMN = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

/** One validated upsert's shape: which columns, found by which key, which are added up. */
export interface RowShape {
  readonly columns: readonly string[];
  readonly key: readonly string[];
  readonly increment: ReadonlySet<string>;
  /** Equal for upserts that one statement can write together (same table, columns, key, increments). */
  readonly signature: string;
}

/** Shapes already checked, by table, columns (in the row's order), key and increments. */
const shapes = new Map<string, RowShape>();
const MAX_SHAPES = 1000;

/**
 * The shape found last: an evolve upserts the same shape event after event, and comparing a few names
 * costs less than building the id of the cache above (a string per event).
 */
let lastShape: { view: string; table: string; increments: readonly string[]; shape: RowShape } | undefined;

function sameNames(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Checks an upsert's arguments; every mistake is an InvalidArgumentError saying which and how. The
 * names are checked once per shape (the hot path of a view: the same literal per event), the values
 * every time.
 */
export function rowShape(view: string, table: string, row: Row, options: UpsertOptions): RowShape {
  if (typeof row !== 'object' || row === null || Array.isArray(row)) {
    throw new InvalidArgumentError(`View "${view}": upsert into "${table}" needs a row object (column name → value).`);
  }
  const key = options?.key;
  const columns = Object.keys(row);
  const increment = options?.increment;
  // NUL cannot be in a name of a cached (checked) shape, and the counts must match: so a name with a
  // NUL in it, or with the separator of another encoding, can never pass for a cached shape.
  const keys = Array.isArray(key) ? key : [];
  const increments = Array.isArray(increment) ? increment : [];
  let shape: RowShape | undefined;
  const last = lastShape;
  if (
    last !== undefined &&
    last.view === view &&
    last.table === table &&
    sameNames(last.shape.columns, columns) &&
    sameNames(last.shape.key, keys) &&
    sameNames(last.increments, increments)
  ) {
    shape = last.shape;
  } else {
    const id = `${view}\0${table}\0${columns.join('\0')}\0\0${keys.join('\0')}\0\0${increments.join('\0')}`;
    shape = shapes.get(id);
    if (shape !== undefined && (shape.key.length !== keys.length || shape.increment.size !== increments.length || shape.columns.length !== columns.length)) {
      shape = undefined;
    }
    if (shape === undefined) {
      shape = newShape(view, table, row, options, id);
      if (shapes.size >= MAX_SHAPES) shapes.clear();
      shapes.set(id, shape);
    }
    lastShape = { view, table, increments: [...increments], shape };
  }
  for (const column of shape.columns) {
    const value = row[column];
    if (shape.increment.has(column)) {
      if (typeof value !== 'number' && typeof value !== 'bigint') {
        throw new InvalidArgumentError(`View "${view}": upsert into "${table}": increment column "${column}" needs a number or a bigint, got ${describe(value)}.`);
      }
    }
    if (checkValue(view, table, column, value) && shape.key.includes(column)) {
      throw new InvalidArgumentError(`View "${view}": upsert into "${table}": key column "${column}" needs a plain value, got ${describe(value)}.`);
    }
  }
  return shape;
}

function newShape(view: string, table: string, row: Row, options: UpsertOptions, signature: string): RowShape {
  const where = `View "${view}": upsert into "${table}"`;
  const columns = Object.keys(row);
  for (const column of columns) {
    if (!COLUMN.test(column)) {
      throw new InvalidArgumentError(`${where}: column ${JSON.stringify(column)} is not a plain SQL identifier (letters, digits, _; not starting with a digit).`);
    }
  }
  const key = options?.key;
  if (!Array.isArray(key) || key.length === 0) {
    throw new InvalidArgumentError(`${where} needs options.key: the columns of the table's primary key or of a unique index, e.g. { key: ['id'] }.`);
  }
  for (const column of key) {
    if (!Object.hasOwn(row, column)) throw new InvalidArgumentError(`${where}: key column "${String(column)}" is missing from the row.`);
  }
  const increment = new Set(options.increment ?? []);
  for (const column of increment) {
    if (!Object.hasOwn(row, column)) throw new InvalidArgumentError(`${where}: increment column "${String(column)}" is missing from the row.`);
    if (key.includes(column)) throw new InvalidArgumentError(`${where}: "${column}" cannot be both a key and an increment column.`);
  }
  return { columns, key: [...key], increment, signature };
}

/** Throws for a value upsert cannot write; true for a JSON document. */
function checkValue(view: string, table: string, column: string, value: unknown): boolean {
  if (value === null || typeof value === 'string' || typeof value === 'boolean' || typeof value === 'bigint') return false;
  const where = `View "${view}": upsert into "${table}"`;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new InvalidArgumentError(`${where}: column "${column}" is ${value}; only finite numbers can be stored.`);
    return false;
  }
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) throw new InvalidArgumentError(`${where}: column "${column}" is an invalid Date.`);
    return false;
  }
  if (Array.isArray(value) || (typeof value === 'object' && (Object.getPrototypeOf(value) === Object.prototype || Object.getPrototypeOf(value) === null))) {
    try {
      JSON.stringify(value);
    } catch (error) {
      throw new InvalidArgumentError(`${where}: column "${column}" cannot be written as JSON (${error instanceof Error ? error.message : String(error)}).`);
    }
    return true;
  }
  throw new InvalidArgumentError(
    `${where}: column "${column}" is ${describe(value)}; upsert takes strings, numbers, bigints, booleans, Dates, null, ` +
      'and plain objects or arrays (written as JSON). Use the connection for other types.',
  );
}

function describe(value: unknown): string {
  if (value === undefined) return 'undefined';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? `a ${value.constructor?.name ?? 'object'}` : `a ${typeof value}`;
}

export const quoteColumn = (column: string): string => `"${column}"`;

/**
 * `ON CONFLICT (...) DO ...` for a shape: `table` is how the statement names the target table (the
 * stored value of an increment column is `table.column`).
 */
export function onConflict(shape: RowShape, table: string): string {
  const updates = shape.columns
    .filter((column) => !shape.key.includes(column))
    .map((column) =>
      shape.increment.has(column) ? `${quoteColumn(column)} = ${table}.${quoteColumn(column)} + excluded.${quoteColumn(column)}` : `${quoteColumn(column)} = excluded.${quoteColumn(column)}`,
    );
  const target = `ON CONFLICT (${shape.key.map(quoteColumn).join(', ')})`;
  return updates.length === 0 ? `${target} DO NOTHING` : `${target} DO UPDATE SET ${updates.join(', ')}`;
}

/**
 * Upserts waiting to be written. Per table, consecutive upserts of one shape form a run, which one
 * statement writes; a table's runs keep their order; tables are written in the order they were first
 * touched. The statement groups a run's rows by key itself (keys equal when the database says so, sums
 * exact in the column's type); rows are merged here first only where that is certainly the same, to
 * send less: the same key values of the same JS types, no NULL in the key, and increments whose sum is
 * exact in JS (safe integers, or bigints). A merged row moves to the end, where its latest values came.
 */
export class PendingRows {
  #tables = new Map<string, Run[]>();

  /** True while rows wait. */
  get pending(): boolean {
    return this.#tables.size > 0;
  }

  add(table: string, shape: RowShape, row: Row): void {
    let runs = this.#tables.get(table);
    if (runs === undefined) {
      runs = [];
      this.#tables.set(table, runs);
    }
    let run = runs[runs.length - 1];
    if (run?.shape.signature !== shape.signature) {
      run = { shape, rows: [], latest: new Map() };
      runs.push(run);
    }
    const id = mergeKey(shape.key, row);
    const at = id === undefined ? undefined : run.latest.get(id);
    const existing = at === undefined ? undefined : run.rows[at];
    if (id !== undefined && at !== undefined && existing !== undefined && mergeable(shape, existing, row)) {
      for (const column of shape.columns) {
        const value = row[column] as RowValue;
        existing[column] = shape.increment.has(column) ? sum(existing[column] as number | bigint, value as number | bigint) : snapshot(value);
      }
      run.rows[at] = undefined;
      run.latest.set(id, run.rows.push(existing) - 1);
      return;
    }
    const copy: Record<string, RowValue> = { ...row };
    for (const column in copy) copy[column] = snapshot(copy[column] as RowValue);
    const index = run.rows.push(copy) - 1;
    if (id !== undefined) run.latest.set(id, index);
  }

  /** Takes the runs out, in the order to write them; nothing waits afterwards. */
  take(): { shape: RowShape; table: string; rows: Row[] }[] {
    const out: { shape: RowShape; table: string; rows: Row[] }[] = [];
    for (const [table, runs] of this.#tables) {
      for (const run of runs) out.push({ shape: run.shape, table, rows: run.rows.filter((row): row is Record<string, RowValue> => row !== undefined) });
    }
    this.#tables.clear();
    return out;
  }
}

/** A value as it is now: the caller may change its Dates and objects before the rows are written. */
function snapshot(value: RowValue): RowValue {
  if (typeof value !== 'object' || value === null) return value;
  if (value instanceof Date) return new Date(value.getTime());
  return JSON.parse(JSON.stringify(value)) as JsonDocument;
}

interface Run {
  shape: RowShape;
  /** In order; undefined where a row was merged into a later one. */
  rows: (Record<string, RowValue> | undefined)[];
  /** Merge key → index of the latest row with it. */
  latest: Map<string, number>;
}

/** Equal only for key values that are certainly equal (same JS type and value); undefined for a NULL key. */
function mergeKey(key: readonly string[], row: Row): string | undefined {
  if (key.length === 1) {
    const value = row[key[0] as string];
    if (typeof value === 'string') return `s${value}`;
    if (typeof value === 'number') return `n${value}`;
  }
  const parts: unknown[] = [];
  for (const column of key) {
    const value = row[column];
    if (value === null || value === undefined) return undefined;
    parts.push(typeof value === 'bigint' ? ['bigint', value.toString()] : value instanceof Date ? ['date', value.toISOString()] : value);
  }
  return JSON.stringify(parts);
}

function mergeable(shape: RowShape, a: Row, b: Row): boolean {
  for (const column of shape.increment) {
    const x = a[column];
    const y = b[column];
    if (typeof x === 'bigint' && typeof y === 'bigint') continue;
    if (typeof x === 'number' && typeof y === 'number' && Number.isSafeInteger(x) && Number.isSafeInteger(y) && Number.isSafeInteger(x + y)) continue;
    return false;
  }
  return true;
}

function sum(a: number | bigint, b: number | bigint): number | bigint {
  return typeof a === 'bigint' ? a + (b as bigint) : a + (b as number);
}

/** A value as JSON carries it to PostgreSQL, which reads bigints and timestamps back from their text. */
export function jsonValue(value: RowValue): unknown {
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Date) return value.toISOString();
  // A lone surrogate is invalid JSON to PostgreSQL; the pg driver binds it as U+FFFD, so does this.
  if (typeof value === 'string') return value.toWellFormed();
  return value;
}
