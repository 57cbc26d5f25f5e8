import type Database from 'better-sqlite3';
import type { CheckpointInfo, CheckpointStore } from '../core/checkpoint.js';
import { FencedError, InvalidArgumentError, isEskitError } from '../core/errors.js';
import { resolveConnection } from './connection.js';
import type { SqliteConnectionOptions } from './connection.js';
import { translateSqliteError } from './errors.js';

export type SqliteCheckpointStoreOptions = Omit<SqliteConnectionOptions, 'path'>;

/** SQLite's own clock, in integer milliseconds since the epoch (needs SQLite 3.42+, bundled by better-sqlite3). */
export const SQLITE_NOW_MS = "CAST(unixepoch('subsec') * 1000 AS INTEGER)";

type Statement<P extends unknown[], R = unknown> = Database.Statement<P, R>;

interface Statements {
  load: Statement<[string], number | null>;
  /** name, position, token (null: unconditional) → the row's token, or no row when fenced. */
  save: Statement<[{ name: string; position: number; token: number | null }], number>;
  /** name, token → the saved position (null: never saved), or no row when fenced. */
  claim: Statement<[{ name: string; token: number }], number | null>;
  token: Statement<[string], number>;
  list: Statement<[], [string, number, number, number]>;
}

// Prepared statements per connection, shared by every store and by saveSqliteCheckpoint on that handle.
const prepared = new WeakMap<Database.Database, Statements>();

function statements(database: Database.Database): Statements {
  let cached = prepared.get(database);
  if (cached !== undefined) return cached;
  // safeIntegers(false) everywhere: a shared handle may have turned on BigInt results by default.
  const pluck = <P extends unknown[], R>(sql: string) => database.prepare<P, R>(sql).pluck().safeIntegers(false);
  cached = {
    load: pluck('SELECT position FROM eskit_checkpoints WHERE name = ?'),
    // One statement, so it is atomic on its own and also inside a caller's transaction. A fenced write
    // matches the conflict but fails the DO UPDATE condition, so it changes nothing and returns no row.
    save: pluck(`
      INSERT INTO eskit_checkpoints (name, position, fencing_token, updated_at)
      VALUES (:name, :position, COALESCE(:token, 0), ${SQLITE_NOW_MS})
      ON CONFLICT (name) DO UPDATE SET
        position = excluded.position,
        fencing_token = max(eskit_checkpoints.fencing_token, excluded.fencing_token),
        updated_at = excluded.updated_at
      WHERE :token IS NULL OR eskit_checkpoints.fencing_token <= :token
      RETURNING fencing_token`),
    claim: pluck(`
      INSERT INTO eskit_checkpoints (name, position, fencing_token, updated_at)
      VALUES (:name, NULL, :token, ${SQLITE_NOW_MS})
      ON CONFLICT (name) DO UPDATE SET fencing_token = excluded.fencing_token, updated_at = excluded.updated_at
      WHERE eskit_checkpoints.fencing_token <= excluded.fencing_token
      RETURNING position`),
    token: pluck('SELECT fencing_token FROM eskit_checkpoints WHERE name = ?'),
    list: database
      .prepare<[], [string, number, number, number]>(
        'SELECT name, position, fencing_token, updated_at FROM eskit_checkpoints WHERE position IS NOT NULL ORDER BY name',
      )
      .raw()
      .safeIntegers(false),
  };
  prepared.set(database, cached);
  return cached;
}

function assertName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || name.length === 0) throw new InvalidArgumentError('A checkpoint needs a non-empty name');
}

function assertCount(what: string, value: unknown): asserts value is number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new InvalidArgumentError(`${what} must be a non-negative integer, got ${String(value)}`);
  }
}

/** Runs `operation` against the database, turning driver errors into eskit errors. */
function run<T>(database: Database.Database, what: string, operation: () => T): T {
  try {
    return operation();
  } catch (error) {
    if (isEskitError(error)) throw error;
    throw translateSqliteError(error, database, what);
  }
}

function fenced(database: Database.Database, name: string, token: number): FencedError {
  return new FencedError(name, token, statements(database).token.get(name) as number);
}

/**
 * Saves a checkpoint on `database` synchronously, with the same fencing as `SqliteCheckpointStore.save`.
 * Call it inside your own better-sqlite3 transaction to commit a view's writes and its checkpoint
 * together (use `.immediate()` for that transaction, so it holds the write lock from its first read):
 * a `FencedError` thrown here rolls the whole transaction back.
 */
export function saveSqliteCheckpoint(database: Database.Database, name: string, position: number, fencingToken?: number): void {
  assertName(name);
  assertCount('position', position);
  if (fencingToken !== undefined) assertCount('fencingToken', fencingToken);
  run(database, `save checkpoint "${name}"`, () => {
    const token = statements(database).save.get({ name, position, token: fencingToken ?? null });
    if (token === undefined) throw fenced(database, name, fencingToken as number);
  });
}

/**
 * Checkpoints in the `eskit_checkpoints` table, next to the events. Every operation is a single
 * statement, so it is atomic across processes sharing the file. Fencing as in `CheckpointStore`: the
 * row keeps the newest token that claimed or saved it, and older tokens are rejected with `FencedError`.
 */
export class SqliteCheckpointStore implements CheckpointStore {
  /** The connection the checkpoints live on (an event store's, or the handle you passed). */
  readonly database: Database.Database;

  constructor(options: SqliteCheckpointStoreOptions) {
    this.database = resolveConnection(options, 'SqliteCheckpointStore', false).database;
  }

  async load(name: string): Promise<number | undefined> {
    assertName(name);
    const position = run(this.database, `load checkpoint "${name}"`, () => statements(this.database).load.get(name));
    return position ?? undefined;
  }

  async claim(name: string, fencingToken: number): Promise<number | undefined> {
    assertName(name);
    assertCount('fencingToken', fencingToken);
    return run(this.database, `claim checkpoint "${name}"`, () => {
      // undefined: no row came back (fenced); null: claimed, but never saved.
      const position = statements(this.database).claim.get({ name, token: fencingToken });
      if (position === undefined) throw fenced(this.database, name, fencingToken);
      return position ?? undefined;
    });
  }

  async save(name: string, position: number, options: { fencingToken?: number } = {}): Promise<void> {
    saveSqliteCheckpoint(this.database, name, position, options.fencingToken);
  }

  async list(): Promise<CheckpointInfo[]> {
    const rows = run(this.database, 'list checkpoints', () => statements(this.database).list.all());
    return rows.map(([name, position, fencingToken, updatedAt]) => ({ name, position, fencingToken, updatedAt: new Date(updatedAt) }));
  }
}
