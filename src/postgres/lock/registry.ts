import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { InvalidArgumentError, LockUnavailableError } from '../../core/errors.js';
import type { AcquireOptions, Lease, LockRegistry } from '../../core/lock.js';
import { consoleLogger } from '../../core/logger.js';
import type { Logger } from '../../core/logger.js';
import { milliseconds } from '../../core/validate.js';
import { checkConnectionString, DEFAULT_CONNECT_TIMEOUT_MS } from '../connection.js';
import type * as pg from '../driver.js';
import { DEFAULT_SCHEMA, notifyChannel, quoteSchema } from '../schema.js';
import { LockSession, query } from './connection.js';
import type { Connection } from './connection.js';
import { describeFailure, isConnectionFailure, sqlState } from './failures.js';
import type { PostgresLease } from './lease.js';
import { LockRequests } from './requests.js';
import { keepAliveSeconds, LockKeys, lockStatements } from './sql.js';
import type { LockStatements } from './sql.js';

export interface PostgresLockRegistryOptions {
  /**
   * A DIRECT connection to PostgreSQL: session advisory locks live as long as the server session, so
   * a transaction-pooling proxy (PgBouncer in transaction mode, RDS Proxy, Supavisor in transaction
   * mode) breaks them: the lock would stay with a pooled server session after this node is gone, or be
   * released under it. Session-mode pooling is fine. Give this or `connection`.
   */
  connectionString?: string;
  /** pg client settings, for what a connection string cannot say (ssl objects, password functions). */
  connection?: pg.ClientConfig;
  /** Where the `lease_tokens` sequence lives (it keeps fencing tokens growing). Default 'eskit'. */
  schema?: string;
  /**
   * The bound on how long a frozen holder (stopped process, lost host, cut network) keeps a lock: the
   * server ends a lock session that has sent nothing this long (`idle_session_timeout`, PostgreSQL 14+;
   * `tcp_user_timeout` for data left unacknowledged), which frees its locks. A standby takes over within
   * about this plus `pollIntervalMs` and its checkpoint claim. Default 5 000 (measured: SIGSTOP of the
   * leader → the standby's first event in 4.9–5.1 s).
   *
   * What it costs: a heartbeat (`SELECT 1`) four times per period on the lock connection while it is
   * open, under one round trip per second at the default; and what a healthy holder must manage to
   * keep its leases. It gives them up by itself, before a standby can take over, when a statement on
   * the lock connection goes unanswered for half the period after it was sent, or when it sent nothing
   * for the whole period (its process was stalled). So an event loop blocked up to half the period at
   * a time (tested), a database answering within half of it, and a network outage shorter than that
   * cost no lease; longer ones do, and the node stands by until it gets the lock again. Raise it where
   * such stalls are normal (long synchronous work, GC pauses of seconds, a flaky network), at the price
   * of a slower failover of a frozen leader. An idle registry also closes its connection after this
   * long.
   */
  sessionTimeoutMs?: number;
  /**
   * How often a standby tries the locks it waits for, in one query for all of them. A graceful release
   * wakes standbys at once (NOTIFY); polling is what notices a holder whose session ended without one
   * (crash, kill, timeout). Default 200.
   */
  pollIntervalMs?: number;
  /** Names this node in logs and in the default `applicationName`. Default `<host>/<pid>/<random>`. */
  holderId?: string;
  /**
   * The lock connection's application_name, to find it (and who holds a lock) in pg_stat_activity.
   * Default `eskit-lock <holderId>`. An application_name inside the connection string wins over this.
   */
  applicationName?: string;
  /**
   * Default false: the token sequence's WAL (written once per 32 tokens, ahead of them) commits
   * asynchronously (`synchronous_commit = off` on the lock connection), so acquiring costs one round
   * trip and no WAL flush. Why that is safe: that WAL comes before that of anything done after it, so
   * the first synchronous commit anywhere on the server (a subscription's checkpoint claim, which
   * comes before any handler runs) makes it durable, and the WAL writer does within ~3 x
   * wal_writer_delay (600 ms) anyway. Only a server crash inside that window can lose it, and that
   * crash also ends the holder's session and aborts its lease; a later holder may then get the same
   * number again. With true, drawing a new batch of tokens waits for its WAL flush: set it if you hand
   * tokens to another system before writing anything to this database.
   */
  durableTokens?: boolean;
  /** Default true: the first connection migrates the schema (creates `lease_tokens`). */
  migrate?: boolean;
  /** Default: warnings and errors as JSON lines on stderr. Denials and losses are warnings. */
  logger?: Logger;
}

