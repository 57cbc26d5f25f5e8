// Subjects' data keys in the SQLite file (eskit_subject_keys, migration 10), next to the events whose
// personal fields they encrypt: forgetting a subject destroys its key in the same file.
import { randomUUID } from 'node:crypto';
import type Database from 'better-sqlite3';
import { isEskitError, StoreClosedError } from '../core/errors.js';
import { consoleLogger } from '../core/logger.js';
import type { Logger } from '../core/logger.js';
import { keyFromDriver, newDataKey } from '../core/personal/cipher.js';
import { SubjectForgottenError } from '../core/personal/errors.js';
import { checkSubject } from '../core/personal/personal-data.js';
import type { ForgetResult, SubjectKey, SubjectKeyStore } from '../core/personal/types.js';
import { resolveConnection } from './connection.js';
import type { SqliteConnectionOptions } from './connection.js';
import { translateSqliteError } from './errors.js';
import { migrateSqlite } from './migrations.js';
import { SQLITE_NOW_MS } from './sqlite-checkpoint-store.js';

/**
 * How often a WAL checkpoint that a reader held back is tried again: soon after a typical read ends,
 * and each try costs a few locks when the reader is still there (it copies no page past its snapshot).
 */
const RETRY_CHECKPOINT_MS = 200;

export interface SqliteSubjectKeyStoreOptions extends Omit<SqliteConnectionOptions, 'path'> {
  /** Where a WAL checkpoint after `forget` that failed is reported. Default: warnings and errors on stderr. */
  logger?: Logger;
}

type Statement<P extends unknown[], R = unknown> = Database.Statement<P, R>;
/** kid, key (null once destroyed) */
type KeyRow = [string, Uint8Array | null];

interface Statements {
  /** The subject's live row if it has one, else any of its forgotten rows, else nothing. */
  latest: Statement<[string], KeyRow>;
  byKids: Statement<[string], KeyRow>;
  isForgotten: Statement<[string], number>;
  /** The live key, else a new one; a forgotten subject gets one only when `refuseForgotten` is false (allowNewKey). */
  create: Database.Transaction<(subject: string, refuseForgotten: boolean) => SubjectKey>;
  forget: Database.Transaction<(subject: string) => ForgetResult>;
}

// Prepared per connection, shared by every key store on that handle.
const prepared = new WeakMap<Database.Database, Statements>();

function statements(database: Database.Database): Statements {
  let cached = prepared.get(database);
  if (cached !== undefined) return cached;
  // safeIntegers(false): a shared handle may have turned on BigInt results by default.
  const read = <P extends unknown[], R>(sql: string) => database.prepare<P, R>(sql).raw().safeIntegers(false);
  const latest = read<[string], KeyRow>('SELECT kid, key FROM eskit_subject_keys WHERE subject = ? ORDER BY forgotten_at IS NULL DESC LIMIT 1');
  const insertLive = database.prepare<[string, string, Uint8Array]>(
    `INSERT INTO eskit_subject_keys (kid, subject, key, created_at, forgotten_at) VALUES (?, ?, ?, ${SQLITE_NOW_MS}, NULL)`,
  );
  const insertFence = database.prepare<[string, string]>(
    `INSERT INTO eskit_subject_keys (kid, subject, key, created_at, forgotten_at) VALUES (?, ?, NULL, ${SQLITE_NOW_MS}, ${SQLITE_NOW_MS})`,
  );
  const destroy = database
    .prepare<[string], string>(`UPDATE eskit_subject_keys SET key = NULL, forgotten_at = ${SQLITE_NOW_MS} WHERE subject = ? AND forgotten_at IS NULL RETURNING kid`)
    .pluck();
  // Each is run as BEGIN IMMEDIATE: the write lock is taken before the subject's rows are looked at,
  // so keyFor's creation, allowNewKey and forget of one subject never interleave, across processes too.
  const create = database.transaction((subject: string, refuseForgotten: boolean): SubjectKey => {
    const row = latest.get(subject);
    if (row !== undefined && row[1] !== null) return keyOf(row);
    // Forgotten: keyFor refuses; allowNewKey adds a live key next to the destroyed ones.
    if (row !== undefined && refuseForgotten) throw new SubjectForgottenError(subject);
    const kid = randomUUID();
    const key = newDataKey();
    insertLive.run(kid, subject, key);
    return { kid, key };
  });
  const forget = database.transaction((subject: string): ForgetResult => {
    const destroyed = destroy.all(subject).length;
    if (destroyed > 0) return { subject, keysDestroyed: destroyed, alreadyForgotten: false };
    if (latest.get(subject) !== undefined) return { subject, keysDestroyed: 0, alreadyForgotten: true };
    // Never had a key: the fence alone, so that no later keyFor makes one.
    insertFence.run(randomUUID(), subject);
    return { subject, keysDestroyed: 0, alreadyForgotten: false };
  });
  cached = {
    latest,
    byKids: read<[string], KeyRow>('SELECT kid, key FROM eskit_subject_keys WHERE kid IN (SELECT value FROM json_each(?))'),
    // 1 when every row of the subject is forgotten (and it has one); no row at all gives NULL.
    isForgotten: database.prepare<[string], number>('SELECT COALESCE(MIN(forgotten_at IS NOT NULL), 0) FROM eskit_subject_keys WHERE subject = ?').pluck().safeIntegers(false),
    create,
    forget,
  };
  prepared.set(database, cached);
  return cached;
}

