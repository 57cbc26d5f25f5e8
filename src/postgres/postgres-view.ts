// PostgreSQL's side of the SQL views (see SqlViews in core): the versions table, each view's tables
// and checkpoint in the event store's schema. Its rebuilds into shadow tables are in view-rebuild.ts,
// what evolve writes with is in view-tx.ts.
import type pg from 'pg';
import type { CheckpointInfo } from '../core/checkpoint.js';
import type { EventShape, Recorded } from '../core/event.js';
import { InvalidArgumentError, StoreClosedError, ViewFencedError } from '../core/errors.js';
import type { EventStore } from '../core/store.js';
import { storedTypesOf } from '../core/store-base.js';
import { CATEGORY_SQL } from './event-statements.js';
import { checkTableName, isViewCheckpoint, tableNames, rebuildFingerprint } from '../core/view-backend.js';
import type { RebuildStart, SqlViewBackend, SqlViews, SqlViewSetup, SqlViewSpec, ViewCommitListener, ViewMeta, ViewWatch } from '../core/view-backend.js';
import { translateError } from './errors.js';
import { PostgresCheckpointStore, saveAnnouncedCheckpoint, savePostgresCheckpoint, VIEW_CHECKPOINTS } from './postgres-checkpoint-store.js';
import type { PostgresStoreHandle } from './postgres-checkpoint-store.js';
import { advisoryKey, quoteSchema } from './schema.js';
import { ViewHints } from './view-hints.js';
import { PostgresViewRebuilds } from './view-rebuild.js';
import { postgresViewTx } from './view-tx.js';
import type { PostgresViewTx, ViewTx } from './view-tx.js';
import { hearWhileCheckedOut } from './connection.js';

/**
 * The SQL views of a PostgreSQL event store: each view's tables live in the store's schema and use its
 * pool. `postgres()` offers it as `backend.views`; `new SqlView({ backend, ... })` builds on it.
 * Construct it yourself only when composing the parts: `{ store, views: new PostgresViews({ store }) }`.
 */
export class PostgresViews<E extends EventShape = EventShape> implements SqlViews<E, PostgresViewTx, void | Promise<void>> {
  readonly #store: EventStore<E> & PostgresStoreHandle;

  constructor(options: { store: EventStore<E> & PostgresStoreHandle }) {
    if (typeof options?.store?.pool?.connect !== 'function') throw new InvalidArgumentError('PostgresViews needs { store }: a PostgresEventStore.');
    this.#store = options.store;
  }

  create(spec: SqlViewSpec<E, PostgresViewTx, void | Promise<void>>): SqlViewBackend<E> {
    return new PostgresViewBackend(this.#store, spec);
  }
}

// The CLI config's context for PostgreSQL carries these views (see EskitConfigViews); as in
// driver.ts, declared by the adapter so that eskit/cli names no adapter.
declare module '../cli/config.js' {
  interface EskitConfigViews<E extends EventShape> {
    postgres: PostgresViews<E>;
  }
}

class PostgresViewBackend<E extends EventShape> implements SqlViewBackend<E> {
  readonly #store: EventStore<E> & PostgresStoreHandle;
  readonly #pool: pg.Pool;
  readonly #schema: string;
  readonly #s: string;
  readonly #name: string;
  readonly #setup: SqlViewSetup;
  readonly #evolve: (events: readonly Recorded<E>[], tx: ViewTx) => Promise<void>;
  readonly #types: string[] | undefined;
  readonly #storedTypes: string[] | undefined;
  readonly #category: string | undefined;
  readonly #checkpoints: PostgresCheckpointStore;
  readonly #live: (name: string) => string;
  readonly #hints: ViewHints;
  readonly #rebuilds: PostgresViewRebuilds<E>;

