import type pg from 'pg';
import type { CheckpointInfo, CheckpointStore } from '../core/checkpoint.js';
import { FencedError, InvalidArgumentError } from '../core/errors.js';
import { translateError } from './errors.js';
import { DEFAULT_SCHEMA, quoteSchema } from './schema.js';
import { PostgresTableAccess } from './table-access.js';
import type { PostgresTableOptions } from './table-access.js';

export type { PostgresStoreHandle } from './table-access.js';

export type PostgresCheckpointStoreOptions = PostgresTableOptions;

// Bigints arrive as text; positions and tokens stay far below 2^53.
type CheckpointRow = [position: string | null, fencingToken: string];

interface Statements {
  load: pg.QueryArrayConfig;
  claim: pg.QueryArrayConfig;
  save: pg.QueryArrayConfig;
  saveAnnounced: pg.QueryArrayConfig;
  list: pg.QueryArrayConfig;
}

// Prepared per schema, shared by every checkpoint store and by savePostgresCheckpoint.
const cache = new Map<string, Statements>();

function statements(schema: string): Statements {
  let cached = cache.get(schema);
  if (cached) return cached;
  const s = quoteSchema(schema);
  const name = (what: string): string => `eskit.${schema}.checkpoint_${what}`;
  const array = 'array' as const;
  // $3 NULL: no leader election, the write is unconditional and leaves the token as it is.
  const saveText = `
        INSERT INTO ${s}.checkpoints AS c (name, position, fencing_token, updated_at)
        VALUES ($1, $2, coalesce($3::bigint, 0), clock_timestamp())
        ON CONFLICT (name) DO UPDATE SET
          position = CASE WHEN $3::bigint IS NULL OR c.fencing_token <= $3::bigint THEN excluded.position ELSE c.position END,
          updated_at = CASE WHEN $3::bigint IS NULL OR c.fencing_token <= $3::bigint THEN excluded.updated_at ELSE c.updated_at END,
          fencing_token = greatest(c.fencing_token, excluded.fencing_token)
        RETURNING position, fencing_token`;
  cached = {
    load: { name: name('load'), rowMode: array, text: `SELECT position FROM ${s}.checkpoints WHERE name = $1` },
    // Every write is ONE statement, atomic on its own and inside a caller's transaction. A fenced write
    // still goes through DO UPDATE, but leaves position and updated_at as they were and keeps the
    // newer token, which RETURNING hands back: fenced exactly when the returned token is above ours,
    // and the error can name the token that fenced it without a second read (a read in the same
    // statement would see its snapshot, which may predate the row version the upsert locked).
    // All SET expressions read the row as it was before this statement.
    claim: {
      name: name('claim'),
      rowMode: array,
      text: `
        INSERT INTO ${s}.checkpoints AS c (name, position, fencing_token, updated_at)
        VALUES ($1, NULL, $2, clock_timestamp())
        ON CONFLICT (name) DO UPDATE SET
          fencing_token = greatest(c.fencing_token, excluded.fencing_token),
          updated_at = CASE WHEN c.fencing_token <= excluded.fencing_token THEN excluded.updated_at ELSE c.updated_at END
        RETURNING position, fencing_token`,
    },
    save: { name: name('save'), rowMode: array, text: saveText },
    // The same write, and a NOTIFY that goes out when (and only if) the caller's transaction commits.
    saveAnnounced: {
      name: name('save_announced'),
      rowMode: array,
      text: `WITH saved AS (${saveText}) SELECT position, fencing_token, pg_notify($4, $5) FROM saved`,
    },
    list: {
      name: name('list'),
      rowMode: array,
      text: `SELECT name, position, fencing_token, updated_at FROM ${s}.checkpoints WHERE position IS NOT NULL ORDER BY name`,
    },
  };
  cache.set(schema, cached);
  return cached;
}

// PostgreSQL text cannot hold NUL; a name with one could never have been saved.
// eslint-disable-next-line no-control-regex -- NUL is exactly what this looks for
const NUL = /\u0000/;

function assertName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || name.length === 0) throw new InvalidArgumentError('A checkpoint needs a non-empty name');
  if (NUL.test(name)) throw new InvalidArgumentError('A checkpoint name cannot contain U+0000, which PostgreSQL text cannot store');
}

function assertCount(what: string, value: unknown): asserts value is number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new InvalidArgumentError(`${what} must be a non-negative integer, got ${String(value)}`);
  }
}

async function run(client: pg.Pool | pg.ClientBase, schema: string, statement: pg.QueryArrayConfig, values: unknown[]): Promise<unknown[][]> {
  try {
    return (await client.query<unknown[]>({ ...statement, values })).rows;
  } catch (error) {
    throw translateError(error, schema, client);
  }
}

async function save(
  client: pg.Pool | pg.ClientBase,
  schema: string,
  name: string,
  position: number,
  fencingToken: number | undefined,
  notify?: { channel: string; payload: string },
): Promise<void> {
  assertName(name);
  assertCount('position', position);
  if (fencingToken !== undefined) assertCount('fencingToken', fencingToken);
  const sql = statements(schema);
  const values = [name, position, fencingToken ?? null];
  const rows = await (notify ? run(client, schema, sql.saveAnnounced, [...values, notify.channel, notify.payload]) : run(client, schema, sql.save, values));
  const current = Number((rows[0] as CheckpointRow)[1]);
  if (fencingToken !== undefined && current > fencingToken) throw new FencedError(name, fencingToken, current);
}