function keyOf([kid, stored]: KeyRow): SubjectKey {
  return keyFromDriver(kid, stored as Uint8Array);
}

/**
 * Subjects' keys in the `eskit_subject_keys` table of the SQLite file (every SQLite event store has
 * one: `backend.subjectKeys`). What would let a key outlive `forget` in the file is dealt with on the
 * connection: `secure_delete` is turned on, so SQLite overwrites the bytes a destroyed key leaves behind
 * (on that connection: deletes of yours on it zero their bytes too, at some extra writing), and after
 * a forget a `wal_checkpoint(TRUNCATE)` copies the new page into the file and empties the WAL, which
 * still holds the old one. A reader of another connection in the middle of a read holds that checkpoint
 * back, and nothing waits for it here; SQLite's own checkpoints do not finish the job either (they are
 * PASSIVE: they copy pages into the file but leave the old frames, the destroyed key among them, in the
 * `-wal` file until the WAL wraps or the last connection closes). So a checkpoint held back stays
 * pending and is tried again, every RETRY_CHECKPOINT_MS (an unref'd timer) and before each use of this
 * key store, until it completes or the connection closes. Copies outside the file (backups, the file
 * system's own) are beyond its reach.
 */
export class SqliteSubjectKeyStore implements SubjectKeyStore {
  readonly #logger: Logger;
  /** The event store whose connection is used, looked up at first use (see the constructor). */
  readonly #store: { readonly database: Database.Database } | undefined;
  readonly #migrate: boolean;
  #database: Database.Database | undefined;
  /**
   * A forget's WAL checkpoint did not complete: the WAL may still hold a destroyed key. `timer` tries
   * again; `warned`: a failure other than a reader was logged (once, not at every try).
   */
  #pending: { timer: ReturnType<typeof setTimeout> | undefined; warned: boolean } | undefined;

