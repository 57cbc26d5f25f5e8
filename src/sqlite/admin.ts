import type Database from 'better-sqlite3';
import { checkReset, heldCheckpoint, VIEW_ROW_COUNT_CAP, joinSubscriptions, unknownCheckpoint, viewCheckpoint } from '../core/admin.js';
import type { Admin, CheckpointRow, DeadLetterCount, LockRow, MigrateOutcome, ResetOptions, ResetOutcome, SchemaState, SubscriptionRow, ViewRow, ViewTableCount } from '../core/admin.js';
import { isEskitError, StoreClosedError } from '../core/errors.js';
import { translateSqliteError } from './errors.js';
import { migrateSqlite, SQLITE_MIGRATIONS, sqliteSchemaVersion } from './migrations.js';
import { SQLITE_NOW_MS } from './sqlite-checkpoint-store.js';
import { SqliteRunnerStatusStore } from './sqlite-runner-status.js';

const LATEST = SQLITE_MIGRATIONS[SQLITE_MIGRATIONS.length - 1]?.version ?? 0;

type Row = Record<string, unknown>;

export interface SqliteAdminOptions {
  /** The event store whose connection (and file) the admin reads. */
  store: { readonly database: Database.Database; readonly closed: boolean; headPosition(): Promise<number> };
  /** Default true: the status rows' table is created on first use (as the other stores do). */
  migrate?: boolean;
}

/**
 * The admin surface over one SQLite file: its checkpoints, leases, view versions, dead letters and
 * completions, read on the event store's connection. Locks are lease rows, judged by SQLite's clock.
 */
export class SqliteAdmin implements Admin {
  readonly runners: SqliteRunnerStatusStore;
  readonly #store: SqliteAdminOptions['store'];

  constructor(options: SqliteAdminOptions) {
    this.#store = options.store;
    this.runners = new SqliteRunnerStatusStore({ store: options.store, migrate: options.migrate });
  }

