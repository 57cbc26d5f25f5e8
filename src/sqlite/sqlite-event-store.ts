import type Database from 'better-sqlite3';
import { ConcurrencyError, DuplicateEventIdError, InvalidArgumentError } from '../core/errors.js';
import type { EventShape } from '../core/event.js';
import { assertExpectedVersion } from '../core/store.js';
import type { ExpectedVersion, ReadDirection } from '../core/store.js';
import { GroupCommit } from '../core/group-commit.js';
import type { GroupedAppend, GroupOutcome } from '../core/group-commit.js';
import { EventStoreBase } from '../core/store-base.js';
import type { EventStoreBaseOptions, LogFilter, PreparedEvent, StoredEventRow, WrittenEvents } from '../core/store-base.js';
import { configureSqlite, DEFAULT_BUSY_TIMEOUT_MS, openSqlite } from './connection.js';
import { translateSqliteError } from './errors.js';
import { migrateSqlite } from './migrations.js';
import { lifecycleWriter, refusesAppends, STREAM_VERSION_SQL } from './sqlite-lifecycle.js';
import { SqliteSubjectKeyStore } from './sqlite-subject-key-store.js';
import type { LifecycleRequest, LifecycleWritten } from '../core/lifecycle.js';

export interface SqliteEventStoreOptions<E extends EventShape> extends EventStoreBaseOptions<E> {
  /** The database file, created if missing (its directory must exist). `':memory:'` for a private in-memory log. */
  path?: string;
  /**
   * An open better-sqlite3 handle to use instead of `path`, for example to share one connection with
   * your own tables. It is configured like an owned one (WAL, synchronous=NORMAL, busy timeout), and
   * `close()` leaves it open: it is yours.
   */
  database?: Database.Database;
  /** Apply pending schema migrations when the store is created. Default true; see `migrate()`. */
  migrate?: boolean;
  /** How long a write waits for another connection's write lock before failing with `ESKIT_STORE_BUSY`. Default 5000. */
  busyTimeoutMs?: number;
}

/** position, event_id, stream_id, stream_version, type, data, metadata, created_at */
type RawRow = [number, string, string, number, string, string, string, number];
type Statement<P extends unknown[], R = unknown> = Database.Statement<P, R>;
type AppendTransaction = (streamId: string, events: PreparedEvent[], expected: ExpectedVersion) => WrittenEvents;
type GroupTransaction = (group: readonly GroupedAppend[]) => GroupOutcome[];

interface Statements {
  version: Statement<[string], number>;
  append: Database.Transaction<AppendTransaction>;
  appendGroup: Database.Transaction<GroupTransaction>;
  forward: Statement<[string, number, number], RawRow>;
  backward: Statement<[string, number, number], RawRow>;
  archived: Statement<[string, number, number], RawRow>;
  all: Statement<[number, number], RawRow>;
  allOfType: Statement<[string, number, number], RawRow>;
  allOfManyTypes: Statement<[number, string, number], RawRow>;
  ofCategory: Statement<[string, number, number], RawRow>;
  ofCategoryAndTypes: Statement<[string, number, string, number], RawRow>;
  head: Statement<[], number>;
  lifecycle: ReturnType<typeof lifecycleWriter>;
}

const COLUMNS = 'position, event_id, stream_id, stream_version, type, data, metadata, created_at';
/** A stream's category, exactly as the index of migration 8 computes it (the planner matches the expression). */
export const CATEGORY_SQL = "(CASE WHEN instr(stream_id, '-') > 0 THEN substr(stream_id, 1, instr(stream_id, '-') - 1) ELSE stream_id END)";
/**
 * A type filter with up to this many types is read as a merge of one index range per type (see
 * `#allOfTypes`); beyond it, by a scan in position order that skips other types.
 */
const MAX_MERGED_TYPES = 32;

/**
 * The event log in one SQLite file. Several stores, in this process or in others, may share the file.
 *
 * Global order: every append is one `BEGIN IMMEDIATE` transaction, which takes the database's single
 * write lock before it reads the stream version and holds it until COMMIT. SQLite admits one writer at
 * a time, so appends commit one after another, and each takes its positions (AUTOINCREMENT: above
 * every position ever handed out) while holding the lock. Positions therefore grow in commit order:
 * when a reader's snapshot contains position p, every transaction that will ever write a position below
 * p has already committed and is in that snapshot too. A reader that has seen p can never later find an
 * event at or before p, so `readAll({ after: checkpoint })` skips nothing. Rolled-back appends do not
 * advance the sequence either, so in practice the log has no gaps.
 */