/**
 * Leader election on PostgreSQL session advisory locks, with fencing tokens drawn from the sequence
 * `<schema>.lease_tokens`. Who holds a lock is the advisory lock itself: `pg_locks` joined with
 * `pg_stat_activity` names the holder's session (its application_name says `eskit-lock <holderId>`).
 *
 * - ONE dedicated connection per registry, whatever the number of locks held or awaited: O(1)
 *   connections per node. Acquiring is one round trip (try the lock and, only if granted, draw a
 *   token); releasing is one round trip (unlock, and notify when a standby waits).
 * - A standby waits by LISTENing on the schema's `released` channel (a graceful release hands over in
 *   about one round trip) and by polling every `pollIntervalMs` with one query for all the locks it
 *   waits for (a holder whose session ended without a release: crash, kill, network).
 * - A frozen holder or a lost host: the server ends the lock session after `sessionTimeoutMs` of
 *   silence (`idle_session_timeout`, plus TCP keepalives and `tcp_user_timeout` for a dead peer), which
 *   frees its locks. The holder heartbeats meanwhile, and gives its leases up by itself when a
 *   statement goes unanswered for half the timeout after it was sent, or it sent nothing for longer
 *   than the timeout (its process was stalled): a busy event loop that still sends keeps its leases.
 * - The moment the lock connection fails ('error'/'end', e.g. `pg_terminate_backend`), every lease
 *   held through it is aborted; waiting acquires go on over a new connection.
 *
 * Needs a DIRECT connection (see `connectionString`). The lock keys are 64-bit hashes of schema and
 * name in the single-bigint advisory key space (see `lockKey`), apart from eskit's own two-int keys.
 */
