import { InvalidArgumentError } from '../core/errors.js';

/** A column value `upsert` writes. A `Date` is written as ISO 8601 text; booleans as 1/0 in SQLite. */
export type RowValue = string | number | bigint | boolean | Date | null;

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
  const id = `${view}\0${table}\0${columns.join(',')}\0${Array.isArray(key) ? key.join(',') : ''}\0${options?.increment?.join(',') ?? ''}`;
  let shape = shapes.get(id);
  if (shape === undefined) {
    shape = newShape(view, table, row, options, id);
    if (shapes.size >= MAX_SHAPES) shapes.clear();
    shapes.set(id, shape);
  }
  for (const column of shape.columns) {
    const value = row[column];
    if (shape.increment.has(column)) {
      if (typeof value !== 'number' && typeof value !== 'bigint') {
        throw new InvalidArgumentError(`View "${view}": upsert into "${table}": increment column "${column}" needs a number or a bigint, got ${describe(value)}.`);
      }
    }
    checkValue(view, table, column, value);
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

function checkValue(view: string, table: string, column: string, value: unknown): void {
  if (value === null || typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') {
    if (typeof value !== 'number' || Number.isFinite(value)) return;
  }
  const where = `View "${view}": upsert into "${table}"`;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new InvalidArgumentError(`${where}: column "${column}" is ${value}; only finite numbers can be stored.`);
    return;
  }
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) throw new InvalidArgumentError(`${where}: column "${column}" is an invalid Date.`);
    return;
  }
  throw new InvalidArgumentError(
    `${where}: column "${column}" is ${describe(value)}; upsert takes strings, numbers, bigints, booleans, Dates and null ` +
      '(write JSON yourself with JSON.stringify, or use the connection for other types).',
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
 * Upserts waiting to be written, folded so that one statement per run touches each row once (which
 * `INSERT ... ON CONFLICT` requires). Per table, consecutive upserts of one shape form a run; within a
 * run, the upserts of one key become one row whose increment columns are summed and whose other
 * columns take the latest value. A table's runs keep their order; tables are written in the order
 * they were first touched (a view whose tables depend on each other through triggers must not rely on
 * the order of writes across tables).
 */
export class PendingRows {
  #tables = new Map<string, { shape: RowShape; rows: Map<string, Record<string, RowValue>> }[]>();

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
      run = { shape, rows: new Map() };
      runs.push(run);
    }
    const id = rowKey(shape.key, row);
    const existing = run.rows.get(id);
    if (existing === undefined) {
      run.rows.set(id, { ...row });
      return;
    }
    for (const column of shape.columns) {
      existing[column] = shape.increment.has(column) ? add(existing[column] as number | bigint, row[column] as number | bigint) : (row[column] as RowValue);
    }
  }

  /** Takes the runs out, in the order to write them; nothing waits afterwards. */
  take(): { shape: RowShape; table: string; rows: Record<string, RowValue>[] }[] {
    const out: { shape: RowShape; table: string; rows: Record<string, RowValue>[] }[] = [];
    for (const [table, runs] of this.#tables) for (const run of runs) out.push({ shape: run.shape, table, rows: [...run.rows.values()] });
    this.#tables.clear();
    return out;
  }
}

function add(a: number | bigint, b: number | bigint): number | bigint {
  if (typeof a === 'bigint' || typeof b === 'bigint') return BigInt(a) + BigInt(b);
  return a + b;
}

function rowKey(key: readonly string[], row: Row): string {
  if (key.length === 1) {
    const value = row[key[0] as string];
    // The type in front: 1 and '1' are two keys here, as they are to JSON.
    if (typeof value === 'string') return `s${value}`;
    if (typeof value === 'number' || typeof value === 'bigint') return `n${value}`;
  }
  return JSON.stringify(key.map((column) => jsonValue(row[column] as RowValue)));
}

/** A value as JSON can carry it: PostgreSQL reads bigints and timestamps back from their text. */
export function jsonValue(value: RowValue): string | number | boolean | null {
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Date) return value.toISOString();
  return value;
}