export class SqliteEventStore<E extends EventShape = EventShape> extends EventStoreBase<E> {
  /** The underlying better-sqlite3 handle (for the other SQLite adapters and your own tables). */
  readonly database: Database.Database;
  readonly #ownsDatabase: boolean;
  #statements: Statements | undefined;
  readonly #typeFilters = new Map<number, Statement<unknown[], RawRow>>();
  readonly #groups = new GroupCommit((group) => this.#writeGroup(group));

  constructor(options: SqliteEventStoreOptions<E>) {
    // The subjects' keys live in the same file, on this store's connection, which is opened below,
    // after super(): the key store looks it up at first use. The store migrates it (or migrate() does).
    const opened: { database?: Database.Database } = {};
    const connection = {
      get database() {
        return opened.database as Database.Database;
      },
    };
    super({ ...options, subjectKeys: options.subjectKeys ?? new SqliteSubjectKeyStore({ store: connection, migrate: false }) });
    const { path, database } = options;
    if ((path === undefined) === (database === undefined)) {
      throw new InvalidArgumentError('SqliteEventStore needs exactly one of `path` (a database file) or `database` (an open better-sqlite3 handle)');
    }
    const busyTimeoutMs = options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
    if (database === undefined) {
      this.database = openSqlite(path as string, busyTimeoutMs);
      this.#ownsDatabase = true;
    } else {
      if (!database.open) throw new InvalidArgumentError('the `database` handle passed to SqliteEventStore is closed');
      configureSqlite(database, busyTimeoutMs);
      this.database = database;
      this.#ownsDatabase = false;
    }
    opened.database = this.database;
    if (options.migrate ?? true) {
      try {
        migrateSqlite(this.database);
      } catch (error) {
        if (this.#ownsDatabase) this.database.close();
        throw error;
      }
    }
  }

  /**
   * Applies pending schema migrations; returns the versions applied (empty when up to date).
   * Idempotent and safe to run from several processes at once. Needed only with `migrate: false`.
   */
  async migrate(): Promise<number[]> {
    this.assertOpen();
    return migrateSqlite(this.database);
  }

  protected writeEvents(streamId: string, events: PreparedEvent[], expected: ExpectedVersion): Promise<WrittenEvents> {
    return this.#groups.append({ streamId, events, expected });
  }

  /**
   * One group of appends (see GroupCommit). better-sqlite3 is synchronous, so nothing is ever in flight:
   * a group is the appends made in one turn of the event loop, written in one `BEGIN IMMEDIATE`
   * transaction (one lock, one commit). Each append runs in a savepoint of its own, so a conflict or a
   * duplicate id undoes that append alone and the others commit.
   */
  #writeGroup(group: readonly GroupedAppend[]): GroupOutcome[] {
    try {
      const statements = this.#statements ?? this.#prepare();
      if (group.length === 1) {
        const { streamId, events, expected } = group[0] as GroupedAppend;
        return [statements.append.immediate(streamId, events, expected)];
      }
      return statements.appendGroup.immediate(group);
    } catch (error) {
      const streams = [...new Set(group.map((append) => `"${append.streamId}"`))].join(', ');
      throw translateSqliteError(error, this.database, `append to stream${group.length > 1 ? 's' : ''} ${streams}`);
    }
  }

