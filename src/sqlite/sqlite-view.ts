// SQLite's side of the SQL views (see SqlViews in core): the versions table, each view's tables,
// checkpoint and rebuilds in the event store's file. What evolve writes with is in view-tx.ts.
import type Database from 'better-sqlite3';
import type { CheckpointInfo } from '../core/checkpoint.js';
import { InvalidArgumentError, PermanentFailure, ViewFencedError } from '../core/errors.js';
import type { EventShape, Recorded } from '../core/event.js';
import type { EventStore } from '../core/store.js';
import { storedTypesOf } from '../core/store-base.js';
import { CATEGORY_SQL } from './sqlite-event-store.js';
import { assertOwnTables, checkTableName, isViewCheckpoint, rebuildFingerprint, setupNames, shadowName } from '../core/view-backend.js';
import type { RebuildStart, SqlViewBackend, SqlViews, SqlViewSetup, SqlViewSpec, ViewMeta } from '../core/view-backend.js';
import { translateSqliteError } from './errors.js';
import { saveSqliteCheckpoint, SQLITE_NOW_MS, SqliteCheckpointStore } from './sqlite-checkpoint-store.js';
import { quote, sqliteViewTx } from './view-tx.js';
import type { SqliteViewTx } from './view-tx.js';

const NOT_LIFECYCLE = " AND substr(type, 1, 8) <> '$stream.' AND substr(type, 1, 9) <> '$subject.'"; // a view of every type never gets them (see readAll)

/**
 * The SQL views of a SQLite event store: each view's tables live in the store's file and use its
 * connection. `sqlite()` offers it as `backend.views`; `new SqlView({ backend, ... })` builds on it.
 * Construct it yourself only when composing the parts: `{ store, views: new SqliteViews({ store }) }`.
 * evolve must be synchronous: a better-sqlite3 transaction cannot wait for a promise.
 */
export class SqliteViews<E extends EventShape = EventShape> implements SqlViews<E, SqliteViewTx, void> {
  readonly #store: EventStore<E> & { readonly database: Database.Database };

  constructor(options: { store: EventStore<E> & { readonly database: Database.Database } }) {
    if (typeof options?.store?.database?.prepare !== 'function') throw new InvalidArgumentError('SqliteViews needs { store }: a SqliteEventStore.');
    this.#store = options.store;
  }

  create(spec: SqlViewSpec<E, SqliteViewTx, void>): SqlViewBackend<E> {
    return new SqliteViewBackend(this.#store, spec);
  }
}

// The CLI config's context for SQLite carries these views (see EskitConfigViews); as in
// driver.ts, declared by the adapter so that eskit/cli names no adapter.
declare module '../cli/config.js' {
  interface EskitConfigViews<E extends EventShape> {
    sqlite: SqliteViews<E>;
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

interface ShadowRow {
  rebuild_id: string;
  generation: number;
  tables: string;
  fingerprint: string;
  position: number;
}

const SHADOWS = 'eskit_view_shadows';
// The shadow tables of a view's rebuild, while there are any: the rebuild that created or took them
// over last (equal to the versions table's rebuild_id unless a rebuilder that keeps no such row took
// them since), their generation and tables (JSON), what built them (rebuildFingerprint), and their
// checkpoint, committed with each shadow batch, from which a rebuild whose process died is resumed.
// A table of its own, as on PostgreSQL, where every live transaction reads the versions row FOR SHARE
// and a shadow batch updating that row would queue behind them (and they behind its commit).
const CREATE_SHADOWS = `
  CREATE TABLE IF NOT EXISTS ${SHADOWS} (
    name        TEXT    PRIMARY KEY,
    rebuild_id  TEXT    NOT NULL,
    generation  INTEGER NOT NULL,
    tables      TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    position    INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
  )`;

/** The checkpoint rows named like view @view's (`isViewCheckpoint` keeps its own among them). */
const VIEW_CHECKPOINTS = "(name = @view OR substr(name, 1, length(@view) + 1) = @view || '#')";

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
  readonly #spec: SqlViewSpec<E, SqliteViewTx, void>;
  readonly #fingerprint: string;
  readonly #types: readonly string[] | undefined;
  readonly #storedTypes: readonly string[] | undefined;
  /** The category filter as SQL (`AND <category> = ?`), '' for a view of every stream. */
  readonly #inCategory: string;
  readonly #category: string[];
  readonly #store: EventStore<E>;
  readonly #checkpoints: SqliteCheckpointStore;
  readonly #statements = new Map<string, Database.Statement>();
  readonly #live: SqliteViewTx;
  #shadow: { generation: number; tx: SqliteViewTx } | undefined;
  #liveTransaction: Database.Transaction<(events: readonly Recorded<E>[], generation: number, token: number | undefined, checkpoint: string) => void> | undefined;

