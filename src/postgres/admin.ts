import type pg from 'pg';
import { byName, checkReset, VIEW_ROW_COUNT_CAP, heldCheckpoint, joinSubscriptions, unknownCheckpoint, viewCheckpoint } from '../core/admin.js';
import type { Admin, CheckpointRow, DeadLetterCount, LockRow, MigrateOutcome, ResetOptions, ResetOutcome, SchemaState, SubscriptionRow, ViewRow, ViewTableCount } from '../core/admin.js';
import { isEskitError } from '../core/errors.js';
import { translateError } from './errors.js';
import { migratePostgres, POSTGRES_MIGRATIONS } from './migrations.js';
import { PostgresRunnerStatusStore } from './postgres-runner-status.js';
import { lockKey, quoteSchema } from './schema.js';
import { PostgresTableAccess } from './table-access.js';
import type { PostgresStoreHandle } from './table-access.js';
import { hearWhileCheckedOut } from './connection.js';

const LATEST = POSTGRES_MIGRATIONS.length;

/** The prefix PostgresLockRegistry puts before its holder id in its lock connection's application_name. */
const LOCK_APPLICATION = 'eskit-lock ';

type Row = Record<string, unknown>;
type Client = pg.Pool | pg.PoolClient;

export interface PostgresAdminOptions {
  /** The event store whose pool and schema the admin reads. */
  store: PostgresStoreHandle & { headPosition(): Promise<number> };
  /** Default true: the first call (but schema() and migrate()) migrates the schema, as the other stores do. */
  migrate?: boolean;
}

interface HeldLock {
  pid: number;
  applicationName: string | undefined;
  clientAddr: string | undefined;
}

/** The holder id in a lock connection's application_name, else the name itself. */
function holderOf(applicationName: string | undefined): string | undefined {
  if (applicationName === undefined) return undefined;
  return applicationName.startsWith(LOCK_APPLICATION) ? applicationName.slice(LOCK_APPLICATION.length) : applicationName;
}

/** The (classid, objid) pg_locks shows for a single-bigint advisory key: its high and low 32 bits. */
function lockObjects(key: string): string {
  const unsigned = BigInt.asUintN(64, BigInt(key));
  return `${unsigned >> 32n}/${unsigned & 0xffffffffn}`;
}

/**
 * The admin surface over one schema. Locks are session advisory locks, which keep no row: who holds
 * one is read from pg_locks (with the session from pg_stat_activity), by the database itself.
 */
export class PostgresAdmin implements Admin {
  readonly runners: PostgresRunnerStatusStore;
  readonly #store: PostgresAdminOptions['store'];
  readonly #access: PostgresTableAccess;
  readonly #s: string;

  constructor(options: PostgresAdminOptions) {
    this.#store = options.store;
    this.#access = new PostgresTableAccess({ store: options.store, migrate: options.migrate }, 'PostgresAdmin', 'admin surface');
    this.runners = new PostgresRunnerStatusStore({ store: options.store, migrate: options.migrate });
    this.#s = quoteSchema(options.store.schema);
  }

