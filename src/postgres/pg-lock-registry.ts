import { milliseconds } from '../core/validate.js';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import * as pg from './driver.js';
import { describeError, InvalidArgumentError, isEskitError, LockUnavailableError } from '../core/errors.js';
import type { AcquireOptions, Lease, LockRegistry } from '../core/lock.js';
import { consoleLogger } from '../core/logger.js';
import type { Logger } from '../core/logger.js';
import { checkConnectionString, connectionErrorFor, DEFAULT_CONNECT_TIMEOUT_MS } from './connection.js';
import { translateError } from './errors.js';
import { migrateOnClient } from './migrations.js';
import { DEFAULT_SCHEMA, lockKey, notifyChannel, quoteSchema } from './schema.js';

export interface PgLockRegistryOptions {
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

interface Connection {
  client: pg.Client;
  pid: number;
  dead: boolean;
  /** The last statement queued: statements run one after another (pg deprecates queueing on a client). */
  tail: Promise<unknown>;
  /** Names whose waiter lock this session holds (shared): releasers on other nodes see it and NOTIFY. */
  readonly waitingFor: Set<string>;
  /** Set once the client is told to end: settles when its socket has closed. */
  ended?: Promise<void>;
  /** performance.now() when the last statement was sent: the server saw this session busy then. */
  lastSent: number;
  /** performance.now() when the statement in flight (at most one) was sent; undefined when none is. */
  inFlightSince: number | undefined;
}

interface Keys {
  /** The lock's advisory key. */
  key: string;
  /** The key standbys hold shared while they wait, so a release sends its NOTIFY only when someone waits. */
  waitKey: string;
}

interface Request {
  readonly name: string;
  readonly key: string;
  /** onWaiting was called (the first attempt was denied, or this node already holds the lock). */
  waiting: boolean;
  readonly onWaiting: (() => void) | undefined;
  grant(lease: PgLease): void;
  fail(error: unknown): void;
}

const MAX_RETRY_MS = 5_000;


/** The SQLSTATE of a server error; undefined for anything else (Node's ECONNRESET is no SQLSTATE). */
function sqlState(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.length === 5 ? code : undefined;
}

/** describeError, with the SQLSTATE: a server error's message alone does not say which class it is. */
function describeFailure(error: unknown): string {
  const code = sqlState(error);
  return code === undefined ? describeError(error) : `SQLSTATE ${code}: ${describeError(error)}`;
}

/**
 * True for errors that waiting can heal, so that a standby goes on waiting (over a new session, with
 * backoff) instead of failing after hours of standing by:
 * - no SQLSTATE: a socket or driver error (refused, reset, timed out), unless eskit raised it itself;
 * - 08 connection exception;
 * - 25006 read_only_sql_transaction: this session landed on a standby or on a server turned read-only,
 *   as during a failover before the replica is promoted (the rest of class 25 are bugs of the caller);
 * - 40 transaction rollback (serialization failure, deadlock): trying again is the cure;
 * - 53 insufficient resources (too many connections, out of memory, disk full);
 * - 55P03 lock_not_available (a lock_timeout while an ALTER SEQUENCE held the token sequence);
 * - 57 operator intervention (57014 statement cancelled or timed out, shutting down, starting up,
 *   terminated, idle_session_timeout);
 * - 58000 system_error and 58030 io_error: the host's trouble, which a failover leaves behind.
 * Everything else is a fault of the settings or of the database that waiting will not fix: 28 (wrong
 * credentials, no pg_hba entry), 3D000 (no such database), 3F000 and 42 (missing schema or sequence,
 * no privilege, a setting this server does not know), 22 (the token sequence at its maximum), 0A, XX
 * (internal error, corruption), and eskit's own errors such as a failed migration.
 */
export function isTransient(error: unknown): boolean {
  const code = sqlState(error);
  if (code === undefined) return !isEskitError(error);
  return (
    code.startsWith('08') ||
    code === '25006' ||
    code.startsWith('40') ||
    code.startsWith('53') ||
    code === '55P03' ||
    code.startsWith('57') ||
    code === '58000' ||
    code === '58030'
  );
}

/** True for a failure of the connection itself (it is gone or going), not an error of one statement. */
function isConnectionFailure(error: unknown, connection: Connection): boolean {
  if (connection.dead) return true;
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code !== 'string' || code.length !== 5 || code.startsWith('08') || code.startsWith('57P');
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
export class PgLockRegistry implements LockRegistry {
  readonly schema: string;
  readonly holderId: string;
  readonly applicationName: string;
  readonly sessionTimeoutMs: number;
  readonly pollIntervalMs: number;
  readonly durableTokens: boolean;
  readonly #config: pg.ClientConfig;
  readonly #logger: Logger;
  readonly #autoMigrate: boolean;
  readonly #channel: string;
  readonly #sql: {
    take: pg.QueryArrayConfig;
    takeOne: pg.QueryArrayConfig;
    release: pg.QueryArrayConfig;
    releaseAll: pg.QueryArrayConfig;
    unlock: pg.QueryArrayConfig;
    wait: pg.QueryArrayConfig;
    stopWaiting: pg.QueryArrayConfig;
  };
  readonly #keys = new Map<string, Keys>();

  #connection: Connection | undefined;
  #connecting: Promise<Connection> | undefined;
  #migrated = false;
  #everConnected = false;
  readonly #held = new Map<string, PgLease>();
  /** Pending acquires per name, oldest first; a name is present only while its queue is non-empty. */
  readonly #requests = new Map<string, Request[]>();
  #flushing = false;
  #again = false;
  #failures = 0;
  #pollTimer: ReturnType<typeof setTimeout> | undefined;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  #lingerTimer: ReturnType<typeof setTimeout> | undefined;
  /** When the registry last went idle (nothing held or awaited): the linger timer counts from there. */
  #idleSince = 0;
  /** Release statements in flight. */
  #releasing = 0;
  /**
   * Set the moment close() is called, before it ends any lease: a lease's abort listener runs inside
   * close() and may acquire again, which must be refused rather than granted on a closing connection.
   */
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(options: PgLockRegistryOptions) {
    if (typeof options !== 'object' || options === null) {
      throw new InvalidArgumentError('PgLockRegistry needs an options object with `connectionString` or `connection`.');
    }
    const { connectionString, connection } = options;
    if ((connectionString === undefined) === (connection === undefined)) {
      throw new InvalidArgumentError('PgLockRegistry needs exactly one of `connectionString` or `connection` (pg client settings), for a direct connection.');
    }
    if (connectionString !== undefined) checkConnectionString(connectionString);
    if (options.migrate !== undefined && typeof options.migrate !== 'boolean') {
      throw new InvalidArgumentError(`migrate must be true or false, got ${String(options.migrate)}`);
    }
    this.schema = options.schema ?? DEFAULT_SCHEMA;
    const s = quoteSchema(this.schema);
    this.sessionTimeoutMs = milliseconds('sessionTimeoutMs', options.sessionTimeoutMs ?? 5_000, 100);
    this.pollIntervalMs = milliseconds('pollIntervalMs', options.pollIntervalMs ?? 200);
    const unique = `${process.pid}/${randomBytes(4).toString('hex')}`;
    this.holderId = options.holderId ?? `${hostname()}/${unique}`;
    if (typeof this.holderId !== 'string' || this.holderId.length === 0) throw new InvalidArgumentError('holderId must be a non-empty string');
    // PostgreSQL keeps 63 bytes of it: enough for a host name and the pid.
    this.applicationName = options.applicationName ?? `eskit-lock ${this.holderId}`.slice(0, 63);
    this.#logger = options.logger ?? consoleLogger();
    this.#autoMigrate = options.migrate ?? true;
    this.durableTokens = options.durableTokens ?? false;
    this.#channel = notifyChannel('released', this.schema);
    const keepAliveSeconds = Math.max(1, Math.ceil(this.sessionTimeoutMs / 3000));
    this.#config = {
      ...(connection ?? {}),
      ...(connectionString !== undefined ? { connectionString } : {}),
      // A server that accepts the connection and never answers must not hold acquire() for minutes.
      connectionTimeoutMillis: connection?.connectionTimeoutMillis ?? DEFAULT_CONNECT_TIMEOUT_MS,
      application_name: this.applicationName,
      // Client side: notice a dead server or path while holding, not after the OS default of hours.
      keepAlive: true,
      keepAliveInitialDelayMillis: keepAliveSeconds * 1000,
    };
    const name = (what: string): string => `eskit.${this.schema}.lock_${what}`;
    const array = 'array' as const;
    this.#sql = {
      // ONE round trip for any number of locks, and no row written: the WHERE runs before the select
      // list, so a token is drawn only for the locks granted.
      take: {
        name: name('take'),
        rowMode: array,
        text: `SELECT w.name, nextval('${s}.lease_tokens') FROM unnest($1::text[], $2::bigint[]) AS w(name, key) WHERE pg_try_advisory_lock(w.key)`,
      },
      // The same for one name (most passes: one subscription per lock), without the arrays: the CASE
      // draws a token only when the lock is granted.
      takeOne: {
        name: name('take_one'),
        rowMode: array,
        text: `SELECT CASE WHEN pg_try_advisory_lock($1::bigint) THEN nextval('${s}.lease_tokens') END`,
      },
      // Unlocks, THEN looks for waiters (a CASE evaluates its conditions in order and stops at the
      // first true one): a standby takes its waiter lock before its next try, so either this sees the
      // waiter and wakes it, or the waiter's try comes after the unlock and succeeds. The exclusive try
      // on the waiter key fails while any standby holds it shared; it is a transaction lock, gone when
      // this statement's transaction ends. No waiter, no NOTIFY: a NOTIFY serialises on a
      // database-wide lock at commit. -1: the lock was not held; 0: released; 1: released, a standby told.
      release: {
        name: name('release'),
        rowMode: array,
        text: `
          SELECT CASE WHEN NOT pg_advisory_unlock($1::bigint) THEN -1
                      WHEN pg_try_advisory_xact_lock($2::bigint) THEN 0
                      ELSE (SELECT 1 FROM pg_notify('${this.#channel}', $1::bigint::text)) END`,
      },
      releaseAll: {
        name: name('release_all'),
        rowMode: array,
        text: `SELECT pg_advisory_unlock(k), pg_notify('${this.#channel}', k::text) FROM unnest($1::bigint[]) AS k`,
      },
      // Undoes locks a failed take may have been granted: session locks survive the statement's rollback.
      unlock: { name: name('unlock'), rowMode: array, text: 'SELECT pg_advisory_unlock(k) FROM unnest($1::bigint[]) AS k' },
      // A try: a releaser holds the key exclusively for an instant; the name is then tried again anyway.
      wait: { name: name('wait'), rowMode: array, text: 'SELECT pg_try_advisory_lock_shared(k) FROM unnest($1::bigint[]) AS k' },
      stopWaiting: { name: name('stop_waiting'), rowMode: array, text: 'SELECT pg_advisory_unlock_shared(k) FROM unnest($1::bigint[]) AS k' },
    };
  }

  /** The backend pid of the lock connection while it is up (pg_stat_activity, pg_locks). */
  get connectionPid(): number | undefined {
    return this.#connection && !this.#connection.dead ? this.#connection.pid : undefined;
  }

  async acquire(name: string, options: AcquireOptions = {}): Promise<Lease> {
    if (typeof name !== 'string' || name.length === 0) throw new InvalidArgumentError('A lock needs a non-empty name');
    // eslint-disable-next-line no-control-regex -- NUL is what PostgreSQL text cannot hold
    if (/\u0000/.test(name)) throw new InvalidArgumentError('A lock name cannot contain U+0000, which PostgreSQL text cannot store');
    this.#assertOpen();
    const { signal } = options;
    signal?.throwIfAborted();
    return new Promise<Lease>((resolve, reject) => {
      let settled = false;
      const settle = (): boolean => {
        if (settled) return false;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        this.#dequeue(request);
        return true;
      };
      const request: Request = {
        name,
        key: this.#keysOf(name).key,
        waiting: false,
        onWaiting: options.onWaiting,
        grant: (lease) => {
          if (settle()) resolve(lease);
        },
        fail: (error) => {
          if (settle()) reject(error);
        },
      };
      const onAbort = (): void => {
        request.fail(signal?.reason);
        this.#idleCheck();
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      let queue = this.#requests.get(name);
      if (!queue) {
        queue = [];
        this.#requests.set(name, queue);
      }
      queue.push(request);
      // Held by this registry already: a session lock is re-entrant, so asking the server would grant
      // it twice. Wait for the local release instead.
      if (this.#held.has(name)) this.#markWaiting(request, 'by this node, through another lease');
      this.#kick();
    });
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
    clearTimeout(this.#pollTimer);
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#lingerTimer);
    for (const queue of [...this.#requests.values()]) {
      for (const request of [...queue]) request.fail(new LockUnavailableError('The lock registry was closed while this node waited for the lock.'));
    }
    const leases = [...this.#held.values()];
    this.#held.clear();
    for (const lease of leases) lease.end(new LockUnavailableError(`The lease on "${lease.name}" (fencing token ${lease.fencingToken}) was released: the lock registry closed.`));
    const connection = await this.#connecting?.catch(() => undefined) ?? this.#connection;
    if (connection && !connection.dead) {
      const keys = leases.filter((lease) => lease.connection === connection).map((lease) => lease.key);
      if (keys.length > 0) {
        try {
          await this.#query(connection, this.#sql.releaseAll, [keys]);
        } catch {
          // Ending the session below frees them all the same; only the standbys' instant wake-up is lost.
        }
      }
    }
    if (connection) {
      // A release in flight (its lease already off #held) carries the standbys' wake-up: let it land.
      if (!connection.dead) await connection.tail;
      await this.#disconnect(connection);
    }
  }

  #keysOf(name: string): Keys {
    let keys = this.#keys.get(name);
    if (!keys) {
      // A lock name cannot contain NUL, so no name's key is a waiter key.
      keys = { key: lockKey(name, this.schema), waitKey: lockKey(`waiting\u0000${name}`, this.schema) };
      this.#keys.set(name, keys);
    }
    return keys;
  }

  #assertOpen(): void {
    if (this.#closed) throw new LockUnavailableError('The lock registry is closed; create a new one.');
  }

  #dequeue(request: Request): void {
    const queue = this.#requests.get(request.name);
    if (!queue) return;
    const index = queue.indexOf(request);
    if (index >= 0) queue.splice(index, 1);
    if (queue.length === 0) {
      this.#requests.delete(request.name);
      this.#stopWaiting(request.name);
    }
  }

  /** Gives up the waiter lock of `name` (granted, or nobody here waits for it any more). Not awaited. */
  #stopWaiting(name: string): void {
    const connection = this.#connection;
    if (!connection || connection.dead || !connection.waitingFor.delete(name)) return;
    void this.#query(connection, this.#sql.stopWaiting, [[this.#keysOf(name).waitKey]]).catch(() => undefined);
  }

  #markWaiting(request: Request, why: string): void {
    if (request.waiting) return;
    request.waiting = true;
    this.#logger.warn(
      { lock: request.name, holder: this.holderId, schema: this.schema },
      `Lock "${request.name}" is held ${why}; this node stands by and takes over when it is free`,
    );
    try {
      request.onWaiting?.();
    } catch (error) {
      request.fail(error);
    }
  }

  /** Runs an attempt for every awaited lock now, or right after the one in flight. */
  #kick(): void {
    if (this.#flushing) {
      this.#again = true;
      return;
    }
    void this.#flush();
  }

  /**
   * Tries every lock with pending requests that this registry does not hold, in one query per pass,
   * one pass at a time (two attempts for one name in flight at once would both be granted: session
   * locks are re-entrant).
   */
  async #flush(): Promise<void> {
    this.#flushing = true;
    try {
      do {
        this.#again = false;
        if (this.#closed) return;
        if (this.#awaited().length === 0) break;
        let connection: Connection;
        try {
          connection = await this.#connect();
        } catch (error) {
          this.#connectFailed(this.#awaited(), error);
          return;
        }
        // Acquires may have been aborted while the connection opened.
        const names = this.#awaited();
        if (names.length === 0) break;
        const keys = names.map((name) => (this.#requests.get(name) as Request[])[0]?.key as string);
        let rows: unknown[][];
        try {
          rows =
            names.length === 1
              ? (await this.#query(connection, this.#sql.takeOne, keys)).filter((row) => row[0] !== null).map((row) => [names[0], row[0]])
              : await this.#query(connection, this.#sql.take, [names, keys]);
        } catch (error) {
          if (isConnectionFailure(error, connection)) {
            // The session is gone and with it anything this statement took; ask again on a new one.
            this.#lost(connection, error);
            this.#scheduleRetry();
            return;
          }
          if (await this.#takeFailed(connection, names, keys, error)) return;
          continue;
        }
        // The session ended right after answering (its FATAL came in the same read, and #lost has run):
        // whatever it granted went with it, and #lost has scheduled the retry.
        if (connection.dead) return;
        this.#failures = 0;
        for (const row of rows) {
          const name = row[0] as string;
          this.#granted(connection, name, keys[names.indexOf(name)] as string, Number(row[1]));
        }
        const denied: string[] = [];
        for (const name of names) {
          const queue = this.#requests.get(name);
          if (!queue || this.#held.has(name)) continue;
          // A copy: an onWaiting callback may abort its acquire, which takes it out of the queue.
          for (const request of [...queue]) this.#markWaiting(request, 'by another node');
          if (this.#requests.has(name) && !connection.waitingFor.has(name)) denied.push(name);
        }
        if (denied.length > 0) {
          // Say we wait, then try once more at once: a release between our try and this saw no
          // waiter. A waiter key we could not take (a releaser held it for its instant: that release
          // has unlocked already) is one more reason to try again at once.
          const taken = await this.#query(connection, this.#sql.wait, [denied.map((name) => this.#keysOf(name).waitKey)]).catch(() => undefined);
          // Failed (the connection, most likely): the next take or the poll deals with it.
          if (taken === undefined) continue;
          denied.forEach((name, i) => {
            if (taken[i]?.[0] === true) {
              connection.waitingFor.add(name);
              // Nobody here waits any more (aborted meanwhile): give the key back.
              if (!this.#requests.has(name) || this.#held.has(name)) this.#stopWaiting(name);
            }
          });
          this.#again = true;
        }
      } while (this.#again);
    } finally {
      this.#flushing = false;
    }
    this.#schedulePoll();
    this.#idleCheck();
  }

  /**
   * A take failed on a live session. Undoes what it may have taken (session locks outlive the
   * statement's rollback). An error that waiting heals (see isTransient) keeps the requests and tries
   * again with backoff: over a new session when this one holds no lease (it may be on a server that is
   * read-only, overloaded or being shut down; a new one may land on the promoted replica), over this one
   * otherwise (ending it would give those leases away for the error of one statement). Any other error
   * fails the requests. Returns true when the pass must end (a retry is scheduled).
   */
  async #takeFailed(connection: Connection, names: string[], keys: string[], error: unknown): Promise<boolean> {
    const undone = await this.#query(connection, this.#sql.unlock, [keys]).then(
      () => true,
      () => false,
    );
    const transient = isTransient(error);
    const holds = [...this.#held.values()].some((lease) => lease.connection === connection);
    const locks = names.map((n) => `"${n}"`).join(', ');
    const waits = transient ? this.#scheduleRetry() : undefined;
    // Not undone: the session may hold a lock that no lease knows of, which only its end frees.
    if (!undone || (transient && !holds)) this.#lost(connection, error, 'ended');
    if (!transient) {
      const translated = translateError(error, this.schema);
      const failure = isEskitError(translated)
        ? translated
        : new LockUnavailableError(`Taking lock(s) ${locks} failed: ${describeFailure(error)}. Check the database and the role's privileges on schema "${this.schema}".`, {
            cause: error,
          });
      for (const name of names) for (const request of [...(this.#requests.get(name) ?? [])]) request.fail(failure);
      return false;
    }
    this.#logger.warn(
      { locks: names, sqlstate: sqlState(error), err: error },
      `Taking lock(s) ${locks} failed (${describeFailure(error)}), which waiting can heal; ` +
        `trying again${waits === undefined ? '' : ` in ${Math.round(waits)} ms`} over ${this.#connection === connection ? 'the same' : 'a new'} session`,
    );
    return true;
  }

  /** Names with pending acquires that this registry does not hold. */
  #awaited(): string[] {
    return [...this.#requests.keys()].filter((name) => !this.#held.has(name));
  }

  #granted(connection: Connection, name: string, key: string, fencingToken: number): void {
    const request = this.#requests.get(name)?.[0];
    if (!request) {
      // Every request for it was aborted while the attempt was in flight: give it straight back.
      void this.#query(connection, this.#sql.release, [key, this.#keysOf(name).waitKey]).catch((error: unknown) => {
        // A dead connection took the lock with it; anything else may leave it held by this session,
        // which only the session's end frees.
        if (isConnectionFailure(error, connection)) {
          this.#lost(connection, error);
          return;
        }
        this.#logger.error(
          { lock: name, sqlstate: sqlState(error), err: error },
          `Giving back lock "${name}" (its acquire was aborted) failed (${describeFailure(error)}); ending the lock session to free it`,
        );
        this.#lost(connection, error, 'ended');
      });
      return;
    }
    const lease = new PgLease(name, key, fencingToken, connection, (released) => this.#release(released));
    this.#held.set(name, lease);
    this.#stopWaiting(name);
    if (request.waiting) {
      this.#logger.info({ lock: name, fencingToken, holder: this.holderId }, `Lock "${name}" acquired after waiting (fencing token ${fencingToken})`);
    } else {
      this.#logger.info({ lock: name, fencingToken, holder: this.holderId }, `Lock "${name}" acquired (fencing token ${fencingToken})`);
    }
    request.grant(lease);
    // Further acquires of the same name in this process now wait for this lease.
    for (const other of this.#requests.get(name) ?? []) this.#markWaiting(other, 'by this node, through another lease');
  }

  async #release(lease: PgLease): Promise<void> {
    if (this.#held.get(lease.name) === lease) this.#held.delete(lease.name);
    const connection = lease.connection;
    this.#releasing += 1;
    try {
      if (connection === this.#connection && !connection.dead) {
        const rows = await this.#query(connection, this.#sql.release, [lease.key, this.#keysOf(lease.name).waitKey]);
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
      if (this.#requests.has(lease.name)) this.#kick();
      this.#idleCheck();
    }
  }

  #connect(): Promise<Connection> {
    if (this.#connection && !this.#connection.dead) return Promise.resolve(this.#connection);
    this.#connecting ??= this.#open().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  async #open(): Promise<Connection> {
    const client = new pg.Client(this.#config);
    const connection: Connection = { client, pid: 0, dead: false, tail: Promise.resolve(), waitingFor: new Set(), lastSent: 0, inFlightSince: undefined };
    client.on('error', (error) => this.#lost(connection, error));
    client.on('end', () => this.#lost(connection, new Error('the lock connection ended')));
    client.on('notification', (message) => {
      if (message.channel === this.#channel && this.#awaits(message.payload)) this.#kick();
    });
    try {
      await client.connect();
      if (this.#autoMigrate && !this.#migrated) {
        await migrateOnClient(client, this.schema);
        this.#migrated = true;
      }
      const keepAliveSeconds = Math.max(1, Math.ceil(this.sessionTimeoutMs / 3000));
      const results = (await client.query(
        // Server side: end this session when it stays silent (frozen or vanished holder: its locks go
        // with it), and notice a dead peer through keepalives and unacknowledged data.
        `SET idle_session_timeout = ${this.sessionTimeoutMs};
         SET tcp_keepalives_idle = ${keepAliveSeconds};
         SET tcp_keepalives_interval = ${Math.max(1, Math.ceil(keepAliveSeconds / 3))};
         SET tcp_keepalives_count = 3;
         SET tcp_user_timeout = ${this.sessionTimeoutMs};
         ${this.durableTokens ? '' : 'SET synchronous_commit = off;'}
         LISTEN "${this.#channel}";
         SELECT pg_backend_pid() AS pid`,
      )) as unknown as pg.QueryResult<{ pid: number }>[];
      connection.pid = Number(results[results.length - 1]?.rows[0]?.pid);
    } catch (error) {
      connection.dead = true;
      await client.end().catch(() => undefined);
      throw error;
    }
    // A plain error: a connection that died at once is worth another try (isTransient).
    if (connection.dead) throw new Error('the lock connection failed right after connecting');
    if (this.#closed) {
      await this.#disconnect(connection);
      throw new LockUnavailableError('The lock registry was closed while connecting.');
    }
    this.#connection = connection;
    this.#everConnected = true;
    connection.lastSent = performance.now();
    this.#startHeartbeat(connection);
    this.#logger.debug({ pid: connection.pid, applicationName: this.applicationName }, 'Lock connection open');
    return connection;
  }

  #query(connection: Connection, statement: pg.QueryArrayConfig, values: unknown[]): Promise<unknown[][]> {
    const run = connection.tail.then(async () => {
      connection.lastSent = connection.inFlightSince = performance.now();
      try {
        return (await connection.client.query<unknown[]>({ ...statement, values })).rows;
      } finally {
        connection.inFlightSince = undefined;
      }
    });
    connection.tail = run.catch(() => undefined);
    return run;
  }

  #awaits(key: string | undefined): boolean {
    for (const [name, queue] of this.#requests) if (!this.#held.has(name) && queue[0]?.key === key) return true;
    return false;
  }

  #startHeartbeat(connection: Connection): void {
    clearInterval(this.#heartbeatTimer);
    const every = Math.max(1, Math.floor(this.sessionTimeoutMs / 4));
    this.#heartbeatTimer = setInterval(() => void this.#heartbeat(connection), every);
    // The socket keeps the process alive while it is open; the timer need not.
    this.#heartbeatTimer.unref();
  }

  async #heartbeat(connection: Connection): Promise<void> {
    if (connection.dead || connection !== this.#connection) return;
    const timeout = this.sessionTimeoutMs;
    // A process stalled longer than the timeout (SIGSTOP, a debugger, a blocked event loop) must assume
    // the server ended its session and a standby took over, before any more of its work runs: judged
    // here, in the first timer after the stall, before any I/O callback. From the last statement SENT,
    // not the last answer read: the server's idle clock restarts with every statement it receives, and
    // a busy event loop runs its timers before it reads the answers already waiting on the socket.
    if (performance.now() - connection.lastSent > timeout) {
      this.#lost(connection, new Error(`nothing was sent on the lock connection for over ${timeout} ms (was this process stalled?)`));
      return;
    }
    try {
      const limit = Math.floor(timeout / 2);
      if (!(await this.#answered(connection, this.#query(connection, { text: 'SELECT 1', rowMode: 'array' }, []), limit))) {
        this.#lost(connection, new Error(`a statement on the lock connection went unanswered for ${limit} ms`));
      }
    } catch (error) {
      this.#lost(connection, error);
    }
  }

  /**
   * Settles with true once `answer` does, or with false once the statement in flight on `connection`
   * (that one, or one queued ahead of it) has gone unanswered for `limit` ms since it was sent: unheard
   * that long, the server may be gone or may end the session before the next heartbeat lands. Only
   * judged after a turn of the event loop: a busy loop runs due timers before it reads its sockets, so an
   * answer may already be here, unread; a statement that got one is not late, however long the loop was
   * busy. (A statement still queued is not yet sent: the clock starts when it is.)
   */
  #answered(connection: Connection, answer: Promise<unknown>, limit: number): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      let settled = false;
      const settle = (): boolean => {
        if (settled) return false;
        settled = true;
        clearTimeout(timer);
        return true;
      };
      answer.then(
        () => settle() && resolve(true),
        (error: unknown) => settle() && reject(error),
      );
      const judge = (): void => {
        setImmediate(() => {
          if (settled) return;
          const left = (connection.inFlightSince ?? performance.now()) + limit - performance.now();
          if (left <= 0) {
            if (settle()) resolve(false);
            return;
          }
          timer = setTimeout(judge, left);
        });
      };
      timer = setTimeout(judge, limit);
    });
  }

  /**
   * The lock session is over: the connection failed ('failed'), or this registry ends it because a
   * statement failed in a way that may have left a lock held that no lease knows of, or because a new
   * session may fare better ('ended'). Every lease through it is gone; waiting acquires go on over a
   * new one.
   */
  #lost(connection: Connection, error: unknown, how: 'failed' | 'ended' = 'failed'): void {
    const wasCurrent = !connection.dead && connection === this.#connection;
    connection.dead = true;
    if (!wasCurrent) return;
    this.#connection = undefined;
    clearInterval(this.#heartbeatTimer);
    this.#heartbeatTimer = undefined;
    void this.#disconnect(connection);
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
      this.#scheduleRetry();
    } else if (lost.length === 0 && how === 'failed') {
      this.#logger.debug({ err: error }, 'The idle lock connection ended');
    }
  }

  /**
   * Errors waiting will not heal (authentication, a missing database, a failed migration) fail every
   * request. A transient one (refused, reset, starting up) fails only new requests of a registry that
   * has never connected (most likely wrong settings); otherwise requests keep trying, so that a
   * database restart, which also takes the leases, leaves standbys waiting instead of failed.
   */
  #connectFailed(names: string[], error: unknown): void {
    const named = connectionErrorFor(error, this.#config);
    const failure = isEskitError(error)
      ? error
      : new LockUnavailableError(
          named
            ? `The lock connection failed. ${named.message}`
            : `Could not open the lock connection to PostgreSQL: ${describeFailure(error)}. Check the connection settings.`,
          { cause: error },
        );
    const transient = isTransient(error);
    for (const name of names) {
      for (const request of [...(this.#requests.get(name) ?? [])]) {
        if (!transient || (!request.waiting && !this.#everConnected)) request.fail(failure);
      }
    }
    if (this.#requests.size > 0) {
      this.#logger.warn({ err: error }, `Could not open the lock connection (${describeFailure(error)}); trying again`);
      this.#scheduleRetry();
    }
  }

  /** Schedules the next pass after a failure; returns its delay, or undefined if one was scheduled already. */
  #scheduleRetry(): number | undefined {
    if (this.#retryTimer || this.#closed) return undefined;
    this.#failures += 1;
    // At once after a first failure (a killed backend), then backing off with jitter.
    const ceiling = Math.min(MAX_RETRY_MS, this.pollIntervalMs * 2 ** (this.#failures - 2));
    const wait = this.#failures === 1 ? 0 : ceiling / 2 + (Math.random() * ceiling) / 2;
    // Ref'd on purpose: a standby whose only job is to wait must not exit while the database is away.
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#kick();
    }, wait);
    return wait;
  }

  #schedulePoll(): void {
    if (this.#pollTimer || this.#closed) return;
    if (this.#awaited().length === 0) return;
    this.#pollTimer = setTimeout(() => {
      this.#pollTimer = undefined;
      this.#kick();
    }, this.pollIntervalMs);
    this.#pollTimer.unref();
  }

  /**
   * Holding and awaiting nothing: close the connection after a while (the heartbeat keeps it alive
   * meanwhile), so that a registry in an idle process holds no server session and no event loop open.
   */
  #idleCheck(): void {
    if (this.#held.size > 0 || this.#requests.size > 0 || !this.#connection) return;
    this.#idleSince = performance.now();
    // One timer for many short leases: it is not cleared by an acquire (a timer per acquire and release
    // was a measurable part of their cost); when it fires it looks at when the registry was last used.
    if (!this.#lingerTimer) this.#armLinger(this.sessionTimeoutMs);
  }

  #armLinger(ms: number): void {
    this.#lingerTimer = setTimeout(() => {
      this.#lingerTimer = undefined;
      const connection = this.#connection;
      // A release in flight re-arms the timer when it is done (its NOTIFY must not die with the session).
      if (!connection || this.#held.size > 0 || this.#requests.size > 0 || this.#flushing || this.#releasing > 0) return;
      const idleFor = performance.now() - this.#idleSince;
      if (idleFor < this.sessionTimeoutMs) {
        this.#armLinger(this.sessionTimeoutMs - idleFor);
        return;
      }
      this.#connection = undefined;
      connection.dead = true;
      clearInterval(this.#heartbeatTimer);
      this.#heartbeatTimer = undefined;
      // After what is still queued on it (a lock given back, a waiter key given up): its NOTIFY or
      // unlock must not die with the session.
      void connection.tail.then(() => this.#disconnect(connection));
    }, ms);
    this.#lingerTimer.unref();
  }

  async #disconnect(connection: Connection): Promise<void> {
    connection.dead = true;
    if (this.#connection === connection) {
      this.#connection = undefined;
      clearInterval(this.#heartbeatTimer);
      this.#heartbeatTimer = undefined;
    }
    connection.ended ??= connection.client.end().catch(() => undefined);
    await connection.ended;
  }
}

/**
 * An error without a stack trace: the reason of a deliberate release points at no bug, and capturing a
 * stack would be most of what a release costs in this process.
 */
function stackless<T extends Error>(create: () => T): T {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return create();
  } finally {
    Error.stackTraceLimit = limit;
  }
}

class PgLease implements Lease {
  // Made when first asked for: an acquire + release that never looks at the signal (a short critical
  // section) then costs no AbortController and no abort reason.
  #controller: AbortController | undefined;
  #endReason: (() => Error) | undefined;
  #released: Promise<void> | undefined;

  constructor(
    readonly name: string,
    readonly key: string,
    readonly fencingToken: number,
    /** The connection whose session holds the advisory lock. */
    readonly connection: Connection,
    private readonly onRelease: (lease: PgLease) => Promise<void>,
  ) {}

  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      if (this.#endReason) this.#controller.abort(this.#endReason());
    }
    return this.#controller.signal;
  }

  /** Aborts the signal (released, lost, or closed); the lock itself is dealt with by the registry. */
  end(reason: Error | (() => Error)): void {
    if (this.#endReason) return;
    this.#endReason = typeof reason === 'function' ? reason : () => reason;
    this.#controller?.abort(this.#endReason());
  }

  release(): Promise<void> {
    if (this.#released) return this.#released;
    const wasLive = this.#endReason === undefined;
    this.end(() => stackless(() => new LockUnavailableError(`The lease on "${this.name}" (fencing token ${this.fencingToken}) was released.`)));
    // Lost or closed already: the registry has dealt with the lock.
    this.#released = wasLive ? this.onRelease(this) : Promise.resolve();
    return this.#released;
  }
}
