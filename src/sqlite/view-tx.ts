// What a SQLite view's evolve writes with (SqliteViewTx): the connection, the view's tables, cached
// statements, and upsert, which binds values the way PostgreSQL would store them.
import type Database from 'better-sqlite3';
import { InvalidArgumentError } from '../core/errors.js';
import type { SqlViewTx } from '../core/view-backend.js';
import { tableNames } from '../core/view-backend.js';
import { onConflict, quoteColumn, rowShape } from '../core/view-rows.js';
import type { RowValue, Upsert } from '../core/view-rows.js';

const MAX_CACHED_STATEMENTS = 1000;

export const quote = (name: string): string => `"${name}"`;

/** What `evolve` writes with: the connection, inside the view's transaction. */
export interface SqliteViewTx extends SqlViewTx {
  readonly db: Database.Database;
  /** The table (or index) `name` as SQL text: the live table, or its shadow copy during a rebuild. */
  table(name: string): string;
  /**
   * `db.prepare(sql)`, cached by SQL text. The text names the tables through `table()`, so the live
   * view and a rebuild get statements of their own. For fixed SQL texts (the cache keeps 1000).
   */
  prepare<P extends unknown[] = unknown[], R = unknown>(sql: string): Database.Statement<P, R>;
  /**
   * Inserts or updates one row of the view table `name` (the name given to `table()`), at once. The
   * same call as `PostgresViewTx.upsert`, so one `evolve` can serve both backends.
   */
  readonly upsert: Upsert;
}

/**
 * What evolve gets for the tables `map` names (the live ones, or a rebuild's shadow copies): the
 * connection, their names, and statements prepared once per SQL text.
 */
export function sqliteViewTx(db: Database.Database, view: string, map: (name: string) => string): SqliteViewTx {
  const cache = new Map<string, Database.Statement>();
  const upserts = new Map<string, Database.Statement>();
  const table = tableNames(view, (name) => quote(map(name)));
  const prepare = <P extends unknown[] = unknown[], R = unknown>(sql: string): Database.Statement<P, R> => {
    let statement = cache.get(sql);
    if (statement === undefined) {
      if (cache.size >= MAX_CACHED_STATEMENTS) cache.clear();
      statement = db.prepare(sql);
      cache.set(sql, statement);
    }
    return statement as unknown as Database.Statement<P, R>;
  };
  return {
    db,
    table,
    prepare,
    upsert: (name, row, options) => {
      const shape = rowShape(view, name, row, options);
      let upsert = upserts.get(shape.signature);
      if (upsert === undefined) {
        const t = table(name);
        upsert = prepare(`INSERT INTO ${t} (${shape.columns.map(quoteColumn).join(', ')}) VALUES (${shape.columns.map(() => '?').join(', ')}) ${onConflict(shape, t)}`);
        if (upserts.size >= MAX_CACHED_STATEMENTS) upserts.clear();
        upserts.set(shape.signature, upsert);
      }
      upsert.run(...shape.columns.map((column) => sqliteValue(row[column] as RowValue, () => `View "${view}", table "${name}", column "${column}"`)));
    },
  };
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/**
 * better-sqlite3 binds no booleans, Dates or objects (1/0, ISO 8601 text, JSON text), and binds every
 * number as a REAL: a whole number goes as an integer, so a TEXT column stores '1' (as PostgreSQL
 * would), not '1.0'.
 */
function sqliteValue(value: RowValue, where: () => string): string | number | bigint | null {
  if (typeof value === 'number') return Number.isSafeInteger(value) ? BigInt(value) : value;
  if (typeof value === 'boolean') return value ? 1 : 0;
  if (typeof value === 'bigint' && (value < INT64_MIN || value > INT64_MAX)) {
    throw new InvalidArgumentError(`${where()}: ${value} is beyond SQLite's 64-bit integers; write it as a string into a TEXT column instead.`);
  }
  if (typeof value === 'bigint' || typeof value === 'string' || value === null) return value;
  if (value instanceof Date) return value.toISOString();
  return JSON.stringify(value);
}