/**
 * Saves a checkpoint with your own connection, inside your own transaction, with the same fencing as
 * `PostgresCheckpointStore.save`: a view commits its writes and its checkpoint together, or neither.
 *
 * ```ts
 * const client = await pool.connect();
 * try {
 *   await client.query('BEGIN');
 *   await client.query('UPDATE cart_view SET ...', [...]);
 *   await savePostgresCheckpoint(client, 'cart-view', event.position, { fencingToken: context.fencingToken, schema });
 *   await client.query('COMMIT');
 * } catch (error) {
 *   await client.query('ROLLBACK');
 *   throw error;
 * } finally {
 *   client.release();
 * }
 * ```
 *
 * A `FencedError` changes nothing, but the transaction is still open: roll it back, so that the view's
 * writes of a stale leader are not committed either. The row stays locked until your transaction ends,
 * so keep it short. The schema must already be migrated (an event store or checkpoint store on it does
 * that on first use); this never migrates, as DDL has no place inside your transaction.
 */
export async function savePostgresCheckpoint(
  client: pg.ClientBase,
  name: string,
  position: number,
  options: { fencingToken?: number; schema?: string } = {},
): Promise<void> {
  const schema = options.schema ?? DEFAULT_SCHEMA;
  quoteSchema(schema);
  await save(client, schema, name, position, options.fencingToken);
}

/**
 * Internal to eskit/postgres: `savePostgresCheckpoint` in the same statement as a NOTIFY of `payload`
 * on `channel`, sent when the caller's transaction commits (a view announcing its commit: no extra
 * round trip). A fenced write throws as there; the caller rolls back, which drops the notification.
 */
export async function saveAnnouncedCheckpoint(
  client: pg.ClientBase,
  schema: string,
  name: string,
  position: number,
  fencingToken: number | undefined,
  notify: { channel: string; payload: string },
): Promise<void> {
  await save(client, schema, name, position, fencingToken, notify);
}

/**
 * Internal to eskit/postgres: the checkpoint rows named like view $1's (`isViewCheckpoint` keeps its
 * own among them), for a view's list of checkpoints and its rebuild's swap.
 */
export const VIEW_CHECKPOINTS = `(name = $1 OR left(name, char_length($1) + 1) = $1 || '#')`;

/**
 * Checkpoints in `<schema>.checkpoints`, next to the events. Every call is one statement, so it is
 * atomic across processes. Fencing as in `CheckpointStore`: the row keeps the newest token that claimed
 * or saved it, and older tokens are rejected with `FencedError` (carrying the current token).
 *
 * ```ts
 * const checkpoints = new PostgresCheckpointStore({ store }); // shares the event store's pool and schema
 * ```
 */
export class PostgresCheckpointStore implements CheckpointStore {
  readonly schema: string;
  readonly pool: pg.Pool;
  readonly #access: PostgresTableAccess;

  constructor(options: PostgresCheckpointStoreOptions) {
    this.#access = new PostgresTableAccess(options, 'PostgresCheckpointStore', 'checkpoint store');
    this.schema = this.#access.schema;
    this.pool = this.#access.pool;
  }

  async load(name: string): Promise<number | undefined> {
    assertName(name);
    await this.#access.ready();
    const rows = await run(this.pool, this.schema, statements(this.schema).load, [name]);
    const position = rows[0]?.[0];
    return position === undefined || position === null ? undefined : Number(position);
  }

  async claim(name: string, fencingToken: number): Promise<number | undefined> {
    assertName(name);
    assertCount('fencingToken', fencingToken);
    await this.#access.ready();
    const rows = await run(this.pool, this.schema, statements(this.schema).claim, [name, fencingToken]);
    const [position, current] = rows[0] as CheckpointRow;
    if (Number(current) > fencingToken) throw new FencedError(name, fencingToken, Number(current));
    return position === null ? undefined : Number(position);
  }

  async save(name: string, position: number, options: { fencingToken?: number } = {}): Promise<void> {
    assertName(name);
    await this.#access.ready();
    await save(this.pool, this.schema, name, position, options.fencingToken);
  }

  /**
   * `save` on your connection inside your transaction, in this store's schema: see `savePostgresCheckpoint`.
   */
  async saveWith(client: pg.ClientBase, name: string, position: number, options: { fencingToken?: number } = {}): Promise<void> {
    await save(client, this.schema, name, position, options.fencingToken);
  }

  async list(): Promise<CheckpointInfo[]> {
    await this.#access.ready();
    const rows = await run(this.pool, this.schema, statements(this.schema).list, []);
    return rows.map((row) => ({
      name: row[0] as string,
      position: Number(row[1]),
      fencingToken: Number(row[2]),
      updatedAt: row[3] instanceof Date ? row[3] : new Date(row[3] as string),
    }));
  }

  /** Ends the pool if this store created it (from `connectionString`). Safe to call twice. */
  close(): Promise<void> {
    return this.#access.close();
  }
}