  constructor(store: EventStore<E> & { readonly database: Database.Database }, spec: SqlViewSpec<E, SqliteViewTx, void>) {
    this.#db = store.database;
    this.#name = spec.name;
    this.#setup = spec.setup;
    this.#spec = spec;
    this.#fingerprint = rebuildFingerprint(spec);
    this.#types = spec.types;
    // What a typed read of the view's types selects (old names, split types), for the SQL below.
    this.#storedTypes = storedTypesOf(store, spec.types);
    this.#inCategory = spec.category === undefined ? '' : ` AND ${CATEGORY_SQL} = ?`;
    this.#category = spec.category === undefined ? [] : [spec.category];
    this.#store = store;
    this.#checkpoints = new SqliteCheckpointStore({ store: { database: this.#db }, migrate: false });
    this.#live = sqliteViewTx(this.#db, this.#name, (name) => name);
  }

  table(name: string): string {
    return quote(name);
  }

  async ensureSetup(version: number): Promise<ViewMeta> {
    return this.#run('set up the view', () => {
      this.#db.exec(CREATE_VERSIONS);
      // Also on a database whose views were set up before rebuilds kept a checkpoint.
      this.#db.exec(CREATE_SHADOWS);
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

  loadCheckpoint(checkpoint: string): Promise<number | undefined> {
    return this.#checkpoints.load(checkpoint);
  }

  claimCheckpoint(checkpoint: string, fencingToken: number): Promise<number | undefined> {
    return this.#checkpoints.claim(checkpoint, fencingToken);
  }

  async listCheckpoints(): Promise<CheckpointInfo[]> {
    const rows = this.#run('list the view\'s checkpoints', () =>
      this.#prepare(`SELECT name, position, fencing_token, updated_at FROM eskit_checkpoints WHERE ${VIEW_CHECKPOINTS} AND position IS NOT NULL ORDER BY name`)
        .raw()
        .all({ view: this.#name }) as Array<[string, number, number, number]>,
    );
    return rows
      .filter(([name]) => isViewCheckpoint(this.#name, name))
      .map(([name, position, fencingToken, updatedAt]) => ({ name, position, fencingToken, updatedAt: new Date(updatedAt) }));
  }

  async applyLive(events: readonly Recorded<E>[], generation: number, fencingToken: number | undefined, checkpoint: string): Promise<void> {
    this.#liveTransaction ??= this.#db.transaction((batch, expected, token, name) => {
      this.#checkGeneration(expected);
      this.#apply(batch, this.#live);
      saveSqliteCheckpoint(this.#db, name, (batch[batch.length - 1] as Recorded<E>).position, token);
    });
    const transaction = this.#liveTransaction;
    this.#run(`update view "${this.#name}"`, () => transaction.immediate(events, generation, fencingToken, checkpoint));
  }

  async saveCheckpoint(checkpoint: string, position: number, generation: number, fencingToken: number | undefined): Promise<void> {
    this.#run(`save the checkpoint of view "${this.#name}"`, () =>
      this.#db
        .transaction(() => {
          this.#checkGeneration(generation);
          saveSqliteCheckpoint(this.#db, checkpoint, position, fencingToken);
        })
        .immediate(),
    );
  }

  async lastRelevant(after: number, upTo: number): Promise<number> {
    return this.#run('read the log', () => {
      if (this.#storedTypes === undefined) {
        // The last event but a lifecycle one (a view of every type never gets those): walking
        // positions down, or the category index, it stops at the first.
        const statement = this.#prepare(`SELECT max(position) FROM eskit_events WHERE position > ? AND position <= ?${this.#inCategory}${NOT_LIFECYCLE}`).pluck();
        return (statement.get(after, upTo, ...this.#category) as number | null) ?? 0;
      }
      // One indexed look-up per type, on (type, position).
      const statement = this.#prepare(`SELECT max(position) FROM eskit_events WHERE type = ? AND position > ? AND position <= ?${this.#inCategory}`).pluck();
      let last = 0;
      for (const type of new Set(this.#storedTypes)) last = Math.max(last, (statement.get(type, after, upTo, ...this.#category) as number | null) ?? 0);
      return last;
    });
  }

  async countRelevant(after: number, upTo: number): Promise<number> {
    return this.#run('count events', () => {
      if (this.#storedTypes === undefined) {
        const statement = this.#prepare(`SELECT count(*) FROM eskit_events WHERE position > ? AND position <= ?${this.#inCategory}${NOT_LIFECYCLE}`).pluck();
        return statement.get(after, upTo, ...this.#category) as number;
      }
      const statement = this.#prepare(`SELECT count(*) FROM eskit_events WHERE type = ? AND position > ? AND position <= ?${this.#inCategory}`).pluck();
      let count = 0;
      for (const type of new Set(this.#storedTypes)) count += statement.get(type, after, upTo, ...this.#category) as number;
      return count;
    });
  }

  async beginRebuild(rebuildId: string, options: { fresh?: boolean } = {}): Promise<RebuildStart> {
    return this.#run(`start rebuilding view "${this.#name}"`, () =>
      this.#db
        .transaction((): RebuildStart => {
          const meta = this.#meta();
          if (!meta) throw new ViewFencedError(this.#name, 'superseded');
          const generation = meta.generation + 1;
          const resumeFrom = options.fresh === true ? undefined : this.#resumable(meta.rebuildId, generation);
          this.#prepare(`UPDATE ${VERSIONS} SET rebuild_id = ? WHERE name = ?`).run(rebuildId, this.#name);
          if (resumeFrom !== undefined) {
            this.#prepare(`UPDATE ${SHADOWS} SET rebuild_id = ?, updated_at = ${SQLITE_NOW_MS} WHERE name = ?`).run(rebuildId, this.#name);
            return { generation, resumeFrom };
          }
          this.#dropShadow(generation);
          const tables = this.#create((name) => shadowName(name, generation));
          assertOwnTables(this.#name, tables, meta.tables, (name) => this.#kind(name) === 'table');
          this.#prepare(
            `INSERT INTO ${SHADOWS} (name, rebuild_id, generation, tables, fingerprint, position, updated_at) VALUES (?, ?, ?, ?, ?, 0, ${SQLITE_NOW_MS})
             ON CONFLICT (name) DO UPDATE SET rebuild_id = excluded.rebuild_id, generation = excluded.generation, tables = excluded.tables,
               fingerprint = excluded.fingerprint, position = 0, updated_at = excluded.updated_at`,
          ).run(this.#name, rebuildId, generation, JSON.stringify(tables), this.#fingerprint);
          return { generation, resumeFrom: 0 };
        })
        .immediate(),
    );
  }

  /**
   * The checkpoint of shadow tables of `generation` that a rebuild of this code can go on with: the
   * rebuild that last owned them kept it (`owner`, not one that keeps none), they were built with
   * this code, and they are all there. undefined: start over.
   */
  #resumable(owner: string | null, generation: number): number | undefined {
    const row = this.#prepare(`SELECT rebuild_id, generation, tables, fingerprint, position FROM ${SHADOWS} WHERE name = ?`).get(this.#name) as ShadowRow | undefined;
    if (!row || row.rebuild_id !== owner || row.generation !== generation || row.fingerprint !== this.#fingerprint) return undefined;
    const tables = JSON.parse(row.tables) as string[];
    return tables.every((name) => this.#kind(shadowName(name, generation)) === 'table') ? row.position : undefined;
  }

  async applyShadow(events: readonly Recorded<E>[], rebuildId: string, generation: number): Promise<void> {
    const tx = this.#shadowTx(generation);
    this.#run(`rebuild view "${this.#name}"`, () =>
      this.#db
        .transaction(() => {
          this.#checkRebuild(rebuildId);
          this.#apply(events, tx);
          const position = events[events.length - 1]?.position;
          if (position !== undefined) {
            this.#prepare(`UPDATE ${SHADOWS} SET position = ?, updated_at = ${SQLITE_NOW_MS} WHERE name = ? AND rebuild_id = ?`).run(position, this.#name, rebuildId);
          }
        })
        .immediate(),
    );
  }

  async swap(
    rebuildId: string,
    generation: number,
    position: number,
    version: number,
    checkpoints: readonly string[],
  ): Promise<{ position: number; applied: number } | 'behind'> {
    // The live view may be ahead of the shadow by what was appended during the last round. Those events
    // are read here and applied inside the swap's transaction. Between this read and that transaction
    // only microtasks run (the driver is synchronous), so nothing in this process can append or move
    // the live view; another process doing so shows up as 'behind', and the rebuild goes round again.
    const head = await this.#store.headPosition();
    const tail: Recorded<E>[] = [];
    for await (const event of this.#store.readAll({ after: position, types: this.#types, category: this.#category[0] })) tail.push(event);
    const upTo = Math.max(position, head, tail[tail.length - 1]?.position ?? 0);
    let outcome: { position: number; applied: number } | 'behind';
    try {
      outcome = this.#run(`swap in the rebuilt view "${this.#name}"`, () => this.#db.transaction(() => this.#swap(rebuildId, generation, upTo, version, tail, checkpoints)).immediate());
    } catch (error) {
      // Rolled back with the rest; the next round applies these events with the view's failure handling.
      if (error instanceof TailFailed) return 'behind';
      throw error;
    }
    if (outcome !== 'behind') this.#shadow = undefined;
    return outcome;
  }

  #swap(
    rebuildId: string,
    generation: number,
    upTo: number,
    version: number,
    tail: readonly Recorded<E>[],
    checkpoints: readonly string[],
  ): { position: number; applied: number } | 'behind' {
    const meta = this.#checkRebuild(rebuildId);
    const lanes = (this.#prepare(`SELECT name, position FROM eskit_checkpoints WHERE ${VIEW_CHECKPOINTS}`).raw().all({ view: this.#name }) as Array<[string, number | null]>).filter(
      ([name]) => isViewCheckpoint(this.#name, name),
    );
    // Any lane further than the shadow (a partition passes the others' events too): another round.
    if (lanes.some(([, at]) => (at ?? 0) > upTo)) return 'behind';
    const tx = this.#shadowTx(generation);
    try {
      if (tail.length > 0) this.#apply(tail, tx);
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
    this.#prepare(`DELETE FROM ${SHADOWS} WHERE name = ?`).run(this.#name);
    // Every lane of every partition count the view has run with goes to the swap position, the
    // rebuilder's own ones last (the latest saved: the layout in use), so that whichever count starts
    // next begins there. No token: the swap is not the leader. The leaders' next writes fail the
    // generation check, and they reload these.
    const own = new Set(checkpoints);
    for (const name of [...lanes.map(([name]) => name).filter((name) => !own.has(name)), ...own]) saveSqliteCheckpoint(this.#db, name, upTo);
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
          this.#prepare(`DELETE FROM ${SHADOWS} WHERE name = ?`).run(this.#name);
        })
        .immediate(),
    );
  }

  #shadowTx(generation: number): SqliteViewTx {
    if (this.#shadow?.generation !== generation) this.#shadow = { generation, tx: sqliteViewTx(this.#db, this.#name, (name) => shadowName(name, generation)) };
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

  #apply(events: readonly Recorded<E>[], tx: SqliteViewTx): void {
    const { evolve, evolveBatch } = this.#spec;
    if (evolveBatch) this.#refuseAsync(evolveBatch(events, tx));
    else for (const event of events) this.#refuseAsync((evolve as NonNullable<typeof evolve>)(event, tx));
  }

  #refuseAsync(result: unknown): void {
    if (typeof result === 'object' && result !== null && typeof (result as { then?: unknown }).then === 'function') {
      (result as Promise<unknown>).then(undefined, () => undefined);
      throw new PermanentFailure(
        `View "${this.#name}" (SQLite): evolve returned a promise. It must be synchronous: a better-sqlite3 transaction cannot wait for one. ` +
          'Do the async work elsewhere (an automation), or use the data in the event.',
      );
    }
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
