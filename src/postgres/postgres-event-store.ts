import * as pg from './driver.js';
import { InvalidArgumentError } from '../core/errors.js';
import { milliseconds } from '../core/validate.js';
import type { EventShape } from '../core/event.js';
import { consoleLogger } from '../core/logger.js';
import type { Logger } from '../core/logger.js';
import { GroupCommit } from '../core/group-commit.js';
import type { GroupedAppend, GroupOutcome } from '../core/group-commit.js';
import { ConcurrencyError, StreamDeletedError, StreamNotFoundError } from '../core/errors.js';
import type { LifecycleRequest, LifecycleWritten } from '../core/lifecycle.js';
import { lifecycleCall, lifecycleRefusal } from './lifecycle-functions.js';
import { EventStoreBase } from '../core/store-base.js';
import type { EventStoreBaseOptions, LogFilter, PreparedEvent, StoredEventRow, WrittenEvents } from '../core/store-base.js';
import type { ExpectedVersion, ReadDirection } from '../core/store.js';
import { isStatementError, translateAppendError, translateError } from './errors.js';
import { encodeExpected, groupOutcomes, groupValues } from './append-group.js';
import { eventStatements } from './event-statements.js';
import type { Statements } from './event-statements.js';
import { runStatementPair } from './locked-append.js';
import { migratePostgres } from './migrations.js';
import { queryPooled } from './pooled-query.js';
import { AppendListener, HINT_TOPICS, HintListeners } from './append-listener.js';
import type { HintListener, HintTopic } from './append-listener.js';
import { checkConnectionString, DEFAULT_CONNECT_TIMEOUT_MS, ownPoolConfig } from './connection.js';
import { DEFAULT_SCHEMA, notifyChannel, quoteSchema } from './schema.js';
import { PostgresSubjectKeyStore } from './postgres-subject-key-store.js';
import { DEFAULT_KEY_CACHE_MS, ForgetHearing, lateHandle } from './subject-key-cache.js';

export interface PostgresEventStoreOptions<E extends EventShape> extends EventStoreBaseOptions<E> {
  /** A pool you own: the store uses it and leaves it open on close(). Give this or `connectionString`. */
  pool?: pg.Pool;
  /**
   * The store creates its own pool from this (connect timeout 10 s, TCP keepalive), and ends it on
   * close(). For other pool settings, pass a `pool`.
   */
  connectionString?: string;
  /** Every eskit table lives in this schema. Lower-case identifier; default 'eskit'. */
  schema?: string;
  /**
   * Default true: the first call migrates the schema (once per store; concurrent processes are safe).
   * With false, call `migrate()` yourself (e.g. from a deploy step); until then calls fail with
   * ESKIT_MIGRATION.
   */
  migrate?: boolean;
  /** Where the LISTEN connection reports trouble. Default: warnings and errors as JSON lines on stderr. */
  logger?: Logger;
  /**
   * How long the LISTEN connection stays up after its last listener left (a subscription stopped), so
   * that a restart reuses it, and a stop that hands leadership over ends no server session while the
   * standby takes over. close() ends it at once. Default 10 000 ms; 0: close with the last listener.
   */
  listenLingerMs?: number;
}

// Text PostgreSQL cannot hold: NUL, and lone surrogates (the driver would silently turn them into U+FFFD).
// eslint-disable-next-line no-control-regex -- NUL is exactly what this looks for
const UNSTORABLE_TEXT = /\u0000|\p{Cs}/u;

type Row = unknown[];

/**
 * The event store on PostgreSQL. Every write is one round trip and one transaction: a group of
 * appends (GroupCommit) one call of `<schema>.append_group`, a lone append of several events one call
 * of `<schema>.append`, a lone one-event append the append lock and one INSERT (appendOneStatements).
 * Every page of a read is one round trip.
 *
 * Appends to one schema are serialised (an advisory lock held from the version check to the commit),
 * so position order is commit order and a reader paging by position never skips an event. The cost:
 * one transaction at a time, commit flush included (see append-functions.ts); group commit makes that
 * one transaction per group of concurrent appends. Reads never wait for it.
 *
 * ```ts
 * const store = new PostgresEventStore<CartEvent>({ connectionString: process.env.DATABASE_URL, registry });
 * ```
 */
