import * as pg from './driver.js';
import { InvalidArgumentError, StoreClosedError } from '../core/errors.js';
import { checkConnectionString, ownPoolConfig } from './connection.js';
import { translateError } from './errors.js';
import { migratePostgres } from './migrations.js';
import { DEFAULT_SCHEMA, quoteSchema } from './schema.js';

/** What the stores next to the events need of a `PostgresEventStore`. */
export interface PostgresStoreHandle {
  readonly schema: string;
  readonly pool: pg.Pool;
  /** True once the event store is closed: the stores sharing it refuse every call from then on. */
  readonly closed?: boolean;
  migrate(): Promise<void>;
}

/** How the checkpoint, dead-letter and completion stores connect. */
export interface PostgresTableOptions {
  /** A pool you own: the store uses it and leaves it open on close(). */
  pool?: pg.Pool;
  /**
   * The store creates its own pool from this (at most 2 connections, connect timeout 10 s, TCP
   * keepalive), and ends it on close(). For other pool settings, pass a `pool`.
   */
  connectionString?: string;
  /**
   * The event store whose pool and schema to share (the usual choice: next to the events, so a handler
   * can commit its writes and the checkpoint together). Its migration is reused.
   */
  store?: PostgresStoreHandle;
  /** Ignored with `store` (its schema is used). Default 'eskit'. */
  schema?: string;
  /** Default true: the first call migrates the schema. With false, migrate it yourself first. */
  migrate?: boolean;
}

/**
 * The connection side shared by the checkpoint, dead-letter and completion stores (not exported from
 * the package): the options, the lazy migration, the pool it may own, and refusal once closed.
 */
export class PostgresTableAccess {
  readonly schema: string;
  readonly pool: pg.Pool;
  readonly #what: string;
  readonly #ownsPool: boolean;
  readonly #migrate: (() => Promise<void>) | undefined;
  readonly #shared: PostgresStoreHandle | undefined;
  #migrated: Promise<void> | undefined;
  #closed = false;

  constructor(options: PostgresTableOptions, className: string, what: string) {
    this.#what = what;
    if (typeof options !== 'object' || options === null) {
      throw new InvalidArgumentError(`${className} needs an options object with \`store\`, \`pool\` or \`connectionString\`.`);
    }
    const given = [options.store, options.pool, options.connectionString].filter((x) => x !== undefined).length;
    if (given !== 1) {
      throw new InvalidArgumentError(
        `${className} needs exactly one of \`store\` (a PostgresEventStore), \`pool\` (a pg.Pool you own) or \`connectionString\`.`,
      );
    }
    if (options.migrate !== undefined && typeof options.migrate !== 'boolean') {
      throw new InvalidArgumentError(`migrate must be true or false, got ${String(options.migrate)}`);
    }
    const autoMigrate = options.migrate ?? true;
    if (options.store) {
      const store = options.store;
      if (options.schema !== undefined && options.schema !== store.schema) {
        throw new InvalidArgumentError(`The ${what} shares the event store's schema "${store.schema}"; drop the schema option "${options.schema}".`);
      }
      this.schema = store.schema;
      this.pool = store.pool;
      this.#shared = store;
      this.#ownsPool = false;
      this.#migrate = autoMigrate ? () => store.migrate() : undefined;
    } else {
      this.schema = options.schema ?? DEFAULT_SCHEMA;
      quoteSchema(this.schema);
      if (options.pool) {
        this.pool = options.pool;
        this.#ownsPool = false;
      } else {
        checkConnectionString(options.connectionString);
        this.pool = new pg.Pool(ownPoolConfig(options.connectionString, 2));
        // An idle connection that dies must not crash the process; the next query reports it.
        this.pool.on('error', () => undefined);
        this.#ownsPool = true;
      }
      const pool = this.pool;
      const name = this.schema;
      this.#migrate = autoMigrate ? async () => void (await migratePostgres(pool, name)) : undefined;
    }
  }

  /** Throws once closed; migrates on first use. Call before every operation. */
  async ready(): Promise<void> {
    this.#assertOpen();
    await this.#ready();
  }

  /** One statement in autocommit. `translate` turns errors it knows into eskit errors (else undefined). */
  async query(statement: pg.QueryArrayConfig, values: unknown[], translate?: (error: unknown) => Error | undefined): Promise<pg.QueryArrayResult> {
    this.#assertOpen();
    await this.#ready();
    try {
      return await this.pool.query<unknown[]>({ ...statement, values });
    } catch (error) {
      throw translate?.(error) ?? translateError(error, this.schema, this.pool);
    }
  }

  /** Ends the pool if the store created it (from `connectionString`). Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#ownsPool) await this.pool.end();
  }

  // The event store's migration is done once per store and then skipped, so its own closed check would
  // no longer run: without this, calls would reach its ended pool, whose error looks transient.
  #assertOpen(): void {
    if (this.#closed) throw new StoreClosedError(this.#what);
    if (this.#shared?.closed === true) throw new StoreClosedError(`event store shared by this ${this.#what}`);
  }

  async #ready(): Promise<void> {
    if (!this.#migrate) return;
    this.#migrated ??= this.#migrate().catch((error: unknown) => {
      this.#migrated = undefined;
      throw error;
    });
    await this.#migrated;
  }
}
