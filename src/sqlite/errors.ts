import Database from './driver.js';
import { ErrorCode, EskitError, MigrationError, StoreClosedError } from '../core/errors.js';

/**
 * The database stayed locked by another connection for longer than the busy timeout. Nothing was
 * written. Usually a long write transaction in another process (or a connection left open inside one).
 */
export class SqliteBusyError extends EskitError {
  constructor(
    readonly operation: string,
    readonly busyTimeoutMs: number,
    options?: { cause?: unknown },
  ) {
    super(
      ErrorCode.StoreBusy,
      `SQLite could not ${operation}: another connection kept the database file locked for longer than the busy timeout ` +
        `(${busyTimeoutMs} ms). Nothing was written. Look for a long or abandoned write transaction, then retry, or raise busyTimeoutMs.`,
      options,
    );
  }
}

/**
 * Turns driver errors a caller can act on into eskit errors; anything else comes back unchanged.
 * `operation` completes the sentence "SQLite could not ...".
 */
export function translateSqliteError(error: unknown, database: Database.Database, operation: string): unknown {
  if (error instanceof Database.SqliteError) {
    if (error.code === 'SQLITE_BUSY' || error.code.startsWith('SQLITE_BUSY_')) {
      return new SqliteBusyError(operation, database.pragma('busy_timeout', { simple: true }) as number, { cause: error });
    }
    if (error.message.startsWith('no such table: eskit_')) {
      return new MigrationError(
        `The eskit tables are missing from ${database.name}: call migrate() on the store (or create it without migrate: false).`,
        { cause: error },
      );
    }
    return error;
  }
  // better-sqlite3 throws a plain TypeError once the handle is closed (for example by its owner).
  if (!database.open) return new StoreClosedError('SQLite database');
  return error;
}