export class PostgresEventStore<E extends EventShape = EventShape> extends EventStoreBase<E> {
  readonly schema: string;
  /** The pool the store runs on (yours, or the one it created). */
  readonly pool: pg.Pool;
  readonly #ownsPool: boolean;
  readonly #autoMigrate: boolean;
  readonly #sql: Statements;
  #migrated = false;
  #migrating: Promise<void> | undefined;
  readonly #listener: AppendListener;
  /** Who hears the hint channels (members, views, subjects) over the LISTEN connection. */
  readonly #hints = new HintListeners();
  readonly #groups = new GroupCommit((group) => this.#writeGroup(group));
  /** Keeps the key cache in step with other processes' forgets (when the key store is the store's own). */
  readonly #forgets: ForgetHearing;

  constructor(options: PostgresEventStoreOptions<E>) {
    // The subjects' keys live in this store's schema, on its pool, which it has only after super():
    // the key store reads them at first use (`late` is filled right after super()).
    const late: { store?: PostgresEventStore<E> } = {};
    const store = (): PostgresEventStore<E> => late.store as PostgresEventStore<E>;
    const own = options?.subjectKeys === undefined;
    const keyCacheMs = own ? (options?.keyCacheMs ?? DEFAULT_KEY_CACHE_MS) : 0;
    const forgets = new ForgetHearing({
      cacheMs: keyCacheMs,
      hear: (listener) => store().#hear('subjects', listener),
      evict: (kids) => store().personalData?.evict(kids),
      deaf: () => store().#listener.reconnecting,
      closed: () => store().closed,
    });
    const subjectKeys = own
      ? new PostgresSubjectKeyStore({ store: lateHandle(() => late.store), migrate: options?.migrate, logger: options?.logger, beforeKeysRead: () => forgets.keysHandedOut() })
      : options.subjectKeys;
    super({ ...options, subjectKeys, keyCacheMs: own ? keyCacheMs : options.keyCacheMs });
    late.store = this;
    this.#forgets = forgets;
    if (typeof options !== 'object' || options === null) {
      throw new InvalidArgumentError('PostgresEventStore needs an options object with `pool` or `connectionString`.');
    }
    const { pool, connectionString } = options;
    if ((pool === undefined) === (connectionString === undefined)) {
      throw new InvalidArgumentError('PostgresEventStore needs exactly one of `pool` (a pg.Pool you own) or `connectionString`.');
    }
    if (connectionString !== undefined) checkConnectionString(connectionString);
    if (options.migrate !== undefined && typeof options.migrate !== 'boolean') {
      throw new InvalidArgumentError(`migrate must be true or false, got ${String(options.migrate)}`);
    }
    this.schema = options.schema ?? DEFAULT_SCHEMA;
    this.#autoMigrate = options.migrate ?? true;
    if (pool) {
      this.pool = pool;
      this.#ownsPool = false;
    } else {
      this.pool = new pg.Pool(ownPoolConfig(connectionString as string));
      // An idle connection that dies (server restart) must not crash the process; the next query reports it.
      this.pool.on('error', () => undefined);
      this.#ownsPool = true;
    }
    this.#listener = new AppendListener({
      connection: () => listenConnection(this.pool, this.schema),
      channel: notifyChannel('appended', this.schema),
      onAppended: (position) => this.notifyAppended(position),
      hints: new Map(HINT_TOPICS.map((topic) => [notifyChannel(topic, this.schema), (payload: string) => this.#hints.heard(topic, payload)])),
      onListening: () => {
        this.#hints.missed();
        void this.#wakeAfterListening();
      },
      // Forgets announced from now on are not heard: keys cached so far must not be used meanwhile.
      onLost: () => this.#forgets.lost(),
      lingerMs: milliseconds('listenLingerMs', options.listenLingerMs ?? 10_000, 0),
      logger: options.logger ?? consoleLogger(),
    });
    this.#sql = eventStatements(this.schema);
  }

  /**
   * Creates or upgrades the schema. Idempotent, and safe to run from several processes at once. Runs
   * by itself on first use unless the store was created with `migrate: false`.
   */
  async migrate(): Promise<void> {
    this.assertOpen();
    await this.#migrateOnce();
  }

  // Done once per store: the checkpoint and other stores sharing it call this on their first use, and a
  // leader taking over should not pay for a catalog check. Not checked for close(): an append accepted
  // before close() still migrates on its way out.
  async #migrateOnce(): Promise<void> {
    if (this.#migrated) return;
    this.#migrating ??= migratePostgres(this.pool, this.schema).then(
      () => {
        this.#migrated = true;
        this.#migrating = undefined;
      },
      (error: unknown) => {
        this.#migrating = undefined;
        throw error;
      },
    );
    await this.#migrating;
  }