  constructor(store: EventStore<E> & PostgresStoreHandle, spec: SqlViewSpec<E, PostgresViewTx, void | Promise<void>>) {
    this.#store = store;
    this.#pool = store.pool;
    this.#schema = store.schema;
    this.#s = quoteSchema(this.#schema);
    this.#name = spec.name;
    this.#setup = spec.setup;
    const { evolve, evolveBatch } = spec;
    const apply = evolveBatch
      ? (events: readonly Recorded<E>[], tx: PostgresViewTx) => evolveBatch(events, tx)
      : async (events: readonly Recorded<E>[], tx: PostgresViewTx) => {
          for (const event of events) {
            // A synchronous evolve (upserts only) costs no promise per event.
            const applied = (evolve as NonNullable<typeof evolve>)(event, tx);
            if (applied) await applied;
          }
        };
    this.#evolve = async (events, { tx, settled }) => {
      try {
        await apply(events, tx);
        await tx.flush();
      } catch (error) {
        // A flush evolve started and did not await may still be sending statements: the ROLLBACK
        // must come after them, not between them (they would then run outside the transaction).
        await settled();
        throw error;
      }
    };
    this.#types = spec.types && [...new Set<string>(spec.types)];
    // What a typed read of the view's types selects (old names, split types), for the SQL below.
    this.#storedTypes = storedTypesOf(store, this.#types);
    this.#category = spec.category;
    this.#checkpoints = new PostgresCheckpointStore({ store });
    this.#live = tableNames(this.#name, (name) => this.#qualified(name));
    this.#hints = new ViewHints(store, this.#schema, this.#name);
    this.#rebuilds = new PostgresViewRebuilds<E>({
      store,
      schema: this.#schema,
      view: this.#name,
      setup: this.#setup,
      types: this.#types,
      category: this.#category,
      fingerprint: rebuildFingerprint(spec),
      hints: this.#hints,
      evolve: this.#evolve,
      transaction: (fn) => this.#transaction(fn),
      meta: (client, lock) => this.#meta(client, lock),
      create: (client, map) => this.#create(client, map),
      tables: (client, names) => this.#tables(client, names),
      qualified: (name) => this.#qualified(name),
    });
  }

  table(name: string): string {
    return this.#qualified(name);
  }

  async ensureSetup(version: number): Promise<ViewMeta> {
    await this.#store.migrate();
    const [lockClass, lockObject] = advisoryKey('migrate', this.#schema);
    return this.#transaction(async (client) => {
      // Serialises set-ups in this schema (and with migrations); the catalog is read under it, not
      // through IF NOT EXISTS, whose name lookup may not see what the previous holder just created.
      await client.query('SELECT pg_advisory_xact_lock($1, $2)', [lockClass, lockObject]);
      if ((await this.#tables(client, ['view_versions'])).size === 0) {
        // generation: incremented by every swap. tables: the live tables' names. rebuild_id: the
        // rebuild that owns the shadow tables right now (NULL when none runs).
        await client.query(`
          CREATE TABLE ${this.#s}.view_versions (
            name text PRIMARY KEY,
            version integer NOT NULL,
            generation bigint NOT NULL,
            tables text[] NOT NULL,
            rebuild_id text NULL,
            updated_at timestamptz NOT NULL
          )`);
      }
      await this.#rebuilds.ensureShadows(client);
      const existing = await this.#meta(client, '');
      if (existing) return existing;
      const tables = await this.#create(client, (name) => name);
      await client.query(
        `INSERT INTO ${this.#s}.view_versions (name, version, generation, tables, rebuild_id, updated_at) VALUES ($1, $2, 0, $3, NULL, clock_timestamp())`,
        [this.#name, version, tables],
      );
      return { version, generation: 0, tables };
    });
  }

  async readMeta(): Promise<ViewMeta | undefined> {
    try {
      return await this.#meta(this.#pool, '');
    } catch (error) {
      // undefined_table: no view was ever set up in this schema.
      if ((error as { code?: unknown }).code === '42P01') return undefined;
      throw error;
    }
  }

  loadCheckpoint(checkpoint: string): Promise<number | undefined> {
    return this.#checkpoints.load(checkpoint);
  }

  claimCheckpoint(checkpoint: string, fencingToken: number): Promise<number | undefined> {
    return this.#checkpoints.claim(checkpoint, fencingToken);
  }

  async listCheckpoints(): Promise<CheckpointInfo[]> {
    const result = await this.#query({
      rowMode: 'array',
      text: `SELECT name, position, fencing_token, updated_at FROM ${this.#s}.checkpoints WHERE ${VIEW_CHECKPOINTS} AND position IS NOT NULL ORDER BY name`,
      values: [this.#name],
    });
    return (result.rows as unknown as Array<[string, string, string, Date | string]>)
      .filter(([name]) => isViewCheckpoint(this.#name, name))
      .map(([name, position, token, updatedAt]) => ({
        name,
        position: Number(position),
        fencingToken: Number(token),
        updatedAt: updatedAt instanceof Date ? updatedAt : new Date(updatedAt),
      }));
  }

  /**
   * Commits without waiting for its WAL flush (synchronous_commit off): the writes and the checkpoint
   * commit or vanish together, and a tail lost to a crash of the server is applied again from the
   * log, so exactly-once holds while a batch costs no disk flush of its own. Four round trips: BEGIN
   * with the generation check, the upserts, the checkpoint with its NOTIFY, COMMIT.
   */
  async applyLive(events: readonly Recorded<E>[], generation: number, fencingToken: number | undefined, checkpoint: string): Promise<void> {
    const from = (events[0] as Recorded<E>).position;
    const to = (events[events.length - 1] as Recorded<E>).position;
    await this.#transaction(
      async (client) => {
        await this.#evolve(events, postgresViewTx(client, this.#name, this.#live));
        await this.#saveCheckpoint(client, checkpoint, to, fencingToken, from);
      },
      { generation, durable: false },
    );
  }

  // Durable: the runner may have dead-lettered the events this passes over, and a lost save would
  // have them fail (and be dead-lettered) again.
  async saveCheckpoint(checkpoint: string, position: number, generation: number, fencingToken: number | undefined): Promise<void> {
    await this.#transaction(
      (client) => this.#saveCheckpoint(client, checkpoint, position, fencingToken, position + 1),
      { generation, durable: true },
    );
  }

  watch(listener: ViewCommitListener): ViewWatch {
    return this.#hints.watch(listener);
  }

  /** The lane's checkpoint, announced as the commit of [from, position] (from = position + 1: nothing applied). */
  async #saveCheckpoint(client: pg.PoolClient, checkpoint: string, position: number, fencingToken: number | undefined, from: number): Promise<void> {
    const payload = this.#hints.payload(checkpoint, from, position);
    if (payload === undefined) await savePostgresCheckpoint(client, checkpoint, position, { fencingToken, schema: this.#schema });
    else await saveAnnouncedCheckpoint(client, this.#schema, checkpoint, position, fencingToken, { channel: this.#hints.channel, payload });
  }

  async lastRelevant(after: number, upTo: number): Promise<number> {
    const result = await this.#query({ rowMode: 'array', ...this.#relevant('coalesce(max(position), 0)', after, upTo) });
    return Number((result.rows[0] as [string])[0]);
  }

  async countRelevant(after: number, upTo: number): Promise<number> {
    const result = await this.#query({ rowMode: 'array', ...this.#relevant('count(*)', after, upTo) });
    return Number((result.rows[0] as [string])[0]);
  }

  /** `what` over the view's events in (after, upTo]: of its types, in its category. */
  #relevant(what: string, after: number, upTo: number): { text: string; values: unknown[] } {
    const values: unknown[] = [after, upTo];
    let text = `SELECT ${what} FROM ${this.#s}.events WHERE position > $1 AND position <= $2`;
    // A view of every type never gets lifecycle events (see readAll).
    text += this.#storedTypes === undefined ? " AND left(type, 8) <> '$stream.' AND left(type, 9) <> '$subject.'" : ` AND type = ANY($${values.push(this.#storedTypes)}::text[])`;
    if (this.#category !== undefined) text += ` AND ${CATEGORY_SQL} = $${values.push(this.#category)}`;
    return { text, values };
  }

  beginRebuild(rebuildId: string, options?: { fresh?: boolean }): Promise<RebuildStart> {
    return this.#rebuilds.beginRebuild(rebuildId, options);
  }

  applyShadow(events: readonly Recorded<E>[], rebuildId: string, generation: number): Promise<void> {
    return this.#rebuilds.applyShadow(events, rebuildId, generation);
  }

  swap(rebuildId: string, generation: number, position: number, version: number, checkpoints: readonly string[]): Promise<{ position: number; applied: number } | 'behind'> {
    return this.#rebuilds.swap(rebuildId, generation, position, version, checkpoints);
  }

  abandonRebuild(rebuildId: string, generation: number): Promise<void> {
    return this.#rebuilds.abandonRebuild(rebuildId, generation);
  }

  #qualified(name: string): string {
    return `${this.#s}."${name}"`;
  }

  async #meta(client: pg.Pool | pg.ClientBase, lock: '' | ' FOR UPDATE' | ' FOR SHARE'): Promise<(ViewMeta & { rebuildId: string | null }) | undefined> {
    const result = await client.query<{ version: number; generation: string; tables: string[]; rebuild_id: string | null }>(
      `SELECT version, generation, tables, rebuild_id FROM ${this.#s}.view_versions WHERE name = $1${lock}`,
      [this.#name],
    );
    const row = result.rows[0];
    return row && { version: row.version, generation: Number(row.generation), tables: row.tables, rebuildId: row.rebuild_id };
  }

  /**
   * BEGIN and the live writes' checks as ONE simple-protocol message (one round trip): the commit's
   * durability, and the generation read FOR SHARE (a swap, FOR UPDATE, waits for this transaction,
   * and this one for a swap). Literals, since a simple query takes no parameters.
   */
  #begin(client: pg.PoolClient, live: { generation: number; durable: boolean }): Promise<unknown> {
    const statements = ['BEGIN'];
    if (!live.durable) statements.push('SET LOCAL synchronous_commit = off');
    statements.push(`SELECT generation FROM ${this.#s}.view_versions WHERE name = ${client.escapeLiteral(this.#name)} FOR SHARE`);
    return client.query(statements.join('; '));
  }

  #checkGeneration(begun: unknown, generation: number): void {
    const results = (Array.isArray(begun) ? begun : [begun]) as pg.QueryResult<{ generation: string }>[];
    const current = results[results.length - 1]?.rows[0]?.generation;
    if (current === undefined || Number(current) !== generation) throw new ViewFencedError(this.#name, 'swapped');
  }

  /** Runs the setup with `map` naming the objects; returns the (unmapped) names that became tables. */
  async #create(client: pg.PoolClient, map: (name: string) => string): Promise<string[]> {
    const names: string[] = [];
    // Unqualified names, with the view's schema first on the search path for this transaction:
    // PostgreSQL refuses a schema-qualified index name.
    const statements = this.#setup.statements((name) => {
      checkTableName(this.#name, name);
      if (!names.includes(name)) names.push(name);
      return `"${map(name)}"`;
    });
    await client.query(`SELECT set_config('search_path', $1 || ', ' || current_setting('search_path'), true)`, [this.#s]);
    for (const statement of statements) await client.query(statement);
    const tables = await this.#tables(client, names.map(map));
    return names.filter((name) => tables.has(map(name)));
  }

  /** Which of `names` are tables in the schema (read from the catalog, under the caller's locks). */
  async #tables(client: pg.PoolClient, names: readonly string[]): Promise<Set<string>> {
    if (names.length === 0) return new Set();
    const result = await client.query<{ relname: string }>(
      `SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relname = ANY($2::text[]) AND c.relkind IN ('r', 'p')`,
      [this.#schema, names],
    );
    return new Set(result.rows.map((row) => row.relname));
  }

  async #query(statement: pg.QueryArrayConfig): Promise<pg.QueryArrayResult<[string]>> {
    this.#assertOpen();
    try {
      return await this.#pool.query<[string]>(statement);
    } catch (error) {
      throw translateError(error, this.#schema, this.#pool);
    }
  }

  // A closed event store's pool may be ended, and its error would look transient to the view's runner.
  #assertOpen(): void {
    if (this.#store.closed === true) throw new StoreClosedError(`event store of view "${this.#name}"`);
  }

  /**
   * One transaction on a connection of the pool; a connection that fails to roll back is discarded.
   * `live`: the live view's writes, checked against the generation they were read with.
   */
  async #transaction<T>(fn: (client: pg.PoolClient) => Promise<T>, live?: { generation: number; durable: boolean }): Promise<T> {
    this.#assertOpen();
    let client: pg.PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (error) {
      throw translateError(error, this.#schema, this.#pool);
    }
    const stopHearing = hearWhileCheckedOut(client);
    let broken: Error | undefined;
    try {
      if (live) this.#checkGeneration(await this.#begin(client, live), live.generation);
      else await client.query('BEGIN');
      const result = await fn(client);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      try {
        await client.query('ROLLBACK');
      } catch (rollbackError) {
        broken = rollbackError instanceof Error ? rollbackError : new Error(String(rollbackError));
      }
      throw error;
    } finally {
      stopHearing();
      client.release(broken);
    }
  }
}
