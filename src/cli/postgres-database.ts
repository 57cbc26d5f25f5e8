import * as pg from '../postgres/driver.js';
import { isEskitError } from '../core/errors.js';
import type { EventShape } from '../core/event.js';
import { translateError } from '../postgres/errors.js';
import { migratePostgres, POSTGRES_MIGRATIONS } from '../postgres/migrations.js';
import { PostgresDeadLetterStore } from '../postgres/postgres-dead-letter-store.js';
import { PostgresEventStore } from '../postgres/postgres-event-store.js';
import { lockKey, quoteSchema } from '../postgres/schema.js';
import type { AdapterStore, CheckpointRow, CliDatabase, DeadLetterCount, LeaseRow, OpenOptions, ResetOutcome, ViewRow } from './database.js';
import { heldRefusal, viewRefusal } from './database.js';
import { CliError, messageOf, unknownName } from './errors.js';
import type { DatabaseTarget } from './target.js';

type PostgresTarget = Extract<DatabaseTarget, { kind: 'postgres' }>;

const LATEST = POSTGRES_MIGRATIONS.length;
/** How long the CLI waits for a connection before it says the server is unreachable. */
const CONNECT_TIMEOUT_MS = 5000;

/** Connects (one small pool), checks the schema, and wraps the stores around the pool. */
export async function openPostgresDatabase(target: PostgresTarget, options: OpenOptions): Promise<CliDatabase> {
  const pool = new pg.Pool({
    connectionString: target.connectionString,
    max: 4,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    application_name: 'eskit-cli',
  });
  // An idle connection that dies must not crash the CLI; the next query reports it.
  pool.on('error', () => undefined);
  let version: number;
  try {
    try {
      await pool.query('SELECT 1');
    } catch (error) {
      throw connectFailure(error, target);
    }
    version = await schemaVersion(pool, target);
    if (options.requireMigrated && version < LATEST) {
      const what =
        version < 0
          ? `schema "${target.schema}" does not exist`
          : version === 0
            ? `schema "${target.schema}" has no eskit tables (it was never migrated)`
            : `schema "${target.schema}" is at version ${version}, this eskit needs ${LATEST}`;
      throw new CliError(what, { hint: `Check --schema, or run \`eskit migrate --db '${target.safeUrl.replaceAll("'", "'\\''")}' --schema ${target.schema}\` first.` });
    }
  } catch (error) {
    await pool.end().catch(() => undefined);
    throw error;
  }
  const store = new PostgresEventStore<EventShape>({ pool, schema: target.schema, migrate: false, registry: options.registry, logger: options.logger });
  const deadLetters = new PostgresDeadLetterStore({ store, migrate: false });
  return new PostgresCliDatabase(target, pool, store, deadLetters, Math.max(0, version));
}