  constructor(options: SqliteSubjectKeyStoreOptions) {
    this.#logger = options.logger ?? consoleLogger();
    this.#migrate = options.migrate ?? true;
    if (options.store !== undefined && options.database === undefined) {
      // Its connection is read at first use, not here: an event store makes its key store before it
      // opens its file (the key store goes to its base class's constructor).
      this.#store = options.store;
      return;
    }
    this.#database = resolveConnection(options, 'SqliteSubjectKeyStore', false).database;
    secureDelete(this.#database);
  }

  /** The connection the keys live on (an event store's, or the handle you passed). */
  get database(): Database.Database {
    if (this.#database !== undefined) return this.#database;
    const database = this.#store?.database;
    if (database === undefined || !database.open) throw new StoreClosedError('event store shared by this subject key store');
    if (this.#migrate) migrateSqlite(database);
    secureDelete(database);
    this.#database = database;
    return database;
  }

  async keyFor(subject: string): Promise<SubjectKey> {
    checkSubject(subject);
    return this.#run(`find the key of subject "${subject}"`, (s) => {
      const row = s.latest.get(subject);
      if (row === undefined) return s.create.immediate(subject, true);
      if (row[1] === null) throw new SubjectForgottenError(subject);
      return keyOf(row);
    });
  }

  async keysById(kids: readonly string[]): Promise<Map<string, Uint8Array | null>> {
    const found = new Map<string, Uint8Array | null>();
    if (kids.length === 0) return found;
    const rows = this.#run('read subject keys', (s) => s.byKids.all(JSON.stringify([...new Set(kids)])));
    for (const row of rows) found.set(row[0], row[1] === null ? null : keyOf(row).key);
    return found;
  }

  async forget(subject: string): Promise<ForgetResult> {
    checkSubject(subject);
    const result = this.#run(`forget subject "${subject}"`, (s) => s.forget.immediate(subject));
    if (result.keysDestroyed > 0) this.#checkpoint(subject);
    return result;
  }

  async allowNewKey(subject: string): Promise<SubjectKey> {
    checkSubject(subject);
    return this.#run(`allow a new key for subject "${subject}"`, (s) => s.create.immediate(subject, false));
  }

  async isForgotten(subject: string): Promise<boolean> {
    checkSubject(subject);
    return this.#run(`read whether subject "${subject}" was forgotten`, (s) => s.isForgotten.get(subject) === 1);
  }

  /**
   * Moves the page without the destroyed key into the file and empties the WAL, without waiting: the
   * busy timeout is 0 meanwhile (this is synchronous, so nothing else runs on the connection), as a
   * reader of another connection can hold a checkpoint back for as long as it reads. When it does not
   * complete, it is left pending (see #retryLater).
   */
  #checkpoint(subject: string): void {
    const database = this.database;
    if (database.memory) return;
    const outcome = this.#tryCheckpoint(database);
    // The WAL is empty: whatever an earlier forget left pending is done too.
    if (outcome === 'done') return this.#settle();
    if (outcome === 'in transaction') {
      // Inside a transaction of the caller's, the forget is not even committed yet: it is tried once
      // that transaction is over (and does no harm if it was rolled back).
    } else if (outcome.busy) {
      this.#logger.debug(
        { subject, walFrames: outcome.walFrames, checkpointed: outcome.checkpointed },
        `The WAL checkpoint after forgetting subject "${subject}" was held back by another connection's read; it is tried again until that read is over`,
      );
    } else {
      this.#warn(`The WAL checkpoint after forgetting subject "${subject}" failed (the subject is forgotten: its key is gone from the table); it is tried again`, {
        subject,
        err: outcome.error,
      });
    }
    this.#retryLater();
  }

  /** A pending checkpoint tried again: by the timer, and before each use of the key store. */
  #retryCheckpoint(database: Database.Database): void {
    const outcome = this.#tryCheckpoint(database);
    if (outcome === 'done') {
      this.#settle();
      this.#logger.debug({}, 'The WAL checkpoint held back after a forget is done: the WAL holds no destroyed key any more');
    } else if (outcome !== 'in transaction' && !outcome.busy) {
      this.#warn('The WAL checkpoint held back after a forget failed again; it is tried again', { err: outcome.error });
    }
  }

  /** One wal_checkpoint(TRUNCATE) with the busy timeout at 0: done when every WAL frame was moved and the WAL emptied. */
  #tryCheckpoint(database: Database.Database): 'done' | 'in transaction' | { busy: true; walFrames: number; checkpointed: number } | { busy: false; error: unknown } {
    if (database.inTransaction) return 'in transaction';
    let busyTimeoutMs: number | undefined;
    try {
      busyTimeoutMs = database.pragma('busy_timeout', { simple: true }) as number;
      database.pragma('busy_timeout = 0');
      const [result] = database.pragma('wal_checkpoint(TRUNCATE)') as Array<{ busy: number; log: number; checkpointed: number }>;
      // Not in WAL mode (a handle of yours): busy 0, log and checkpointed -1, nothing to move.
      if (result === undefined || (result.busy === 0 && result.log === result.checkpointed)) return 'done';
      return { busy: true, walFrames: result.log, checkpointed: result.checkpointed };
    } catch (error) {
      if ((error as { code?: unknown }).code === 'SQLITE_BUSY') return { busy: true, walFrames: -1, checkpointed: -1 };
      return { busy: false, error };
    } finally {
      if (busyTimeoutMs !== undefined && database.open) database.pragma(`busy_timeout = ${busyTimeoutMs}`);
    }
  }

  /**
   * Keeps the checkpoint pending and tries it again on a timer until it completes or the connection
   * closes. Unref'd: a pending checkpoint never keeps the process alive (the last connection to close
   * checkpoints and removes the WAL anyway).
   */
  #retryLater(): void {
    const pending = (this.#pending ??= { timer: undefined, warned: false });
    if (pending.timer !== undefined) return;
    pending.timer = setTimeout(() => {
      pending.timer = undefined;
      if (this.#pending !== pending) return;
      const database = this.#database;
      if (database === undefined || !database.open) return this.#settle();
      this.#retryCheckpoint(database);
      if (this.#pending === pending) this.#retryLater();
    }, RETRY_CHECKPOINT_MS);
    pending.timer.unref();
  }

  #settle(): void {
    clearTimeout(this.#pending?.timer);
    this.#pending = undefined;
  }

  /** A failure other than a reader holding the checkpoint back: logged once while the checkpoint is pending. */
  #warn(message: string, fields: Record<string, unknown>): void {
    const pending = (this.#pending ??= { timer: undefined, warned: false });
    if (pending.warned) return;
    pending.warned = true;
    this.#logger.warn(fields, message);
  }

  #run<T>(operation: string, fn: (statements: Statements) => T): T {
    const database = this.database;
    // The store is in use: the read that held a forget's checkpoint back may be over by now.
    if (this.#pending !== undefined) this.#retryCheckpoint(database);
    try {
      return fn(statements(database));
    } catch (error) {
      if (isEskitError(error)) throw error;
      throw translateSqliteError(error, database, operation);
    }
  }
}

/** Freed bytes are overwritten with zeros on this connection, so a destroyed key's bytes do not linger in the page. */
function secureDelete(database: Database.Database): void {
  try {
    database.pragma('secure_delete = ON');
  } catch (error) {
    throw translateSqliteError(error, database, 'turn on secure_delete for the subject keys');
  }
}
