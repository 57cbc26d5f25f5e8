import type Database from 'better-sqlite3';
import type { CheckpointInfo } from '../core/checkpoint.js';
import { InvalidArgumentError, PermanentFailure } from '../core/errors.js';
import type { EventShape, Recorded } from '../core/event.js';
import type { EventStore } from '../core/store.js';
import { ViewFencedError } from '../view/errors.js';
import { onConflict, quoteColumn, rowShape } from '../view/rows.js';
import type { RowValue, Upsert } from '../view/rows.js';
import { assertOwnTables, checkSqlViewOptions, checkTableName, setupNames, shadowName, SqlView } from '../view/sql-view.js';
import type { SqlViewBackend, SqlViewOptions, SqlViewSetup, ViewMeta } from '../view/sql-view.js';
import { translateSqliteError } from './errors.js';
import { saveCheckpointSync, SQLITE_NOW_MS, SqliteCheckpointStore } from './sqlite-checkpoint-store.js';

/** What `evolve` writes with: the connection, inside the view's transaction. */
export interface SqliteViewTx {
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

export interface SqliteViewOptions<E extends EventShape> extends SqlViewOptions<E> {
  /** A `SqliteEventStore`: the view's tables and checkpoint live in its database file, on its connection. */
  store: EventStore<E> & { readonly database: Database.Database };
  /**
   * Applies one event with `tx.db`, inside the transaction that also saves the checkpoint.
   * Synchronous (better-sqlite3 transactions cannot span an await); a throw rolls the batch back.
   */
  evolve: (event: Recorded<E>, tx: SqliteViewTx) => void;
}

/**
 * A read model in SQLite tables, updated exactly once per event: each batch's writes and the view's
 * checkpoint commit in one transaction (`BEGIN IMMEDIATE`, fenced by the leader's token), so a crash,
 * a kill or a stale leader leaves either all of a batch or none of it.
 *
 * ```ts
 * const carts = new SqliteView<CartEvent>({
 *   name: 'carts',
 *   store,
 *   types: ['ItemAdded'],
 *   setup: { version: 1, statements: (t) => [`CREATE TABLE ${t('carts')} (id TEXT PRIMARY KEY, items INTEGER NOT NULL)`] },
 *   evolve: (event, { prepare, table }) => {
 *     prepare(`INSERT INTO ${table('carts')} (id, items) VALUES (?, 1) ON CONFLICT (id) DO UPDATE SET items = items + 1`).run(event.streamId);
 *   },
 * });
 * await carts.start();
 * ```
 */
export class SqliteView<E extends EventShape = EventShape> extends SqlView<E> {
  /** The connection the view's tables are on (the event store's). */
  readonly database: Database.Database;

  constructor(options: SqliteViewOptions<E>) {
    checkSqlViewOptions('SqliteView', options);
    super(options, new SqliteViewBackend(options));
    this.database = options.store.database;
  }
}

interface MetaRow {
  version: number;
  generation: number;
  tables: string;
  rebuild_id: string | null;
}

const VERSIONS = 'eskit_view_versions';
// generation: incremented by every swap. tables: JSON array of the live tables' names. rebuild_id: the
// rebuild that owns the shadow tables right now (NULL when none runs).
const CREATE_VERSIONS = `
  CREATE TABLE IF NOT EXISTS ${VERSIONS} (
    name       TEXT    PRIMARY KEY,
    version    INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    tables     TEXT    NOT NULL,
    rebuild_id TEXT    NULL,
    updated_at INTEGER NOT NULL
  )`;

const MAX_CACHED_STATEMENTS = 1000;

const quote = (name: string): string => `"${name}"`;

/** evolve failed on an event of the swap's tail. */
class TailFailed extends Error {
  constructor(readonly error: unknown) {
    super('evolve failed on an event applied during the swap', { cause: error });
  }
}

class SqliteViewBackend<E extends EventShape> implements SqlViewBackend<E> {
  readonly #db: Database.Database;
  readonly #name: string;
  readonly #setup: SqlViewSetup;
  readonly #evolve: (event: Recorded<E>, tx: SqliteViewTx) => void;
  readonly #types: readonly string[] | undefined;
  readonly #store: EventStore<E>;
  readonly #checkpoints: SqliteCheckpointStore;
  readonly #statements = new Map<string, Database.Statement>();
  readonly #live: SqliteViewTx;
  #shadow: { generation: number; tx: SqliteViewTx } | undefined;
  #liveTransaction: Database.Transaction<(events: readonly Recorded<E>[], generation: number, token: number | undefined) => void> | undefined;