  /**
   * Also hears of appends by other processes and stores: every append notifies the schema's channel on
   * commit, and the first listener starts ONE dedicated LISTEN connection (not from the pool), which
   * stops `listenLingerMs` after the last listener left, or when the store closes. It reconnects by
   * itself after a failure and then wakes every listener once, as appends made meanwhile announced
   * nothing. Notifications are hints: subscribers poll as well, so a lost one delays an event and
   * never loses it. Writers whose connections set `eskit.notify = off` do not announce their appends
   * (see the append functions in migrations.ts for why you might want that); LISTEN does not work
   * behind a transaction-pooling proxy.
   */
  override onAppend(listener: (position: number) => void): () => void {
    const remove = super.onAppend(listener);
    // A closed store calls no one; it must not open a connection either.
    if (!this.closed) this.#listener.start();
    let removed = false;
    return () => {
      if (removed) return;
      removed = true;
      remove();
      this.#idleIfUnheard();
    };
  }

  /**
   * Internal to eskit/postgres (the member registry's `onChange`): `listener` hears the group named by
   * every notification on the schema's `members` channel, from any process. Returns the remover.
   */
  onMembersChanged(listener: (group: string) => void): () => void {
    return this.#hear('members', { heard: listener });
  }

  /**
   * Internal to eskit/postgres (the SQL views' cross-process signals): `listener.heard` gets the payload
   * of every notification on the schema's `views` channel (a view's commit, from any process);
   * `listener.missed` is called each time LISTEN is (again) in place, since commits made before
   * announced nothing here. Returns the remover.
   */
  onViewCommitted(listener: Required<HintListener>): () => void {
    return this.#hear('views', listener);
  }

