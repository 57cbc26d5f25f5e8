import type Database from 'better-sqlite3';
import { isEskitError, StoreClosedError } from '../core/errors.js';
import { resolveConnection } from './connection.js';
import type { SqliteConnectionOptions } from './connection.js';
import { translateSqliteError } from './errors.js';

/** `{ store } | { database } | { path }`: a connection shared with an event store or a caller, or a file of its own. */
export interface SqliteOwnedConnectionOptions extends SqliteConnectionOptions {
  /** A database file of its own, opened here and closed by `close()`. */
  path?: string;
}

/**
 * The connection of a store that may own it (opened from `path`): runs operations with driver errors
 * translated, and refuses them once closed, whether or not the connection itself stays open.
 */
export class SqliteHandle {
  readonly database: Database.Database;
  readonly #owned: boolean;
  readonly #what: string;
  #closed = false;

  constructor(options: SqliteOwnedConnectionOptions, className: string, what: string) {
    const { database, owned } = resolveConnection(options, className, true);
    this.database = database;
    this.#owned = owned;
    this.#what = what;
  }

  /** `operation` completes the sentence "SQLite could not ...". */
  run<T>(operation: string, fn: () => T): T {
    if (this.#closed) throw new StoreClosedError(this.#what);
    try {
      return fn();
    } catch (error) {
      if (isEskitError(error)) throw error;
      throw translateSqliteError(error, this.database, operation);
    }
  }

  close(): void {
    this.#closed = true;
    if (this.#owned && this.database.open) this.database.close();
  }
}