  constructor(options: SqliteViewOptions<E>) {
    this.#db = options.store.database;
    this.#name = options.name;
    this.#setup = options.setup;
    this.#evolve = options.evolve;
    this.#types = options.types;
    this.#store = options.store;
    this.#checkpoints = new SqliteCheckpointStore({ store: { database: this.#db }, migrate: false });
    this.#live = this.#tx((name) => name);
  }

  table(name: string): string {
    return quote(name);
  }

  async ensureSetup(version: number): Promise<ViewMeta> {
    return this.#run('set up the view', () => {
      this.#db.exec(CREATE_VERSIONS);
      return this.#db
        .transaction(() => {
          const existing = this.#meta();
          if (existing) return existing;
          const tables = this.#create((name) => name);
          this.#prepare(`INSERT INTO ${VERSIONS} (name, version, generation, tables, rebuild_id, updated_at) VALUES (?, ?, 0, ?, NULL, ${SQLITE_NOW_MS})`).run(
            this.#name,
            version,
            JSON.stringify(tables),
          );
          return { version, generation: 0, tables, rebuildId: null };
        })
        .immediate();
    });
  }

  async readMeta(): Promise<ViewMeta | undefined> {
    return this.#run('read the view version', () => this.#meta());
  }

  loadCheckpoint(): Promise<number | undefined> {
    return this.#checkpoints.load(this.#name);
  }

  claimCheckpoint(fencingToken: number): Promise<number | undefined> {
    return this.#checkpoints.claim(this.#name, fencingToken);
  }

  listCheckpoints(): Promise<CheckpointInfo[]> {
    return this.#checkpoints.list();
  }

  async applyLive(events: readonly Recorded<E>[], generation: number, fencingToken: number | undefined): Promise<void> {
    this.#liveTransaction ??= this.#db.transaction((batch, expected, token) => {
      this.#checkGeneration(expected);
      for (const event of batch) this.#apply(event, this.#live);
      saveCheckpointSync(this.#db, this.#name, (batch[batch.length - 1] as Recorded<E>).position, token);
    });
    const transaction = this.#liveTransaction;
    this.#run(`update view "${this.#name}"`, () => transaction.immediate(events, generation, fencingToken));
  }

  async saveCheckpoint(position: number, generation: number, fencingToken: number | undefined): Promise<void> {
    this.#run(`save the checkpoint of view "${this.#name}"`, () =>
      this.#db
        .transaction(() => {
          this.#checkGeneration(generation);
          saveCheckpointSync(this.#db, this.#name, position, fencingToken);
        })
        .immediate(),
    );
  }

  async lastRelevant(after: number, upTo: number): Promise<number> {
    if (this.#types === undefined) return upTo > after ? upTo : 0;
    // One indexed look-up per type, on (type, position).
    const statement = this.#prepare('SELECT max(position) FROM eskit_events WHERE type = ? AND position > ? AND position <= ?').pluck();
    return this.#run('read the log', () => {
      let last = 0;
      for (const type of new Set(this.#types)) last = Math.max(last, (statement.get(type, after, upTo) as number | null) ?? 0);
      return last;
    });
  }

  async countRelevant(after: number, upTo: number): Promise<number> {
    return this.#run('count events', () => {
      if (this.#types === undefined) {
        return this.#prepare('SELECT count(*) FROM eskit_events WHERE position > ? AND position <= ?').pluck().get(after, upTo) as number;
      }
      const statement = this.#prepare('SELECT count(*) FROM eskit_events WHERE type = ? AND position > ? AND position <= ?').pluck();
      let count = 0;
      for (const type of new Set(this.#types)) count += statement.get(type, after, upTo) as number;
      return count;
    });
  }

  async beginRebuild(rebuildId: string): Promise<number> {
    return this.#run(`start rebuilding view "${this.#name}"`, () =>
      this.#db
        .transaction(() => {
          const meta = this.#meta();
          if (!meta) throw new ViewFencedError(this.#name, 'superseded');
          const generation = meta.generation + 1;
          this.#prepare(`UPDATE ${VERSIONS} SET rebuild_id = ? WHERE name = ?`).run(rebuildId, this.#name);
          this.#dropShadow(generation);
          const tables = this.#create((name) => shadowName(name, generation));
          assertOwnTables(this.#name, tables, meta.tables, (name) => this.#kind(name) === 'table');
          return generation;
        })
        .immediate(),
    );
  }

  async applyShadow(events: readonly Recorded<E>[], rebuildId: string, generation: number): Promise<void> {
    const tx = this.#shadowTx(generation);
    this.#run(`rebuild view "${this.#name}"`, () =>
      this.#db
        .transaction(() => {
          this.#checkRebuild(rebuildId);
          for (const event of events) this.#apply(event, tx);
        })
        .immediate(),
    );
  }

  async swap(rebuildId: string, generation: number, position: number, version: number): Promise<{ position: number; applied: number } | 'behind'> {
    // The live view may be ahead of the shadow by what was appended during the last round. Those events
    // are read here and applied inside the swap's transaction. Between this read and that transaction
    // only microtasks run (the driver is synchronous), so nothing in this process can append or move
    // the live view; another process doing so shows up as 'behind', and the rebuild goes round again.
    const head = await this.#store.headPosition();
    const tail: Recorded<E>[] = [];
    for await (const event of this.#store.readAll({ after: position, types: this.#types })) tail.push(event);
    const upTo = Math.max(position, head, tail[tail.length - 1]?.position ?? 0);
    let outcome: { position: number; applied: number } | 'behind';
    try {
      outcome = this.#run(`swap in the rebuilt view "${this.#name}"`, () => this.#db.transaction(() => this.#swap(rebuildId, generation, upTo, version, tail)).immediate());
    } catch (error) {
      // Rolled back with the rest; the next round applies these events with the view's failure handling.
      if (error instanceof TailFailed) return 'behind';
      throw error;
    }
    if (outcome !== 'behind') this.#shadow = undefined;
    return outcome;
  }

  #swap(rebuildId: string, generation: number, upTo: number, version: number, tail: readonly Recorded<E>[]): { position: number; applied: number } | 'behind' {
    const meta = this.#checkRebuild(rebuildId);
    const live = this.#prepare('SELECT position FROM eskit_checkpoints WHERE name = ?').pluck().get(this.#name) as number | null | undefined;
    if ((live ?? 0) > upTo) return 'behind';
    const tx = this.#shadowTx(generation);
    try {
      for (const event of tail) this.#apply(event, tx);
    } catch (error) {
      throw new TailFailed(error);
    }
    const tables = setupNames(this.#name, this.#setup).filter((name) => this.#kind(shadowName(name, generation)) === 'table');
    assertOwnTables(this.#name, tables, meta.tables, (name) => this.#kind(name) === 'table');
    for (const name of new Set([...meta.tables, ...tables])) {
      if (this.#kind(name) === 'table') this.#db.exec(`DROP TABLE ${quote(name)}`);
    }
    for (const name of tables) this.#db.exec(`ALTER TABLE ${quote(shadowName(name, generation))} RENAME TO ${quote(name)}`);
    this.#prepare(`UPDATE ${VERSIONS} SET version = ?, generation = ?, tables = ?, rebuild_id = NULL, updated_at = ${SQLITE_NOW_MS} WHERE name = ?`).run(
      version,
      generation,
      JSON.stringify(tables),
      this.#name,
    );
    // No token: the swap is not the leader. The leader's next write fails the generation check.
    saveCheckpointSync(this.#db, this.#name, upTo);
    return { position: upTo, applied: tail.length };
  }

  async abandonRebuild(rebuildId: string, generation: number): Promise<void> {
    this.#shadow = undefined;
    this.#run(`drop the shadow tables of view "${this.#name}"`, () =>
      this.#db
        .transaction(() => {
          if (this.#meta()?.rebuildId !== rebuildId) return;
          this.#dropShadow(generation);
          this.#prepare(`UPDATE ${VERSIONS} SET rebuild_id = NULL WHERE name = ?`).run(this.#name);
        })
        .immediate(),
    );
  }

  #shadowTx(generation: number): SqliteViewTx {
    if (this.#shadow?.generation !== generation) this.#shadow = { generation, tx: this.#tx((name) => shadowName(name, generation)) };
    return this.#shadow.tx;
  }

  #meta(): (ViewMeta & { rebuildId: string | null }) | undefined {
    const row = this.#prepare(`SELECT version, generation, tables, rebuild_id FROM ${VERSIONS} WHERE name = ?`).get(this.#name) as MetaRow | undefined;
    if (!row) return undefined;
    return { version: row.version, generation: row.generation, tables: JSON.parse(row.tables) as string[], rebuildId: row.rebuild_id };
  }

  #checkGeneration(generation: number): void {
    const current = this.#prepare(`SELECT generation FROM ${VERSIONS} WHERE name = ?`).pluck().get(this.#name) as number | undefined;
    if (current !== generation) throw new ViewFencedError(this.#name, 'swapped');
  }

  #checkRebuild(rebuildId: string): ViewMeta {
    const meta = this.#meta();
    if (!meta || meta.rebuildId !== rebuildId) throw new ViewFencedError(this.#name, 'superseded');
    return meta;
  }

  /** Runs the setup with `map` naming the objects; returns the (unmapped) names that became tables. */
  #create(map: (name: string) => string): string[] {
    const names: string[] = [];
    const statements = this.#setup.statements((name) => {
      checkTableName(this.#name, name);
      if (!names.includes(name)) names.push(name);
      return quote(map(name));
    });
    for (const statement of statements) this.#db.exec(statement);
    return names.filter((name) => this.#kind(map(name)) === 'table');
  }

  #dropShadow(generation: number): void {
    for (const name of setupNames(this.#name, this.#setup)) {
      const shadow = shadowName(name, generation);
      if (this.#kind(shadow) === 'table') this.#db.exec(`DROP TABLE ${quote(shadow)}`);
    }
  }

  #kind(name: string): string | undefined {
    return this.#prepare('SELECT type FROM sqlite_master WHERE name = ?').pluck().get(name) as string | undefined;
  }

  #apply(event: Recorded<E>, tx: SqliteViewTx): void {
    const result = this.#evolve(event, tx) as unknown;
    if (typeof result === 'object' && result !== null && typeof (result as { then?: unknown }).then === 'function') {
      (result as Promise<unknown>).then(undefined, () => undefined);
      throw new PermanentFailure(
        `SqliteView "${this.#name}": evolve returned a promise. It must be synchronous: a better-sqlite3 transaction cannot wait for one. ` +
          'Do the async work elsewhere (an automation), or use the data in the event.',
      );
    }
  }

  #tx(map: (name: string) => string): SqliteViewTx {
    const db = this.#db;
    const cache = new Map<string, Database.Statement>();
    const upserts = new Map<string, Database.Statement>();
    const view = this.#name;
    const table = (name: string): string => quote(map(checkTableName(view, name)));
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

  /** The view's own statements, prepared once (plain numbers, whatever the connection's default). */
  #prepare(sql: string): Database.Statement {
    let statement = this.#statements.get(sql);
    if (statement === undefined) {
      statement = this.#db.prepare(sql).safeIntegers(false);
      this.#statements.set(sql, statement);
    }
    return statement;
  }

  #run<T>(operation: string, fn: () => T): T {
    try {
      return fn();
    } catch (error) {
      throw translateSqliteError(error, this.#db, operation);
    }
  }
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