  /**
   * Hints over the same LISTEN connection as `onAppend` (started by the first listener of any kind,
   * idled after the last). A hint a listener failed to take is found again by its own poll or heartbeat.
   */
  #hear(topic: HintTopic, listener: HintListener): () => void {
    // A closed store calls no one; it must not open a connection either.
    if (this.closed) return () => undefined;
    const remove = this.#hints.add(topic, listener);
    this.#listener.start();
    return () => {
      if (remove()) this.#idleIfUnheard();
    };
  }

  #idleIfUnheard(): void {
    if (this.appendListenerCount === 0 && this.#hints.size === 0) this.#listener.idle();
  }

  /** Whether the LISTEN connection is up (it runs only while someone listens). */
  get listening(): boolean {
    return this.#listener.connected;
  }

  async #wakeAfterListening(): Promise<void> {
    let head = 0;
    try {
      head = await this.readHeadPosition();
    } catch {
      // Not migrated yet, or the pool is down: wake anyway, the readers find out what there is.
    }
    if (!this.closed) this.notifyAppended(head);
  }

  protected writeEvents(streamId: string, events: PreparedEvent[], expected: ExpectedVersion): Promise<WrittenEvents> {
    // Text PostgreSQL cannot store (NUL, lone surrogates) never gets here: EventStoreBase refuses it
    // on every adapter alike.
    return this.#groups.append({ streamId, events, expected });
  }

  /**
   * One group of appends (see GroupCommit): a group of one alone (#writeAlone), several together
   * through `append_group`, one round trip and one transaction for all of them.
   */
  async #writeGroup(group: readonly GroupedAppend[]): Promise<GroupOutcome[]> {
    await this.#ready();
    if (group.length === 1) return [await this.#writeAlone(group[0] as GroupedAppend)];
    let row: Row;
    try {
      row = (await queryPooled(this.pool, { ...this.#sql.appendGroup, values: groupValues(group) }))[0] as Row;
    } catch (error) {
      // Without an answer from the server the outcome is unknown (the commit may have happened): every
      // append of the group reports the failure, as a lone append would.
      if (!isStatementError(error)) throw translateError(error, this.schema, this.pool);
      // The server refused the statement, so nothing of the group was written. What refused it may be
      // one append's doing (text jsonb refuses, a constraint or trigger of yours, a row security
      // policy): writing them one at a time fails that append alone. This also carries a schema not
      // yet migrated to append_group (migrate: false, a rolling deploy) with the functions it has.
      const outcomes: GroupOutcome[] = [];
      for (const append of group) outcomes.push(await this.#writeAlone(append).catch((e: unknown) => asError(e)));
      return outcomes;
    }
    return groupOutcomes(group, row);
  }

  /** A lone one-event append: the lock and one INSERT, one round trip, no function call (see appendOneStatements). */
  async #writeOne({ streamId, events, expected }: GroupedAppend): Promise<WrittenEvents> {
    const event = events[0] as PreparedEvent;
    let row: (string | null)[];
    try {
      const rows = await runStatementPair(this.pool, this.#sql.lock, this.#sql.insertOne, [
        streamId,
        String(encodeExpected(expected)),
        event.id,
        event.type,
        event.data,
        event.metadata,
      ]);
      row = rows[0] as (string | null)[];
    } catch (error) {
      throw translateAppendError(error, this.schema, streamId, expected, events, this.pool);
    }
    const [version, position, millis, , refused] = row;
    if (position === null) throw refused === 't' ? new StreamDeletedError(streamId) : new ConcurrencyError(streamId, expected, Number(version));
    return { streamVersion: Number(version) + 1, positions: [Number(position)], timestamp: new Date(Number(millis)) };
  }

  async #writeAlone(append: GroupedAppend): Promise<WrittenEvents> {
    const { streamId, events, expected } = append;
    if (events.length === 1) return this.#writeOne(append);
    const ids: string[] = [];
    const types: string[] = [];
    const data: string[] = [];
    const metadata: string[] = [];
    for (const event of events) {
      ids.push(event.id);
      types.push(event.type);
      data.push(event.data);
      metadata.push(event.metadata);
    }
    const statement = { ...this.#sql.append, values: [streamId, encodeExpected(expected), ids, types, data, metadata] };
    let row: Row;
    try {
      row = (await queryPooled(this.pool, statement))[0] as Row;
    } catch (error) {
      throw translateAppendError(error, this.schema, streamId, expected, events, this.pool);
    }
    const first = Number(row[0]);
    return {
      streamVersion: Number(row[1]),
      positions: events.map((_, index) => first + index),
      timestamp: new Date(Number(row[2])),
    };
  }

  /** One call of delete_stream or truncate_stream (migration 12): one round trip, one transaction under the append lock. */
  protected async writeLifecycle(streamId: string, request: LifecycleRequest): Promise<LifecycleWritten> {
    await this.#ready();
    if (UNSTORABLE_TEXT.test(streamId)) throw new StreamNotFoundError(streamId, request.kind);
    let row: Row;
    try {
      row = (await queryPooled(this.pool, { rowMode: 'array', ...lifecycleCall(quoteSchema(this.schema), streamId, request) }))[0] as Row;
    } catch (error) {
      throw lifecycleRefusal(error, streamId, request) ?? translateAppendError(error, this.schema, streamId, request.expected, [], this.pool);
    }
    return { position: Number(row[0]), timestamp: new Date(Number(row[1])) };
  }

  protected async readStreamRows(streamId: string, fromVersion: number, direction: ReadDirection, limit: number): Promise<StoredEventRow[]> {
    if (UNSTORABLE_TEXT.test(streamId)) return [];
    const statement = direction === 'forward' ? this.#sql.readForward : this.#sql.readBackward;
    return this.#rows(statement, [streamId, fromVersion, limit]);
  }

  protected async readArchivedRows(streamId: string, fromVersion: number, limit: number): Promise<StoredEventRow[]> {
    if (UNSTORABLE_TEXT.test(streamId)) return [];
    return this.#rows(this.#sql.readArchived, [streamId, fromVersion, limit]);
  }

  protected async readAllRows(after: number, limit: number, { types, category }: LogFilter): Promise<StoredEventRow[]> {
    if (category !== undefined && UNSTORABLE_TEXT.test(category)) return [];
    const storable = types?.filter((type) => !UNSTORABLE_TEXT.test(type));
    if (storable?.length === 0) return [];
    if (category !== undefined) {
      if (storable === undefined) return this.#rows(this.#sql.readCategory, [after, limit, category]);
      return this.#rows(this.#sql.readCategoryTypes, [after, limit, category, storable]);
    }
    if (storable === undefined) return this.#rows(this.#sql.readAll, [after, limit]);
    return this.#rows(this.#sql.readAllTypes, [after, limit, storable]);
  }

  protected async readStreamVersion(streamId: string): Promise<number> {
    if (UNSTORABLE_TEXT.test(streamId)) return 0;
    const rows = await this.#query(this.#sql.streamVersion, [streamId]);
    return rows.length === 0 ? 0 : Number((rows[0] as Row)[0]);
  }

  protected async readHeadPosition(): Promise<number> {
    const rows = await this.#query(this.#sql.head, []);
    return Number((rows[0] as Row)[0]);
  }

  protected async closeResources(): Promise<void> {
    // Appends accepted before close() are written (or refused) before the pool goes.
    await this.#groups.drain();
    this.#forgets.close();
    this.#hints.clear();
    await this.#listener.stop();
    if (this.#ownsPool) await this.pool.end();
  }

  async #ready(): Promise<void> {
    if (this.#migrated || !this.#autoMigrate) return;
    await this.#migrateOnce();
  }

  async #query(statement: pg.QueryArrayConfig, values: unknown[]): Promise<Row[]> {
    await this.#ready();
    try {
      return await queryPooled(this.pool, { ...statement, values });
    } catch (error) {
      throw translateError(error, this.schema, this.pool);
    }
  }

  async #rows(statement: pg.QueryArrayConfig, values: unknown[]): Promise<StoredEventRow[]> {
    const rows = await this.#query(statement, values);
    return rows.map(
      (r): StoredEventRow => ({
        position: Number(r[0]),
        id: r[1] as string,
        streamId: r[2] as string,
        streamVersion: Number(r[3]),
        type: r[4] as string,
        data: r[5] as string,
        metadata: r[6] as string,
        timestamp: toDate(r[7]),
      }),
    );
  }
}

/**
 * The LISTEN connection's settings: the pool's (host, credentials, ssl, ...), without what only a pool
 * understands. It keeps the pool's application_name, so operators see whose it is, or names itself.
 */
function listenConnection(pool: pg.Pool, schema: string): pg.ClientConfig {
  const options = pool.options as pg.PoolConfig;
  const config: pg.ClientConfig & Record<string, unknown> = { ...options, keepAlive: true };
  for (const key of ['max', 'min', 'idleTimeoutMillis', 'maxUses', 'maxLifetimeSeconds', 'allowExitOnIdle', 'Client', 'Promise', 'log', 'onConnect', 'verify']) {
    delete config[key];
  }
  config.application_name ??= `eskit listen ${schema}`;
  // The connection is eskit's own even on your pool: a server that never answers must not hold it (and close()) for minutes.
  config.connectionTimeoutMillis ??= DEFAULT_CONNECT_TIMEOUT_MS;
  return config;
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}


// pg returns a Date unless the application registered another timestamptz parser globally.
function toDate(value: unknown): Date {
  return value instanceof Date ? value : new Date(value as string);
}

