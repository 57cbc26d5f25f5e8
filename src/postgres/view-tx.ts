// What a PostgreSQL view's evolve writes with (PostgresViewTx), and how its queued upserts become one
// statement per table and row shape.
import { createHash } from 'node:crypto';
import type pg from 'pg';
import { InvalidArgumentError } from '../core/errors.js';
import type { SqlViewTx } from '../core/view-backend.js';
import { jsonValue, onConflict, PendingRows, quoteColumn, rowShape } from '../core/view-rows.js';
import type { Row, RowShape, RowValue, Upsert } from '../core/view-rows.js';

/** What `evolve` writes with: a connection inside the view's transaction. */
export interface PostgresViewTx extends SqlViewTx {
  /**
   * In a transaction: do not COMMIT or ROLLBACK it yourself. While rows queued by `upsert` wait,
   * `client.query` throws (it would run before them): `await flush()` first.
   */
  readonly client: pg.PoolClient;
  /** The table (or index) `name` as SQL text, schema-qualified: the live table, or its shadow copy during a rebuild. */
  table(name: string): string;
  /**
   * Inserts or updates one row of the view table `name` (the name given to `table()`). Queued: the
   * rows are written when `evolve` (or `evolveBatch`) returns, one statement per table and row shape
   * for the whole batch, so one upsert per event costs no round trip of its own.
   */
  readonly upsert: Upsert;
  /** Writes the queued upserts now (to read them back, or before using `client`). */
  flush(): Promise<void>;
}

/** A transaction's PostgresViewTx, and a way to wait until no flush of it is sending statements. */
export interface ViewTx {
  tx: PostgresViewTx;
  settled(): Promise<void>;
}

/** What evolve gets for one transaction of view `view`: its connection, its tables, and a queue of upserts. */
export function postgresViewTx(client: pg.PoolClient, view: string, table: (name: string) => string): ViewTx {
  const pending = new PendingRows();
  // Flushes run one after another, and the view's own statements (checkpoint, COMMIT) wait for the
  // last one: a flush that evolve did not await must not let them queue between its statements.
  let flushing: Promise<void> = Promise.resolve();
  let writing = false;
  const write = async (): Promise<void> => {
    for (const run of pending.take()) await client.query(upsertQuery(run));
  };
  const flush = (): Promise<void> => {
    const next = flushing.then(write);
    flushing = next;
    writing = true;
    const settle = (): void => {
      if (flushing === next) writing = false;
    };
    // Handled here so that a flush nobody awaited cannot crash the process; the view awaits the
    // last flush (which carries the first failure) before it commits.
    next.then(settle, settle);
    return next;
  };
  const guarded = new Proxy(client, {
    get(target, property, receiver) {
      if (property === 'query' && (pending.pending || writing)) {
        return () => {
          throw new InvalidArgumentError(
            `View "${view}": rows queued by tx.upsert are not written yet, and a query through tx.client would run before them. ` +
              'Call `await tx.flush()` first.',
          );
        };
      }
      return Reflect.get(target, property, receiver) as unknown;
    },
  });
  const noop = (): void => undefined;
  return {
    tx: {
      client: guarded,
      table,
      upsert: (name, row, options) => pending.add(table(name), rowShape(view, name, row, options), row),
      flush,
    },
    settled: () => flushing.then(noop, noop),
  };
}

function toJson(row: Row): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const column in row) out[column] = jsonValue(row[column] as RowValue);
  return out;
}

/** One run of upserts as one statement with its parameter: the run's rows as one JSON array. */
function upsertQuery(run: { table: string; shape: RowShape; rows: Row[] }): pg.QueryConfig {
  const nullKey = run.rows.some((row) => run.shape.key.some((column) => row[column] === null));
  return { ...upsertStatement(run.table, run.shape, nullKey), values: [JSON.stringify(run.rows.map(toJson))] };
}

/**
 * One run of upserts as one statement. The table's own row type reads the JSON (no column types to
 * declare); rows are merged by key in SQL, so that one INSERT touches each row once (which
 * ON CONFLICT requires) with the database's own idea of equal keys: increments summed in the column's
 * type, every other column from the run's latest row. A NULL in the key never meets another row, as
 * in a unique index.
 */
function upsertStatement(table: string, shape: RowShape, nullKey: boolean): { name: string; text: string } {
  const cacheKey = `${nullKey ? 1 : 0}${shape.signature}\0${table}`;
  let statement = upsertStatements.get(cacheKey);
  if (statement === undefined) {
    const text = upsertText(table, shape, nullKey);
    // Named: each connection parses and plans it once.
    statement = { name: `eskit_upsert_${createHash('sha1').update(text).digest('hex').slice(0, 24)}`, text };
    if (upsertStatements.size >= 1000) upsertStatements.clear();
    upsertStatements.set(cacheKey, statement);
  }
  return statement;
}

const upsertStatements = new Map<string, { name: string; text: string }>();

function upsertText(table: string, shape: RowShape, nullKey: boolean): string {
  const r = (column: string): string => `r.${quoteColumn(column)}`;
  const insert = `INSERT INTO ${table} (${shape.columns.map(quoteColumn).join(', ')}) `;
  const conflict = onConflict(shape, table);
  const key = shape.key.map(r);
  const ordered = nullKey || shape.columns.some((column) => !shape.key.includes(column) && !shape.increment.has(column));
  if (!ordered) {
    // Only keys and increments: grouping needs no order (the cheaper plan, and the common counter view).
    const select = shape.columns.map((column) => (shape.increment.has(column) ? `sum(${r(column)})` : r(column)));
    return `${insert}SELECT ${select.join(', ')} FROM json_populate_recordset(NULL::${table}, $1::json) AS r GROUP BY ${key.join(', ')} ${conflict}`;
  }
  // The latest row of each key whole (DISTINCT ON, not an aggregate per column: array_agg of an array
  // column would build a 2-D array), with the increments summed over all of the key's rows. The
  // position comes from the JSON array, under names of our own: a table may have any column names.
  if (nullKey) key.push(`CASE WHEN ${shape.key.map((column) => `${r(column)} IS NULL`).join(' OR ')} THEN e.eskit_at END`);
  const select = shape.columns.map((column) => (shape.increment.has(column) ? `sum(${r(column)}) OVER (PARTITION BY ${key.join(', ')})` : r(column)));
  return (
    `${insert}SELECT DISTINCT ON (${key.join(', ')}) ${select.join(', ')} ` +
    `FROM json_array_elements($1::json) WITH ORDINALITY AS e(eskit_row, eskit_at) CROSS JOIN LATERAL json_populate_record(NULL::${table}, e.eskit_row) AS r ` +
    `ORDER BY ${key.join(', ')}, e.eskit_at DESC ${conflict}`
  );
}