  get #db(): Database.Database {
    return this.#store.database;
  }

  async schema(): Promise<SchemaState> {
    return { version: this.#run('read the schema version', () => sqliteSchemaVersion(this.#db)), latest: LATEST, exists: true };
  }

  async migrate(): Promise<MigrateOutcome> {
    const applied = this.#run('migrate', () => migrateSqlite(this.#db));
    return { applied, version: (await this.schema()).version };
  }

  async subscriptions(): Promise<SubscriptionRow[]> {
    const head = await this.#store.headPosition();
    return joinSubscriptions(head, await this.checkpoints(), await this.locks());
  }

  async checkpoints(): Promise<CheckpointRow[]> {
    const rows = this.#all('read the checkpoints', 'SELECT name, position, fencing_token, updated_at FROM eskit_checkpoints ORDER BY name');
    return rows.map((row) => ({
      name: row.name as string,
      position: row.position === null ? undefined : (row.position as number),
      fencingToken: row.fencing_token as number,
      updatedAt: new Date(row.updated_at as number),
    }));
  }

  async locks(): Promise<LockRow[]> {
    return this.#leases();
  }

  async views(): Promise<ViewRow[]> {
    // Views create these tables when the first one starts (eskit_view_shadows since rebuilds keep
    // their shadow tables' checkpoint); migrations do not.
    if (!this.#hasTable('eskit_view_versions')) return [];
    // The shadow row of the rebuild that owns the view now (not one left by a rebuilder it took over from).
    const shadow = this.#hasTable('eskit_view_shadows')
      ? { columns: 's.position AS shadow_position, s.updated_at AS shadow_updated_at', join: 'LEFT JOIN eskit_view_shadows s ON s.name = v.name AND s.rebuild_id = v.rebuild_id' }
      : { columns: 'NULL AS shadow_position, NULL AS shadow_updated_at', join: '' };
    const rows = this.#all(
      'read the view versions',
      `SELECT v.name, v.version, v.generation, v.rebuild_id IS NOT NULL AS rebuilding, v.updated_at, ${shadow.columns}
       FROM eskit_view_versions v ${shadow.join} ORDER BY v.name`,
    );
    return rows.map((row) => ({
      name: row.name as string,
      version: row.version as number,
      generation: row.generation as number,
      rebuilding: row.rebuilding === 1,
      shadow: row.shadow_position === null ? undefined : { position: row.shadow_position as number, updatedAt: new Date(row.shadow_updated_at as number) },
      updatedAt: new Date(row.updated_at as number),
    }));
  }

  async viewTables(name: string): Promise<ViewTableCount[]> {
    if (!this.#hasTable('eskit_view_versions')) return [];
    const [row] = this.#all('read the view versions', 'SELECT tables FROM eskit_view_versions WHERE name = ?', [name]);
    if (row === undefined) return [];
    return (JSON.parse(row.tables as string) as string[]).map((table) => {
      const [count] = this.#all(`count the rows of view table ${table}`, `SELECT COUNT(*) AS n FROM (SELECT 1 FROM "${table.replace(/"/g, '""')}" LIMIT ${VIEW_ROW_COUNT_CAP + 1})`);
      const rows = Number(count?.n ?? 0);
      return { table, rows: Math.min(rows, VIEW_ROW_COUNT_CAP), capped: rows > VIEW_ROW_COUNT_CAP };
    });
  }

  async deadLetterCounts(): Promise<DeadLetterCount[]> {
    const rows = this.#all(
      'count dead letters',
      'SELECT source, stage, status, COUNT(*) AS count FROM eskit_dead_letters GROUP BY source, stage, status ORDER BY source, stage, status',
    );
    return rows.map((row) => ({ source: row.source as string, stage: row.stage as string, status: row.status as string, count: row.count as number }));
  }

  async completionSources(): Promise<string[]> {
    return this.#all('read completions', 'SELECT DISTINCT source FROM eskit_completions ORDER BY source').map((row) => row.source as string);
  }

  /**
   * One `BEGIN IMMEDIATE` transaction: the checks and the writes see the same state, and no lock
   * holder can renew or take the lease in between. Fencing: the lease row gets a token above every one
   * handed out and loses its holder, so the holder's next renewal fails (it gives up leadership within
   * a third of its ttl) and any checkpoint write it still makes with its old token is refused; the
   * checkpoint carries the new token, which the next leader (one above it) passes.
   */
  async resetCheckpoint(name: string, position: number, options?: ResetOptions): Promise<ResetOutcome> {
    const checked = checkReset(name, position, options);
    const views = new Set((await this.views()).map((view) => view.name));
    if (views.has(checked.name)) throw viewCheckpoint(checked.name);
    const db = this.#db;
    return this.#run(`reset checkpoint "${checked.name}"`, () =>
      db
        .transaction((): ResetOutcome => {
          const checkpoint = db.prepare('SELECT position, fencing_token FROM eskit_checkpoints WHERE name = ?').safeIntegers(false).get(checked.name) as Row | undefined;
          if (checkpoint === undefined) {
            const known = (db.prepare('SELECT name FROM eskit_checkpoints ORDER BY name').pluck().all() as string[]).filter((n) => !views.has(n));
            throw unknownCheckpoint(checked.name, known);
          }
          const lease = this.#leases(checked.name)[0];
          if (lease?.held && !checked.force) throw heldCheckpoint(checked.name, lease);
          const checkpointToken = checkpoint.fencing_token as number;
          let fencingToken: number | undefined;
          let fencing: ResetOutcome['fencing'];
          if (lease !== undefined) {
            fencingToken = Math.max(lease.fencingToken ?? 0, checkpointToken) + 1;
            db.prepare('UPDATE eskit_leases SET fencing_token = ?, holder = NULL, expires_at = NULL WHERE name = ?').run(fencingToken, checked.name);
            fencing = 'lease';
          } else if (checkpointToken > 0) {
            // Fenced by a lock registry in another database: one above the newest token it handed out
            // here is still at or below the next one it hands out.
            fencingToken = checkpointToken + 1;
            fencing = 'checkpoint';
          } else {
            fencing = 'none';
          }
          db.prepare(`UPDATE eskit_checkpoints SET position = ?, fencing_token = COALESCE(?, fencing_token), updated_at = ${SQLITE_NOW_MS} WHERE name = ?`).run(
            checked.position,
            fencingToken ?? null,
            checked.name,
          );
          const previous = checkpoint.position === null ? undefined : (checkpoint.position as number);
          return { name: checked.name, previous, position: checked.position, fencingToken, heldBy: lease?.held ? lease : undefined, fencing };
        })
        .immediate(),
    );
  }

  #leases(name?: string): LockRow[] {
    const rows = this.#all(
      'read the leases',
      `SELECT name, fencing_token, holder, expires_at,
              holder IS NOT NULL AND expires_at IS NOT NULL AND expires_at >= ${SQLITE_NOW_MS} AS held
         FROM eskit_leases ${name === undefined ? '' : 'WHERE name = ?'} ORDER BY name`,
      name === undefined ? [] : [name],
    );
    return rows.map((row) => {
      const held = row.held === 1;
      const lease: LockRow = {
        name: row.name as string,
        fencingToken: row.fencing_token as number,
        // A lease that expired still names its last holder, which holds nothing.
        holder: held ? ((row.holder as string | null) ?? undefined) : undefined,
        held,
      };
      if (row.expires_at !== null) lease.expiresAt = new Date(row.expires_at as number);
      return lease;
    });
  }

  #hasTable(name: string): boolean {
    return this.#run('read the schema', () => this.#db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(name) !== undefined);
  }

  #all(what: string, sql: string, values: unknown[] = []): Row[] {
    return this.#run(what, () => this.#db.prepare(sql).safeIntegers(false).all(...values) as Row[]);
  }

  #run<T>(what: string, operation: () => T): T {
    if (this.#store.closed) throw new StoreClosedError('event store of this admin surface');
    try {
      return operation();
    } catch (error) {
      if (isEskitError(error)) throw error;
      throw translateSqliteError(error, this.#db, what);
    }
  }
}