export class PostgresLockRegistry implements LockRegistry {
  readonly schema: string;
  readonly holderId: string;
  readonly applicationName: string;
  readonly sessionTimeoutMs: number;
  readonly pollIntervalMs: number;
  readonly durableTokens: boolean;
  readonly #logger: Logger;
  readonly #sql: LockStatements;
  readonly #keys: LockKeys;
  readonly #session: LockSession;
  readonly #requests: LockRequests;
  readonly #held = new Map<string, PostgresLease>();
  /** Release statements in flight. */
  #releasing = 0;
  /**
   * Set the moment close() is called, before it ends any lease: a lease's abort listener runs inside
   * close() and may acquire again, which must be refused rather than granted on a closing connection.
   */
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(options: PostgresLockRegistryOptions) {
    if (typeof options !== 'object' || options === null) {
      throw new InvalidArgumentError('PostgresLockRegistry needs an options object with `connectionString` or `connection`.');
    }
    const { connectionString, connection } = options;
    if ((connectionString === undefined) === (connection === undefined)) {
      throw new InvalidArgumentError('PostgresLockRegistry needs exactly one of `connectionString` or `connection` (pg client settings), for a direct connection.');
    }
    if (connectionString !== undefined) checkConnectionString(connectionString);
    if (options.migrate !== undefined && typeof options.migrate !== 'boolean') {
      throw new InvalidArgumentError(`migrate must be true or false, got ${String(options.migrate)}`);
    }
    this.schema = options.schema ?? DEFAULT_SCHEMA;
    // Refused here (a reserved or malformed schema), not at the first acquire.
    quoteSchema(this.schema);
    this.sessionTimeoutMs = milliseconds('sessionTimeoutMs', options.sessionTimeoutMs ?? 5_000, 100);
    this.pollIntervalMs = milliseconds('pollIntervalMs', options.pollIntervalMs ?? 200);
    const unique = `${process.pid}/${randomBytes(4).toString('hex')}`;
    this.holderId = options.holderId ?? `${hostname()}/${unique}`;
    if (typeof this.holderId !== 'string' || this.holderId.length === 0) throw new InvalidArgumentError('holderId must be a non-empty string');
    // PostgreSQL keeps 63 bytes of it: enough for a host name and the pid.
    this.applicationName = options.applicationName ?? `eskit-lock ${this.holderId}`.slice(0, 63);
    this.#logger = options.logger ?? consoleLogger();
    this.durableTokens = options.durableTokens ?? false;
    const channel = notifyChannel('released', this.schema);
    const config: pg.ClientConfig = {
      ...(connection ?? {}),
      ...(connectionString !== undefined ? { connectionString } : {}),
      // A server that accepts the connection and never answers must not hold acquire() for minutes.
      connectionTimeoutMillis: connection?.connectionTimeoutMillis ?? DEFAULT_CONNECT_TIMEOUT_MS,
      application_name: this.applicationName,
      // Client side: notice a dead server or path while holding, not after the OS default of hours.
      keepAlive: true,
      keepAliveInitialDelayMillis: keepAliveSeconds(this.sessionTimeoutMs) * 1000,
    };
    this.#sql = lockStatements(this.schema, channel);
    this.#keys = new LockKeys(this.schema);
    this.#session = new LockSession(
      {
        config,
        schema: this.schema,
        channel,
        applicationName: this.applicationName,
        sessionTimeoutMs: this.sessionTimeoutMs,
        durableTokens: this.durableTokens,
        autoMigrate: options.migrate ?? true,
        logger: this.#logger,
      },
      {
        lost: (lost, error) => this.#lost(lost, error),
        notified: (key) => {
          if (this.#requests.awaits(key)) this.#requests.kick();
        },
        closed: () => this.#closed,
        busy: () => this.#held.size > 0 || this.#requests.size > 0 || this.#requests.flushing || this.#releasing > 0,
      },
    );
    this.#requests = new LockRequests({
      schema: this.schema,
      holderId: this.holderId,
      pollIntervalMs: this.pollIntervalMs,
      logger: this.#logger,
      statements: this.#sql,
      keys: this.#keys,
      session: this.#session,
      held: this.#held,
      closed: () => this.#closed,
      lost: (lost, error, how) => this.#lost(lost, error, how),
      release: (lease) => this.#release(lease),
      idleCheck: () => this.#idleCheck(),
    });
  }

  /** The backend pid of the lock connection while it is up (pg_stat_activity, pg_locks). */
  get connectionPid(): number | undefined {
    const connection = this.#session.current;
    return connection && !connection.dead ? connection.pid : undefined;
  }

  async acquire(name: string, options: AcquireOptions = {}): Promise<Lease> {
    if (typeof name !== 'string' || name.length === 0) throw new InvalidArgumentError('A lock needs a non-empty name');
    // eslint-disable-next-line no-control-regex -- NUL is what PostgreSQL text cannot hold
    if (/\u0000/.test(name)) throw new InvalidArgumentError('A lock name cannot contain U+0000, which PostgreSQL text cannot store');
    this.#assertOpen();
    options.signal?.throwIfAborted();
    return this.#requests.add(name, options);
  }

  /**
   * Releases every lease (one round trip, waking the standbys), fails pending `acquire` calls with
   * `ESKIT_LOCK_UNAVAILABLE`, and closes the connection. Safe to call twice.
   */
  close(): Promise<void> {
    if (!this.#closing) {
      this.#closed = true;
      this.#closing = this.#close();
    }
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#session.stopLinger();
    this.#requests.failAll(() => new LockUnavailableError('The lock registry was closed while this node waited for the lock.'));
    const leases = [...this.#held.values()];
    this.#held.clear();
    for (const lease of leases) lease.end(new LockUnavailableError(`The lease on "${lease.name}" (fencing token ${lease.fencingToken}) was released: the lock registry closed.`));
    const connection = await this.#session.settled();
    if (connection && !connection.dead) {
      const keys = leases.filter((lease) => lease.connection === connection).map((lease) => lease.key);
      if (keys.length > 0) {
        try {
          await query(connection, this.#sql.releaseAll, [keys]);
        } catch {
          // Ending the session below frees them all the same; only the standbys' instant wake-up is lost.
        }
      }
    }
    if (connection) {
      // A release in flight (its lease already off #held) carries the standbys' wake-up: let it land.
      if (!connection.dead) await connection.tail;
      await this.#session.disconnect(connection);
    }
  }

  #assertOpen(): void {
    if (this.#closed) throw new LockUnavailableError('The lock registry is closed; create a new one.');
  }

  async #release(lease: PostgresLease): Promise<void> {
    if (this.#held.get(lease.name) === lease) this.#held.delete(lease.name);
    const connection = lease.connection;
    this.#releasing += 1;
    try {
      if (connection === this.#session.current && !connection.dead) {
        const rows = await query(connection, this.#sql.release, [lease.key, this.#keys.of(lease.name).waitKey]);
        if (rows[0]?.[0] === -1) {
          this.#logger.warn({ lock: lease.name, fencingToken: lease.fencingToken }, `Lock "${lease.name}" was no longer held when released`);
        }
      }
    } catch (error) {
      if (isConnectionFailure(error, connection)) {
        // A failed connection took the lock with it.
        this.#lost(connection, error);
      } else {
        // The statement failed on a live session (a statement timeout, a cancel), maybe before its
        // unlock ran: the session may still hold the lock, and the heartbeats would keep it held for
        // good. Only ending the session surely frees it; the other leases held through it end too.
        this.#logger.error(
          { lock: lease.name, fencingToken: lease.fencingToken, sqlstate: sqlState(error), err: error },
          `Releasing lock "${lease.name}" failed (${describeFailure(error)}); ending the lock session to free it`,
        );
        this.#lost(connection, error, 'ended');
        // Resolve once the session is gone: the lock is free then, which is what release() promises.
        await connection.ended;
      }
    } finally {
      this.#releasing -= 1;
      this.#logger.info({ lock: lease.name, fencingToken: lease.fencingToken }, `Lock "${lease.name}" released`);
      if (this.#requests.has(lease.name)) this.#requests.kick();
      this.#idleCheck();
    }
  }

  /**
   * The lock session is over: the connection failed ('failed'), or this registry ends it because a
   * statement failed in a way that may have left a lock held that no lease knows of, or because a new
   * session may fare better ('ended'). Every lease through it is gone; waiting acquires go on over a
   * new one.
   */
  #lost(connection: Connection, error: unknown, how: 'failed' | 'ended' = 'failed'): void {
    if (!this.#session.drop(connection)) return;
    const why =
      how === 'failed'
        ? `its lock connection failed (${describeFailure(error)}), which ends the session and frees the lock for a standby`
        : `a statement on its lock connection failed (${describeFailure(error)}) in a way that may leave locks held, so this node ended the ` +
          'session, which frees them for a standby';
    const lost = [...this.#held.values()].filter((lease) => lease.connection === connection);
    for (const lease of lost) {
      this.#held.delete(lease.name);
      const reason = new LockUnavailableError(
        `Lost the lease on "${lease.name}" (fencing token ${lease.fencingToken}): ${why}. Stop work guarded by it; acquire the lock again to go on.`,
        { cause: error },
      );
      this.#logger.error({ lock: lease.name, fencingToken: lease.fencingToken, err: error }, reason.message);
      lease.end(reason);
    }
    if (this.#requests.size > 0 && !this.#closed) {
      if (lost.length === 0 && how === 'failed') {
        this.#logger.warn({ err: error }, `The lock connection failed (${describeFailure(error)}); reconnecting to go on waiting`);
      }
      this.#requests.scheduleRetry();
    } else if (lost.length === 0 && how === 'failed') {
      this.#logger.debug({ err: error }, 'The idle lock connection ended');
    }
  }

  /** Holding and awaiting nothing: the session closes the connection after a while. */
  #idleCheck(): void {
    if (this.#held.size > 0 || this.#requests.size > 0) return;
    this.#session.idle();
  }
}