  protected async writeLifecycle(streamId: string, request: LifecycleRequest): Promise<LifecycleWritten> {
    try {
      return (this.#statements ?? this.#prepare()).lifecycle.immediate(streamId, request);
    } catch (error) {
      throw translateSqliteError(error, this.database, `${request.kind} stream "${streamId}"`);
    }
  }

  protected async readStreamRows(streamId: string, fromVersion: number, direction: ReadDirection, limit: number): Promise<StoredEventRow[]> {
    try {
      const statements = this.#statements ?? this.#prepare();
      const statement = direction === 'forward' ? statements.forward : statements.backward;
      return toRows(statement.all(streamId, fromVersion, limit));
    } catch (error) {
      throw translateSqliteError(error, this.database, `read stream "${streamId}"`);
    }
  }

  protected async readArchivedRows(streamId: string, fromVersion: number, limit: number): Promise<StoredEventRow[]> {
    try {
      return toRows((this.#statements ?? this.#prepare()).archived.all(streamId, fromVersion, limit));
    } catch (error) {
      throw translateSqliteError(error, this.database, `read the archive of stream "${streamId}"`);
    }
  }

  protected async readAllRows(after: number, limit: number, { types, category }: LogFilter): Promise<StoredEventRow[]> {
    try {
      const statements = this.#statements ?? this.#prepare();
      if (category !== undefined) {
        if (types === undefined) return toRows(statements.ofCategory.all(category, after, limit));
        return toRows(statements.ofCategoryAndTypes.all(category, after, JSON.stringify([...new Set(types)]), limit));
      }
      if (types === undefined) return toRows(statements.all.all(after, limit));
      if (types.length === 1) return toRows(statements.allOfType.all(types[0] as string, after, limit));
      const distinct = [...new Set(types)];
      if (distinct.length > MAX_MERGED_TYPES) return toRows(statements.allOfManyTypes.all(after, JSON.stringify(distinct), limit));
      const parameters: unknown[] = [];
      for (const type of distinct) parameters.push(type, after);
      parameters.push(limit);
      return toRows(this.#allOfTypes(distinct.length).all(...parameters));
    } catch (error) {
      throw translateSqliteError(error, this.database, 'read the log');
    }
  }

  protected async readStreamVersion(streamId: string): Promise<number> {
    try {
      return (this.#statements ?? this.#prepare()).version.get(streamId) as number;
    } catch (error) {
      throw translateSqliteError(error, this.database, `read the version of stream "${streamId}"`);
    }
  }

  protected async readHeadPosition(): Promise<number> {
    try {
      return (this.#statements ?? this.#prepare()).head.get() as number;
    } catch (error) {
      throw translateSqliteError(error, this.database, 'read the head position');
    }
  }

  protected async closeResources(): Promise<void> {
    // Appends accepted before close() are written (or refused) before the database closes.
    await this.#groups.drain();
    this.#statements = undefined;
    this.#typeFilters.clear();
    if (this.#ownsDatabase && this.database.open) this.database.close();
  }

  /**
   * Prepared on first use rather than in the constructor, so that a store created with
   * `migrate: false` can still run `migrate()` before anything touches the tables.
   */
  #prepare(): Statements {
    const db = this.database;
    // safeIntegers(false) everywhere: a shared handle may have turned on BigInt results by default.
    const version = db
      .prepare<[string], number>(STREAM_VERSION_SQL)
      .pluck()
      .safeIntegers(false);
    const insert = db
      .prepare<[string, string, number, string, string, string, number]>(
        'INSERT INTO eskit_events (event_id, stream_id, stream_version, type, data, metadata, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)',
      )
      .safeIntegers(false);
    const refuses = refusesAppends(db);
    const write = (streamId: string, events: PreparedEvent[], expected: ExpectedVersion): WrittenEvents => {
      // Read under the write lock (the transaction is IMMEDIATE), so no other writer can move it.
      const current = version.get(streamId) as number;
      // Only a stream that looks new can be one deleted with appends: 'refuse'.
      if (current === 0) refuses(streamId);
      assertExpectedVersion(streamId, expected, current);
      const now = Date.now();
      const positions = new Array<number>(events.length);
      for (let i = 0; i < events.length; i++) {
        const event = events[i] as PreparedEvent;
        try {
          positions[i] = insert.run(event.id, streamId, current + i + 1, event.type, event.data, event.metadata, now).lastInsertRowid as number;
        } catch (error) {
          throw uniqueViolation(error, event.id, streamId, expected, () => version.get(streamId) as number);
        }
      }
      return { streamVersion: current + events.length, positions, timestamp: new Date(now) };
    };
    const append = db.transaction(write);
    // Called inside a transaction, `append` runs as a savepoint: an append refused for its own sake (a
    // conflict, a duplicate id, a constraint or trigger of yours) is rolled back alone, as it would fail
    // alone. A one-event append needs no savepoint: its version is checked before its one INSERT, and
    // a refused statement leaves nothing behind. A failure of the database itself (the disk, the file,
    // memory), or one that ended the transaction (a trigger's RAISE(ROLLBACK)), fails the whole group,
    // of which nothing is written.
    const appendGroup = db.transaction((group: readonly GroupedAppend[]): GroupOutcome[] =>
      group.map(({ streamId, events, expected }) => {
        try {
          return events.length === 1 ? write(streamId, events, expected) : append(streamId, events, expected);
        } catch (error) {
          if (!db.inTransaction || failsTheDatabase(error)) throw error;
          const refusal = translateSqliteError(error, db, `append to stream "${streamId}"`);
          return refusal instanceof Error ? refusal : new Error(String(refusal));
        }
      }),
    );
    const read = (sql: string) => db.prepare<unknown[], RawRow>(sql).raw().safeIntegers(false);
    const statements: Statements = {
      version,
      append,
      appendGroup,
      forward: read(`SELECT ${COLUMNS} FROM eskit_events WHERE stream_id = ? AND stream_version >= ? ORDER BY stream_version LIMIT ?`),
      backward: read(`SELECT ${COLUMNS} FROM eskit_events WHERE stream_id = ? AND stream_version <= ? AND stream_version > 0 ORDER BY stream_version DESC LIMIT ?`),
      archived: read(`SELECT ${COLUMNS} FROM eskit_archived_events WHERE stream_id = ? AND stream_version >= ? ORDER BY stream_version LIMIT ?`),
      all: read(`SELECT ${COLUMNS} FROM eskit_events WHERE position > ? ORDER BY position LIMIT ?`),
      allOfType: read(`SELECT ${COLUMNS} FROM eskit_events WHERE type = ? AND position > ? ORDER BY position LIMIT ?`),
      // `+type` keeps the planner off the type index: walking positions in order stops after `limit`
      // matches, where an index lookup per type would have to sort every later match first.
      allOfManyTypes: read(
        `SELECT ${COLUMNS} FROM eskit_events WHERE position > ? AND +type IN (SELECT value FROM json_each(?)) ORDER BY position LIMIT ?`,
      ),
      ofCategory: read(`SELECT ${COLUMNS} FROM eskit_events WHERE ${CATEGORY_SQL} = ? AND position > ? ORDER BY position LIMIT ?`),
      // The category's range of the index, in position order; `+type` keeps the planner on it.
      ofCategoryAndTypes: read(
        `SELECT ${COLUMNS} FROM eskit_events WHERE ${CATEGORY_SQL} = ? AND position > ? AND +type IN (SELECT value FROM json_each(?)) ORDER BY position LIMIT ?`,
      ),
      head: db.prepare<[], number>('SELECT COALESCE(MAX(position), 0) FROM eskit_events').pluck().safeIntegers(false),
      lifecycle: lifecycleWriter(db),
    };
    this.#statements = statements;
    return statements;
  }

  /**
   * One `type = ? AND position > ?` arm per type, combined with UNION ALL and ORDER BY position.
   * SQLite runs this as a merge of the per-type index ranges (each already in position order), so a
   * page costs O(limit) whatever the mix of types; `type IN (...)` would instead sort every match.
   */
  #allOfTypes(count: number): Statement<unknown[], RawRow> {
    let statement = this.#typeFilters.get(count);
    if (statement === undefined) {
      const arm = `SELECT ${COLUMNS} FROM eskit_events WHERE type = ? AND position > ?`;
      const sql = `${Array.from({ length: count }, () => arm).join(' UNION ALL ')} ORDER BY position LIMIT ?`;
      statement = this.database.prepare<unknown[], RawRow>(sql).raw().safeIntegers(false);
      this.#typeFilters.set(count, statement);
    }
    return statement;
  }
}

/** SQLite result codes that say the database, not one append, is in trouble (the primary code, before any `_` extension). */
const DATABASE_FAILURES = new Set(['SQLITE_IOERR', 'SQLITE_FULL', 'SQLITE_CORRUPT', 'SQLITE_NOTADB', 'SQLITE_NOMEM', 'SQLITE_BUSY', 'SQLITE_LOCKED', 'SQLITE_READONLY', 'SQLITE_CANTOPEN', 'SQLITE_PROTOCOL', 'SQLITE_INTERRUPT', 'SQLITE_ABORT']);

function failsTheDatabase(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && DATABASE_FAILURES.has(code.split('_').slice(0, 2).join('_'));
}

function toRows(raw: RawRow[]): StoredEventRow[] {
  const rows = new Array<StoredEventRow>(raw.length);
  for (let i = 0; i < raw.length; i++) {
    const r = raw[i] as RawRow;
    rows[i] = {
      id: r[1],
      type: r[4],
      data: r[5],
      metadata: r[6],
      streamId: r[2],
      streamVersion: r[3],
      position: r[0],
      timestamp: new Date(r[7]),
    };
  }
  return rows;
}

/**
 * The expected-version check runs under the write lock, so a (stream_id, stream_version) clash can only
 * come from a writer that bypassed eskit; it is still reported as the conflict it is.
 */
function uniqueViolation(error: unknown, eventId: string, streamId: string, expected: ExpectedVersion, actualVersion: () => number): unknown {
  const code = (error as { code?: unknown } | null)?.code;
  if (code !== 'SQLITE_CONSTRAINT_UNIQUE' && code !== 'SQLITE_CONSTRAINT_PRIMARYKEY') return error;
  const message = (error as Error).message;
  if (message.includes('eskit_events.event_id')) return new DuplicateEventIdError(eventId);
  if (message.includes('eskit_events.stream_version')) return new ConcurrencyError(streamId, expected, actualVersion());
  return error;
}