  async schema(): Promise<SchemaState> {
    const schema = this.#store.schema;
    const [found] = await this.#rows(
      `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1) AS has_schema,
              EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                       WHERE n.nspname = $1 AND c.relname = 'migrations') AS has_table`,
      [schema],
    );
    if (!found?.has_schema) return { version: 0, latest: LATEST, exists: false };
    if (!found.has_table) return { version: 0, latest: LATEST, exists: true };
    const [row] = await this.#rows(`SELECT max(version) AS version FROM ${this.#s}.migrations`);
    return { version: Number(row?.version ?? 0), latest: LATEST, exists: true };
  }

  async migrate(): Promise<MigrateOutcome> {
    let applied: number[];
    try {
      applied = await migratePostgres(this.#store.pool, this.#store.schema);
    } catch (error) {
      throw this.#translate(error);
    }
    return { applied, version: (await this.schema()).version };
  }

  async subscriptions(): Promise<SubscriptionRow[]> {
    const [head, checkpoints, locks] = await Promise.all([this.#store.headPosition(), this.checkpoints(), this.locks()]);
    return joinSubscriptions(head, checkpoints, locks);
  }

  async checkpoints(): Promise<CheckpointRow[]> {
    await this.#access.ready();
    const rows = await this.#rows(`SELECT name, position, fencing_token, updated_at FROM ${this.#s}.checkpoints ORDER BY name`);
    return rows
      .map((row) => ({
        name: row.name as string,
        position: row.position === null ? undefined : Number(row.position),
        fencingToken: Number(row.fencing_token),
        updatedAt: row.updated_at as Date,
      }))
      .sort((a, b) => byName(a.name, b.name));
  }

  /**
   * The keys are hashes, so the names are those the schema knows (checkpoints, views, dead-letter
   * sources, status rows, and rows of the older leases table). A name is listed when its lock is held,
   * or when it has used leader election (a fenced checkpoint or a leases row) and is free now.
   */
  async locks(): Promise<LockRow[]> {
    await this.#access.ready();
    return this.#locks(this.#store.pool);
  }

  async views(): Promise<ViewRow[]> {
    await this.#access.ready();
    return this.#views(this.#store.pool);
  }

  async viewTables(name: string): Promise<ViewTableCount[]> {
    await this.#access.ready();
    const [versions] = await this.#rows(`SELECT to_regclass($1) IS NOT NULL AS present`, [`${this.#s}.view_versions`]);
    if (versions?.present !== true) return [];
    const [row] = await this.#rows(`SELECT tables FROM ${this.#s}.view_versions WHERE name = $1`, [name]);
    if (row === undefined) return [];
    const counts: ViewTableCount[] = [];
    for (const table of row.tables as string[]) {
      const [count] = await this.#rows(`SELECT count(*) AS n FROM (SELECT 1 FROM ${this.#s}."${table.replace(/"/g, '""')}" LIMIT ${VIEW_ROW_COUNT_CAP + 1}) t`);
      const rows = Number(count?.n ?? 0);
      counts.push({ table, rows: Math.min(rows, VIEW_ROW_COUNT_CAP), capped: rows > VIEW_ROW_COUNT_CAP });
    }
    return counts;
  }

  async deadLetterCounts(): Promise<DeadLetterCount[]> {
    await this.#access.ready();
    const rows = await this.#rows(
      `SELECT source, stage, status, count(*) AS count FROM ${this.#s}.dead_letters GROUP BY source, stage, status ORDER BY source, stage, status`,
    );
    return rows.map((row) => ({ source: row.source as string, stage: row.stage as string, status: row.status as string, count: Number(row.count) }));
  }

  async completionSources(): Promise<string[]> {
    await this.#access.ready();
    return (await this.#rows(`SELECT DISTINCT source FROM ${this.#s}.completions ORDER BY source`)).map((row) => row.source as string);
  }

  /**
   * One transaction that locks the checkpoint row and gives it a token one above the one it holds:
   * the leader that claimed it (and every earlier one) is refused at its next checkpoint write (or a
   * view's next batch), gives up leadership, takes the lock again with a newer token and starts from
   * the reset position. Every later holder passes: tokens grow with every holder, so the next one's
   * is above the claimed one.
   */
  async resetCheckpoint(name: string, position: number, options?: ResetOptions): Promise<ResetOutcome> {
    const checked = checkReset(name, position, options);
    const views = new Set((await this.views()).map((view) => view.name));
    if (views.has(checked.name)) throw viewCheckpoint(checked.name);
    // views() made the access ready (open, migrated when allowed).
    let client: pg.PoolClient;
    try {
      client = await this.#store.pool.connect();
    } catch (error) {
      throw this.#translate(error);
    }
    const stopHearing = hearWhileCheckedOut(client);
    try {
      await this.#rows('BEGIN', [], client);
      try {
        const outcome = await this.#reset(client, checked.name, checked.position, checked.force, views);
        await this.#rows('COMMIT', [], client);
        return outcome;
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw error;
      }
    } finally {
      stopHearing();
      client.release();
    }
  }

  async #reset(client: pg.PoolClient, name: string, position: number, force: boolean, views: ReadonlySet<string>): Promise<ResetOutcome> {
    const [checkpoint] = await this.#rows(`SELECT position, fencing_token FROM ${this.#s}.checkpoints WHERE name = $1 FOR UPDATE`, [name], client);
    if (checkpoint === undefined) {
      const known = (await this.#rows(`SELECT name FROM ${this.#s}.checkpoints ORDER BY name`, [], client)).map((row) => row.name as string);
      throw unknownCheckpoint(name, known.filter((n) => !views.has(n)).sort(byName));
    }
    const lock = (await this.#locks(client, name))[0];
    if (lock?.held && !force) throw heldCheckpoint(name, lock);
    // A fenced checkpoint (a leader claimed it with a token) gets a token one above: every holder so
    // far is refused, and the next leader passes, whichever registry hands its tokens out (they grow
    // with every holder, and this one's sequence is always ahead of every token it handed out).
    const checkpointToken = Number(checkpoint.fencing_token);
    const fencingToken = checkpointToken > 0 ? checkpointToken + 1 : undefined;
    await this.#rows(
      `UPDATE ${this.#s}.checkpoints SET position = $2, fencing_token = coalesce($3::bigint, fencing_token), updated_at = clock_timestamp() WHERE name = $1`,
      [name, position, fencingToken ?? null],
      client,
    );
    const previous = checkpoint.position === null ? undefined : Number(checkpoint.position);
    return { name, previous, position, fencingToken, heldBy: lock?.held ? lock : undefined, fencing: fencingToken === undefined ? 'none' : 'checkpoint' };
  }

  async #views(client: Client): Promise<ViewRow[]> {
    // Views create these tables when the first one starts (view_shadows since rebuilds keep their
    // shadow tables' checkpoint); migrations do not.
    const exists = await this.#rows(
      `SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname = $1 AND c.relname IN ('view_versions', 'view_shadows')`,
      [this.#store.schema],
      client,
    );
    const tables = new Set(exists.map((row) => row.relname as string));
    if (!tables.has('view_versions')) return [];
    // The shadow row of the rebuild that owns the view now (not one left by a rebuilder it took over from).
    const shadow = tables.has('view_shadows')
      ? { columns: 's.position AS shadow_position, s.updated_at AS shadow_updated_at', join: `LEFT JOIN ${this.#s}.view_shadows s ON s.name = v.name AND s.rebuild_id = v.rebuild_id` }
      : { columns: 'NULL::bigint AS shadow_position, NULL::timestamptz AS shadow_updated_at', join: '' };
    const rows = await this.#rows(
      `SELECT v.name, v.version, v.generation, v.rebuild_id IS NOT NULL AS rebuilding, v.updated_at, ${shadow.columns}
       FROM ${this.#s}.view_versions v ${shadow.join} ORDER BY v.name`,
      [],
      client,
    );
    return rows.map((row) => ({
      name: row.name as string,
      version: Number(row.version),
      generation: Number(row.generation),
      rebuilding: row.rebuilding === true,
      shadow: row.shadow_position === null ? undefined : { position: Number(row.shadow_position), updatedAt: row.shadow_updated_at as Date },
      updatedAt: row.updated_at as Date,
    }));
  }

  async #locks(client: Client, only?: string): Promise<LockRow[]> {
    const filter = only === undefined ? '' : 'WHERE name = $1';
    const rows = await this.#rows(
      `SELECT name, max(fencing_token) AS checkpoint_token, max(lease_token) AS lease_token, max(acquired_at) AS acquired_at FROM (
         SELECT name, fencing_token, NULL::bigint AS lease_token, NULL::timestamptz AS acquired_at FROM ${this.#s}.checkpoints
         UNION ALL SELECT source, 0, NULL, NULL FROM ${this.#s}.dead_letters
         UNION ALL SELECT name, 0, NULL, NULL FROM ${this.#s}.runner_status
         UNION ALL SELECT name, 0, fencing_token, acquired_at FROM ${this.#s}.leases
       ) AS known ${filter} GROUP BY name`,
      only === undefined ? [] : [only],
      client,
    );
    const names = new Map(rows.map((row) => [row.name as string, row]));
    if (only === undefined) {
      for (const view of await this.#views(client)) {
        if (!names.has(view.name)) names.set(view.name, { name: view.name, checkpoint_token: 0, lease_token: null, acquired_at: null });
      }
    }
    const held = await this.#heldLocks(client);
    const locks: LockRow[] = [];
    for (const [name, row] of [...names].sort(([a], [b]) => byName(a, b))) {
      const session = held.get(lockObjects(lockKey(name, this.#store.schema)));
      const usedLock = Number(row.checkpoint_token ?? 0) > 0 || row.lease_token !== null;
      if (session === undefined && !usedLock) continue;
      const lock: LockRow = { name, fencingToken: row.lease_token === null ? undefined : Number(row.lease_token), holder: undefined, held: session !== undefined };
      if (row.acquired_at !== null) lock.acquiredAt = row.acquired_at as Date;
      if (session) {
        lock.pid = session.pid;
        lock.holder = holderOf(session.applicationName);
        if (session.applicationName !== undefined) lock.applicationName = session.applicationName;
        if (session.clientAddr !== undefined) lock.clientAddr = session.clientAddr;
      }
      locks.push(lock);
    }
    return locks;
  }

  /** Granted single-bigint advisory locks in this database, by "classid/objid", with their sessions. */
  async #heldLocks(client: Client): Promise<Map<string, HeldLock>> {
    const rows = await this.#rows(
      `SELECT l.classid::bigint AS hi, l.objid::bigint AS lo, l.pid, a.application_name, host(a.client_addr) AS client_addr
         FROM pg_catalog.pg_locks l LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
          AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())`,
      [],
      client,
    );
    const held = new Map<string, HeldLock>();
    for (const row of rows) {
      held.set(`${row.hi as string}/${row.lo as string}`, {
        pid: Number(row.pid),
        applicationName: (row.application_name as string | null) || undefined,
        clientAddr: (row.client_addr as string | null) ?? undefined,
      });
    }
    return held;
  }

  async #rows(text: string, values: unknown[] = [], client: Client = this.#store.pool): Promise<Row[]> {
    try {
      return (await client.query(text, values)).rows as Row[];
    } catch (error) {
      throw this.#translate(error);
    }
  }

  #translate(error: unknown): unknown {
    if (isEskitError(error)) return error;
    return translateError(error, this.#store.schema, this.#store.pool);
  }
}
