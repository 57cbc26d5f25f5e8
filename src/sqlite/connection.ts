import Database from './driver.js';
import { InvalidArgumentError } from '../core/errors.js';
import { translateSqliteError } from './errors.js';
import { migrateSqlite } from './migrations.js';

export const DEFAULT_BUSY_TIMEOUT_MS = 5000;

/**
 * Sets up a connection the way eskit relies on: WAL (readers never wait for the writer, and one writer
 * at a time per file), synchronous=NORMAL (durable across process crashes; a power cut can lose the
 * last transactions but never corrupts the file), and a busy timeout so that processes sharing the
 * file wait for each other's write lock instead of failing at once.
 */
export function configureSqlite(database: Database.Database, busyTimeoutMs: number = DEFAULT_BUSY_TIMEOUT_MS): void {
  assertBusyTimeout(busyTimeoutMs);
  try {
    database.pragma(`busy_timeout = ${busyTimeoutMs}`);
    enableWal(database, busyTimeoutMs);
    database.pragma('synchronous = NORMAL');
    // Deleted and overwritten bytes are zeroed, not left in free pages: a destroyed key (forget), and
    // a view's row cleared on $subject.forgotten, must not stay readable in the file. From open, on
    // every connection eskit configures, whatever it is used for first.
    database.pragma('secure_delete = ON');
  } catch (error) {
    throw translateSqliteError(error, database, 'configure the connection (WAL mode)');
  }
}

/**
 * Switching a file to WAL needs it to itself for a moment, and SQLite answers SQLITE_BUSY at once
 * there instead of calling the busy handler (seen when several processes open a new file together).
 * So retry here, within the same busy timeout. Once any connection has switched the file, the mode
 * is persistent and this returns on the first try. An in-memory database stays in 'memory' mode.
 */
function enableWal(database: Database.Database, busyTimeoutMs: number): void {
  const deadline = Date.now() + busyTimeoutMs;
  let pauseMs = 1;
  for (;;) {
    try {
      database.pragma('journal_mode = WAL');
      return;
    } catch (error) {
      if (!isBusy(error) || Date.now() >= deadline) throw error;
    }
    // The constructor that gets here is synchronous, so the wait must be too (as SQLite's own is).
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, pauseMs);
    pauseMs = Math.min(pauseMs * 2, 50);
  }
}

function isBusy(error: unknown): boolean {
  return error instanceof Database.SqliteError && error.code.startsWith('SQLITE_BUSY');
}

/** Opens (creating if needed) the database file at `path` and configures it with `configureSqlite`. */
export function openSqlite(path: string, busyTimeoutMs: number = DEFAULT_BUSY_TIMEOUT_MS): Database.Database {
  if (typeof path !== 'string' || path.length === 0) {
    throw new InvalidArgumentError('path must be a non-empty file path (or ":memory:")');
  }
  assertBusyTimeout(busyTimeoutMs);
  let database: Database.Database;
  try {
    database = new Database(path, { timeout: busyTimeoutMs });
  } catch (error) {
    if (error instanceof TypeError && /directory does not exist/.test(error.message)) {
      throw new InvalidArgumentError(`Cannot open the SQLite file "${path}": its directory does not exist. Create it first (mkdir -p), or give another path (${error.message}).`);
    }
    throw error;
  }
  try {
    configureSqlite(database, busyTimeoutMs);
  } catch (error) {
    database.close();
    throw error;
  }
  return database;
}

function assertBusyTimeout(busyTimeoutMs: unknown): void {
  if (typeof busyTimeoutMs !== 'number' || !Number.isSafeInteger(busyTimeoutMs) || busyTimeoutMs < 0) {
    throw new InvalidArgumentError(`busyTimeoutMs must be a non-negative integer number of milliseconds, got ${String(busyTimeoutMs)}`);
  }
}

/**
 * Where the checkpoint store and the lock registry get their connection: an event store's (the usual
 * case: one connection per process), a better-sqlite3 handle of yours, or a file of their own.
 */
export interface SqliteConnectionOptions {
  /** A `SqliteEventStore` (or anything with its `database`): its connection is shared and stays its own. */
  store?: { readonly database: Database.Database };
  /** An open better-sqlite3 handle; configured like an owned one and left open on close. */
  database?: Database.Database;
  /** Apply pending schema migrations first. Default true (a no-op when the schema is current). */
  migrate?: boolean;
  /** How long a write waits for another connection's write lock. Default 5000. Ignored with `store`. */
  busyTimeoutMs?: number;
}

/**
 * Resolves exactly one of `store`, `database` or (when the caller may open its own connection) `path`.
 * `owned` is true only for a connection opened here, which the caller must close.
 */
export function resolveConnection(
  options: SqliteConnectionOptions & { path?: string },
  what: string,
  allowPath: boolean,
): { database: Database.Database; owned: boolean } {
  const given = [options.store, options.database, options.path].filter((value) => value !== undefined).length;
  if (given !== 1 || (!allowPath && options.path !== undefined)) {
    const choices = allowPath ? '`store` (a SqliteEventStore), `database` (a better-sqlite3 handle) or `path` (a file)' : '`store` (a SqliteEventStore) or `database` (a better-sqlite3 handle)';
    throw new InvalidArgumentError(`${what} needs exactly one of ${choices}`);
  }
  const busyTimeoutMs = options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
  let database: Database.Database;
  let owned = false;
  if (options.store !== undefined) {
    database = options.store.database;
    if (!database.open) throw new InvalidArgumentError(`the event store passed to ${what} is closed`);
  } else if (options.database !== undefined) {
    database = options.database;
    if (!database.open) throw new InvalidArgumentError(`the \`database\` handle passed to ${what} is closed`);
    configureSqlite(database, busyTimeoutMs);
  } else {
    database = openSqlite(options.path as string, busyTimeoutMs);
    owned = true;
  }
  if (options.migrate ?? true) {
    try {
      migrateSqlite(database);
    } catch (error) {
      if (owned) database.close();
      throw error;
    }
  }
  return { database, owned };
}
