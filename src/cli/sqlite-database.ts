import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from '../sqlite/driver.js';
import { isEskitError } from '../core/errors.js';
import type { EventShape } from '../core/event.js';
import { configureSqlite, DEFAULT_BUSY_TIMEOUT_MS } from '../sqlite/connection.js';
import { translateSqliteError } from '../sqlite/errors.js';
import { migrateSqlite, sqliteMigrations, sqliteSchemaVersion } from '../sqlite/migrations.js';
import { SQLITE_NOW_MS } from '../sqlite/sqlite-checkpoint-store.js';
import { SqliteDeadLetterStore } from '../sqlite/sqlite-dead-letter-store.js';
import { SqliteEventStore } from '../sqlite/sqlite-event-store.js';
import type { AdapterStore, CheckpointRow, CliDatabase, DeadLetterCount, LeaseRow, OpenOptions, ResetOutcome, ViewRow } from './database.js';
import { heldRefusal, viewRefusal } from './database.js';
import { CliError, messageOf, unknownName } from './errors.js';
import type { DatabaseTarget } from './target.js';

type SqliteTarget = Extract<DatabaseTarget, { kind: 'sqlite' }>;

const LATEST = sqliteMigrations[sqliteMigrations.length - 1]?.version ?? 0;

/** Opens an eskit SQLite file. Never creates one unless `create` (migrate): a typo must not make a new, empty database. */
export async function openSqliteDatabase(target: SqliteTarget, options: OpenOptions): Promise<CliDatabase> {
  const { path } = target;
  if (!existsSync(path)) {
    if (!options.create) {
      throw new CliError(`no SQLite database at ${path}`, { hint: `Check --db; \`eskit migrate --db ${target.display}\` creates a new one.` });
    }
    if (!existsSync(dirname(path))) {
      throw new CliError(`the directory ${dirname(path)} does not exist`, { hint: 'Create it first, or fix the path in --db.' });
    }
  }
  let database: Database.Database;
  try {
    database = new Database(path, { fileMustExist: !options.create, timeout: DEFAULT_BUSY_TIMEOUT_MS });
  } catch (error) {
    throw new CliError(`cannot open SQLite database ${path}: ${messageOf(error)}`, { hint: 'Check --db and the file permissions.', cause: error });
  }
  let version: number;
  try {
    version = readVersion(database, target);
    if (options.requireMigrated) assertMigrated(version, target);
    configureSqlite(database);
  } catch (error) {
    database.close();
    throw error;
  }
  const store = new SqliteEventStore<EventShape>({ database, migrate: false, registry: options.registry });
  const deadLetters = new SqliteDeadLetterStore({ store, migrate: false });
  return new SqliteCliDatabase(target, database, store, deadLetters, version);
}

function readVersion(database: Database.Database, target: SqliteTarget): number {
  try {
    return sqliteSchemaVersion(database);
  } catch (error) {
    if (isEskitError(error)) throw error;
    throw new CliError(`cannot read ${target.path} as a SQLite database: ${messageOf(error)}`, {
      hint: 'Is --db pointing at an eskit SQLite file?',
      cause: error,
    });
  }
}

function assertMigrated(version: number, target: SqliteTarget): void {
  if (version >= LATEST) return;
  const what = version === 0 ? `${target.path} has no eskit tables (it was never migrated)` : `${target.path} is at schema version ${version}, this eskit needs ${LATEST}`;
  throw new CliError(what, { hint: `Run \`eskit migrate --db ${target.display}\` first.` });
}

type Row = Record<string, unknown>;

class SqliteCliDatabase implements CliDatabase {
  readonly latestSchemaVersion = LATEST;
  readonly adapter: AdapterStore<EventShape>;