/** The applied version; 0 when the schema exists without eskit tables, -1 when it does not exist. */
async function schemaVersion(pool: pg.Pool, target: PostgresTarget): Promise<number> {
  const found = await pool.query<{ has_schema: boolean; has_table: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1) AS has_schema,
            EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = $1 AND c.relname = 'migrations') AS has_table`,
    [target.schema],
  );
  const row = found.rows[0];
  if (!row?.has_schema) return -1;
  if (!row.has_table) return 0;
  const result = await pool.query<{ version: number | null }>(`SELECT max(version) AS version FROM ${quoteSchema(target.schema)}.migrations`);
  return Number(result.rows[0]?.version ?? 0);
}

/** A connection failure in words an operator can act on. */
function connectFailure(error: unknown, target: PostgresTarget): CliError {
  const code = (error as { code?: unknown } | null)?.code;
  const where = hostOf(target);
  const reason = messageOf(error) || String(code ?? 'unknown error');
  if (code === 'ECONNREFUSED') {
    return new CliError(`cannot connect to PostgreSQL at ${where}: connection refused`, { hint: 'Is the server running, and are host and port in --db right?', cause: error });
  }
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    return new CliError(`cannot connect to PostgreSQL at ${where}: host not found`, { hint: 'Check the host name in --db.', cause: error });
  }
  if (/timeout/i.test(reason) || code === 'ETIMEDOUT' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH') {
    return new CliError(`cannot connect to PostgreSQL at ${where}: no answer within ${CONNECT_TIMEOUT_MS / 1000} s (${reason})`, {
      hint: 'Check the host, port and network (firewall) in --db.',
      cause: error,
    });
  }
  if (code === '28P01' || code === '28000') {
    return new CliError(`PostgreSQL at ${where} refused the login: ${reason}`, { hint: 'Check the user and password in --db.', cause: error });
  }
  if (code === '3D000') return new CliError(`${reason} (at ${where})`, { hint: 'Check the database name in --db.', cause: error });
  return new CliError(`cannot connect to PostgreSQL at ${where}: ${reason}`, { hint: 'Check --db.', cause: error });
}

function hostOf(target: PostgresTarget): string {
  try {
    const url = new URL(target.connectionString);
    return `${url.hostname || 'localhost'}:${url.port || '5432'}`;
  } catch {
    return target.display;
  }
}

/** The holder id in an application_name PgLockRegistry set (`eskit-lock <holderId>`), else the name itself. */
function holderOf(applicationName: string | undefined): string | undefined {
  if (applicationName === undefined) return undefined;
  return applicationName.startsWith('eskit-lock ') ? applicationName.slice('eskit-lock '.length) : applicationName;
}

/** The (classid, objid) pg_locks shows for a single-bigint advisory key: its high and low 32 bits. */
function lockObjects(key: string): string {
  const unsigned = BigInt.asUintN(64, BigInt(key));
  return `${unsigned >> 32n}/${unsigned & 0xffffffffn}`;
}

interface HeldLock {
  pid: number;
  applicationName: string | undefined;
  clientAddr: string | undefined;
}

class PostgresCliDatabase implements CliDatabase {
  readonly latestSchemaVersion = LATEST;
  readonly adapter: AdapterStore<EventShape>;
  readonly #s: string;

  constructor(
    readonly target: PostgresTarget,
    readonly pool: pg.Pool,
    readonly store: PostgresEventStore<EventShape>,
    readonly deadLetters: PostgresDeadLetterStore,
    public schemaVersion: number,
  ) {
    this.adapter = { backend: 'postgres', store, schema: target.schema };
    this.#s = quoteSchema(target.schema);
  }

  async checkpoints(): Promise<CheckpointRow[]> {
    const rows = await this.#rows(`SELECT name, position, fencing_token, updated_at FROM ${this.#s}.checkpoints ORDER BY name`);
    return rows.map((row) => ({
      name: row.name as string,
      position: row.position === null ? undefined : Number(row.position),
      fencingToken: Number(row.fencing_token),
      updatedAt: row.updated_at as Date,
    }));
  }

  /**
   * PgLockRegistry keeps no row per lock: who holds one is the advisory lock itself (pg_locks, with
   * the session from pg_stat_activity). The keys are hashes, so the names are those the database
   * knows (checkpoints, views, dead-letter sources, and rows of the older leases table). A name is
   * listed when its lock is held, or when it has used leader election (a fenced checkpoint or a
   * leases row) and is not held right now.
   */
  async leases(): Promise<LeaseRow[]> {
    return this.#leases(this.pool);
  }

  async views(): Promise<ViewRow[]> {
    const exists = await this.#rows(
      `SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = 'view_versions'`,
      [this.target.schema],
    );
    if (exists.length === 0) return [];
    const rows = await this.#rows(`SELECT name, version, generation, rebuild_id IS NOT NULL AS rebuilding, updated_at FROM ${this.#s}.view_versions ORDER BY name`);
    return rows.map((row) => ({
      name: row.name as string,
      version: Number(row.version),
      generation: Number(row.generation),
      rebuilding: row.rebuilding === true,
      updatedAt: row.updated_at as Date,
    }));
  }

  async deadLetterCounts(): Promise<DeadLetterCount[]> {
    const rows = await this.#rows(
      `SELECT source, stage, status, count(*) AS count FROM ${this.#s}.dead_letters GROUP BY source, stage, status ORDER BY source, stage, status`,
    );
    return rows.map((row) => ({ source: row.source as string, stage: row.stage as string, status: row.status as string, count: Number(row.count) }));
  }

  async completionSources(): Promise<string[]> {
    return (await this.#rows(`SELECT DISTINCT source FROM ${this.#s}.completions ORDER BY source`)).map((row) => row.source as string);
  }

  /**
   * One transaction that locks the checkpoint row and gives it a token one above the one it holds:
   * the leader that claimed it (and every earlier one) is refused at its next checkpoint write (or a
   * view's next batch), gives up leadership, takes the lock again with a newer token and starts from
   * the reset position. Every later holder passes: tokens grow with every holder, so the next one's
   * is above the claimed one. Whether the lock is held is read from pg_locks (the advisory lock
   * itself).
   */
  async resetCheckpoint(name: string, position: number, force: boolean): Promise<ResetOutcome> {
    const views = new Set((await this.views()).map((view) => view.name));
    if (views.has(name)) throw viewRefusal(name);
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      try {
        const outcome = await this.#reset(client, name, position, force, views);
        await client.query('COMMIT');
        return outcome;
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw error;
      }
    } finally {
      client.release();
    }
  }

  async #reset(client: pg.PoolClient, name: string, position: number, force: boolean, views: ReadonlySet<string>): Promise<ResetOutcome> {
    const found = await this.#rows(`SELECT position, fencing_token FROM ${this.#s}.checkpoints WHERE name = $1 FOR UPDATE`, [name], client);
    const checkpoint = found[0];
    if (checkpoint === undefined) {
      const known = (await this.#rows(`SELECT name FROM ${this.#s}.checkpoints ORDER BY name`, [], client)).map((row) => row.name as string);
      throw unknownName('subscription or automation', name, known.filter((n) => !views.has(n)));
    }
    const lease = (await this.#leases(client, name))[0];
    if (lease?.held && !force) throw heldRefusal(name, lease);
    // A fenced checkpoint (a leader claimed it with a token) gets a token one above: every holder so
    // far is refused, and the next leader passes, whichever registry hands its tokens out (they grow
    // with every holder, and this one's sequence is always ahead of every token it handed out).
    const checkpointToken = Number(checkpoint.fencing_token);
    const fencingToken = checkpointToken > 0 ? checkpointToken + 1 : undefined;
    const fencing: ResetOutcome['fencing'] = fencingToken === undefined ? 'none' : 'checkpoint';
    await this.#rows(
      `UPDATE ${this.#s}.checkpoints SET position = $2, fencing_token = coalesce($3::bigint, fencing_token), updated_at = clock_timestamp() WHERE name = $1`,
      [name, position, fencingToken ?? null],
      client,
    );
    const previous = checkpoint.position === null ? undefined : Number(checkpoint.position);
    return { previous, position, fencingToken, heldBy: lease?.held ? lease : undefined, fencing };
  }

  async migrate(): Promise<{ applied: number[]; version: number }> {
    const applied = await migratePostgres(this.pool, this.target.schema);
    this.schemaVersion = Math.max(0, await schemaVersion(this.pool, this.target));
    return { applied, version: this.schemaVersion };
  }

  async close(): Promise<void> {
    await this.store.close().catch(() => undefined);
    await this.deadLetters.close().catch(() => undefined);
    await this.pool.end();
  }

  async #leases(client: pg.Pool | pg.PoolClient, only?: string): Promise<LeaseRow[]> {
    const filter = only === undefined ? '' : 'WHERE name = $1';
    const values = only === undefined ? [] : [only];
    const rows = await this.#rows(
      `SELECT name, max(fencing_token) AS checkpoint_token, max(lease_token) AS lease_token, max(acquired_at) AS acquired_at FROM (
         SELECT name, fencing_token, NULL::bigint AS lease_token, NULL::timestamptz AS acquired_at FROM ${this.#s}.checkpoints
         UNION ALL SELECT source, 0, NULL, NULL FROM ${this.#s}.dead_letters
         UNION ALL SELECT name, 0, fencing_token, acquired_at FROM ${this.#s}.leases
       ) AS known ${filter} GROUP BY name ORDER BY name`,
      values,
      client,
    );
    const viewNames = only === undefined ? (await this.views()).map((view) => view.name) : [];
    const names = new Map(rows.map((row) => [row.name as string, row]));
    for (const name of viewNames) if (!names.has(name)) names.set(name, { name, checkpoint_token: 0, lease_token: null, acquired_at: null });
    const held = await this.#heldLocks(client);
    const leases: LeaseRow[] = [];
    for (const [name, row] of [...names].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      const lock = held.get(lockObjects(lockKey(name, this.target.schema)));
      const usedLock = Number(row.checkpoint_token ?? 0) > 0 || row.lease_token !== null;
      if (lock === undefined && !usedLock) continue;
      const lease: LeaseRow = { name, fencingToken: row.lease_token === null ? undefined : Number(row.lease_token), holder: undefined, held: lock !== undefined };
      if (row.acquired_at !== null) lease.acquiredAt = row.acquired_at as Date;
      if (lock) {
        lease.pid = lock.pid;
        lease.holder = holderOf(lock.applicationName);
        if (lock.applicationName !== undefined) lease.applicationName = lock.applicationName;
        if (lock.clientAddr !== undefined) lease.clientAddr = lock.clientAddr;
      }
      leases.push(lease);
    }
    return leases;
  }

  /** Granted single-bigint advisory locks in this database, by "classid/objid", with their sessions. */
  async #heldLocks(client: pg.Pool | pg.PoolClient): Promise<Map<string, HeldLock>> {
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

  async #rows(text: string, values: unknown[] = [], client: pg.Pool | pg.PoolClient = this.pool): Promise<Record<string, unknown>[]> {
    try {
      return (await client.query(text, values)).rows as Record<string, unknown>[];
    } catch (error) {
      const translated = translateError(error, this.target.schema);
      if (isEskitError(translated)) throw translated;
      throw error;
    }
  }
}