  constructor(
    readonly target: SqliteTarget,
    readonly database: Database.Database,
    readonly store: SqliteEventStore<EventShape>,
    readonly deadLetters: SqliteDeadLetterStore,
    public schemaVersion: number,
  ) {
    this.adapter = { backend: 'sqlite', store };
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

  async leases(): Promise<LeaseRow[]> {
    return this.#leases();
  }

  async views(): Promise<ViewRow[]> {
    if (!this.#hasTable('eskit_view_versions')) return [];
    const rows = this.#all(
      'read the view versions',
      'SELECT name, version, generation, rebuild_id IS NOT NULL AS rebuilding, updated_at FROM eskit_view_versions ORDER BY name',
    );
    return rows.map((row) => ({
      name: row.name as string,
      version: row.version as number,
      generation: row.generation as number,
      rebuilding: row.rebuilding === 1,
      updatedAt: new Date(row.updated_at as number),
    }));
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
  async resetCheckpoint(name: string, position: number, force: boolean): Promise<ResetOutcome> {
    const views = new Set((await this.views()).map((view) => view.name));
    if (views.has(name)) throw viewRefusal(name);
    const db = this.database;
    return this.#run(`reset checkpoint "${name}"`, () =>
      db
        .transaction((): ResetOutcome => {
          const checkpoint = db.prepare('SELECT position, fencing_token FROM eskit_checkpoints WHERE name = ?').safeIntegers(false).get(name) as Row | undefined;
          if (checkpoint === undefined) {
            const known = (db.prepare('SELECT name FROM eskit_checkpoints ORDER BY name').pluck().all() as string[]).filter((n) => !views.has(n));
            throw unknownName('subscription or automation', name, known);
          }
          const lease = this.#leases(name)[0];
          if (lease?.held && !force) throw heldRefusal(name, lease);
          const checkpointToken = checkpoint.fencing_token as number;
          let fencingToken: number | undefined;
          let fencing: ResetOutcome['fencing'];
          if (lease !== undefined) {
            fencingToken = Math.max(lease.fencingToken ?? 0, checkpointToken) + 1;
            db.prepare('UPDATE eskit_leases SET fencing_token = ?, holder = NULL, expires_at = NULL WHERE name = ?').run(fencingToken, name);
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
            position,
            fencingToken ?? null,
            name,
          );
          const previous = checkpoint.position === null ? undefined : (checkpoint.position as number);
          return { previous, position, fencingToken, heldBy: lease?.held ? lease : undefined, fencing };
        })
        .immediate(),
    );
  }

  async migrate(): Promise<{ applied: number[]; version: number }> {
    const applied = migrateSqlite(this.database);
    this.schemaVersion = sqliteSchemaVersion(this.database);
    return { applied, version: this.schemaVersion };
  }

  async close(): Promise<void> {
    await this.store.close();
    await this.deadLetters.close();
    if (this.database.open) this.database.close();
  }

  #leases(name?: string): LeaseRow[] {
    const rows = this.#all(
      'read the leases',
      `SELECT name, fencing_token, holder, expires_at,
              holder IS NOT NULL AND expires_at IS NOT NULL AND expires_at >= ${SQLITE_NOW_MS} AS held
         FROM eskit_leases ${name === undefined ? '' : 'WHERE name = ?'} ORDER BY name`,
      name === undefined ? [] : [name],
    );
    return rows.map((row) => {
      const lease: LeaseRow = {
        name: row.name as string,
        fencingToken: row.fencing_token as number,
        holder: (row.holder as string | null) ?? undefined,
        held: row.held === 1,
      };
      if (row.expires_at !== null) lease.expiresAt = new Date(row.expires_at as number);
      return lease;
    });
  }

  #hasTable(name: string): boolean {
    return this.#run('read the schema', () => this.database.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(name) !== undefined);
  }

  #all(what: string, sql: string, values: unknown[] = []): Row[] {
    return this.#run(what, () => this.database.prepare(sql).safeIntegers(false).all(...values) as Row[]);
  }

  #run<T>(what: string, operation: () => T): T {
    try {
      return operation();
    } catch (error) {
      if (isEskitError(error)) throw error;
      throw translateSqliteError(error, this.database, what);
    }
  }
}
