import { isEskitError, LockUnavailableError } from '../../core/errors.js';
import type { AcquireOptions, Lease } from '../../core/lock.js';
import type { Logger } from '../../core/logger.js';
import { connectionErrorFor } from '../connection.js';
import { translateError } from '../errors.js';
import { query } from './connection.js';
import type { Connection, LockSession } from './connection.js';
import { describeFailure, isConnectionFailure, isTransient, sqlState } from './failures.js';
import { PostgresLease } from './lease.js';
import type { LockKeys, LockStatements } from './sql.js';

const MAX_RETRY_MS = 5_000;

interface Request {
  readonly name: string;
  readonly key: string;
  /** onWaiting was called (the first attempt was denied, or this node already holds the lock). */
  waiting: boolean;
  readonly onWaiting: (() => void) | undefined;
  /** See AcquireOptions.routine. */
  readonly routine: boolean;
  grant(lease: PostgresLease): void;
  fail(error: unknown): void;
}

/** What the queue shares with the registry that owns it. */
export interface RequestsHost {
  readonly schema: string;
  readonly holderId: string;
  readonly pollIntervalMs: number;
  readonly logger: Logger;
  readonly statements: LockStatements;
  readonly keys: LockKeys;
  readonly session: LockSession;
  /** The leases this registry holds, by lock name: the queue adds what it is granted. */
  readonly held: Map<string, PostgresLease>;
  closed(): boolean;
  /** The lock session is over (see PostgresLockRegistry); `ended`: this registry ended it on purpose. */
  lost(connection: Connection, error: unknown, how?: 'failed' | 'ended'): void;
  release(lease: PostgresLease): Promise<void>;
  /** Closes the connection after a while if nothing is held or awaited any more. */
  idleCheck(): void;
}

/**
 * The pending acquires and how they are granted: every awaited lock is tried in one statement per
 * pass, one pass at a time; a denied lock is waited for (a waiter key that makes releasers NOTIFY, and
 * a poll), and a failed pass is retried with backoff.
 */
export class LockRequests {
  readonly #host: RequestsHost;
  /** Pending acquires per name, oldest first; a name is present only while its queue is non-empty. */
  readonly #requests = new Map<string, Request[]>();
  #flushing = false;
  #again = false;
  #failures = 0;
  #pollTimer: ReturnType<typeof setTimeout> | undefined;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(host: RequestsHost) {
    this.#host = host;
  }

  /** Names with pending acquires (held here or not). */
  get size(): number {
    return this.#requests.size;
  }

  /** A pass is running. */
  get flushing(): boolean {
    return this.#flushing;
  }

  has(name: string): boolean {
    return this.#requests.has(name);
  }

  /** Queues an acquire of `name` (checked and open: the registry saw to that) and starts a pass. */
  add(name: string, options: AcquireOptions): Promise<Lease> {
    const { signal } = options;
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
        key: this.#host.keys.of(name).key,
        waiting: false,
        onWaiting: options.onWaiting,
        routine: options.routine === true,
        grant: (lease) => {
          if (settle()) resolve(lease);
        },
        fail: (error) => {
          if (settle()) reject(error);
        },
      };
      const onAbort = (): void => {
        request.fail(signal?.reason);
        this.#host.idleCheck();
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
      if (this.#host.held.has(name)) this.#markWaiting(request, 'by this node, through another lease');
      this.kick();
    });
  }

  /** Stops the timers and fails every pending acquire with `error` (the registry is closing). */
  failAll(error: () => Error): void {
    clearTimeout(this.#pollTimer);
    clearTimeout(this.#retryTimer);
    for (const queue of [...this.#requests.values()]) {
      for (const request of [...queue]) request.fail(error());
    }
  }

  /** Whether a lock that was just released (NOTIFY payload: its key) is one this node waits for. */
  awaits(key: string | undefined): boolean {
    for (const [name, queue] of this.#requests) if (!this.#host.held.has(name) && queue[0]?.key === key) return true;
    return false;
  }

  /** Runs an attempt for every awaited lock now, or right after the one in flight. */
  kick(): void {
    if (this.#flushing) {
      this.#again = true;
      return;
    }
    void this.#flush();
  }

  /** Schedules the next pass after a failure; returns its delay, or undefined if one was scheduled already. */
  scheduleRetry(): number | undefined {
    if (this.#retryTimer || this.#host.closed()) return undefined;
    this.#failures += 1;
    // At once after a first failure (a killed backend), then backing off with jitter.
    const ceiling = Math.min(MAX_RETRY_MS, this.#host.pollIntervalMs * 2 ** (this.#failures - 2));
    const wait = this.#failures === 1 ? 0 : ceiling / 2 + (Math.random() * ceiling) / 2;
    // Ref'd on purpose: a standby whose only job is to wait must not exit while the database is away.
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.kick();
    }, wait);
    return wait;
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
    const connection = this.#host.session.current;
    if (!connection || connection.dead || !connection.waitingFor.delete(name)) return;
    void query(connection, this.#host.statements.stopWaiting, [[this.#host.keys.of(name).waitKey]]).catch(() => undefined);
  }

  #markWaiting(request: Request, why: string): void {
    if (request.waiting) return;
    request.waiting = true;
    const log = request.routine ? this.#host.logger.debug : this.#host.logger.warn;
    log.call(
      this.#host.logger,
      { lock: request.name, holder: this.#host.holderId, schema: this.#host.schema },
      `Lock "${request.name}" is held ${why}; this node stands by and takes over when it is free`,
    );
    try {
      request.onWaiting?.();
    } catch (error) {
      request.fail(error);
    }
  }

  /**
   * Tries every lock with pending requests that this registry does not hold, in one query per pass,
   * one pass at a time (two attempts for one name in flight at once would both be granted: session
   * locks are re-entrant).
   */
  async #flush(): Promise<void> {
    const host = this.#host;
    const sql = host.statements;
    this.#flushing = true;
    try {
      do {
        this.#again = false;
        if (host.closed()) return;
        if (this.#awaited().length === 0) break;
        let connection: Connection;
        try {
          connection = await host.session.connect();
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
              ? (await query(connection, sql.takeOne, keys)).filter((row) => row[0] !== null).map((row) => [names[0], row[0]])
              : await query(connection, sql.take, [names, keys]);
        } catch (error) {
          if (isConnectionFailure(error, connection)) {
            // The session is gone and with it anything this statement took; ask again on a new one.
            host.lost(connection, error);
            this.scheduleRetry();
            return;
          }
          if (await this.#takeFailed(connection, names, keys, error)) return;
          continue;
        }
        // The session ended right after answering (its FATAL came in the same read, and lost() has run):
        // whatever it granted went with it, and lost() has scheduled the retry.
        if (connection.dead) return;
        this.#failures = 0;
        for (const row of rows) {
          const name = row[0] as string;
          this.#granted(connection, name, keys[names.indexOf(name)] as string, Number(row[1]));
        }
        const denied: string[] = [];
        for (const name of names) {
          const queue = this.#requests.get(name);
          if (!queue || host.held.has(name)) continue;
          // A copy: an onWaiting callback may abort its acquire, which takes it out of the queue.
          for (const request of [...queue]) this.#markWaiting(request, 'by another node');
          if (this.#requests.has(name) && !connection.waitingFor.has(name)) denied.push(name);
        }
        if (denied.length > 0) {
          // Say we wait, then try once more at once: a release between our try and this saw no
          // waiter. A waiter key we could not take (a releaser held it for its instant: that release
          // has unlocked already) is one more reason to try again at once.
          const taken = await query(connection, sql.wait, [denied.map((name) => host.keys.of(name).waitKey)]).catch(() => undefined);
          // Failed (the connection, most likely): the next take or the poll deals with it.
          if (taken === undefined) continue;
          denied.forEach((name, i) => {
            if (taken[i]?.[0] === true) {
              connection.waitingFor.add(name);
              // Nobody here waits any more (aborted meanwhile): give the key back.
              if (!this.#requests.has(name) || host.held.has(name)) this.#stopWaiting(name);
            }
          });
          this.#again = true;
        }
      } while (this.#again);
    } finally {
      this.#flushing = false;
    }
    this.#schedulePoll();
    host.idleCheck();
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
    const host = this.#host;
    const undone = await query(connection, host.statements.unlock, [keys]).then(
      () => true,
      () => false,
    );
    const transient = isTransient(error);
    const holds = [...host.held.values()].some((lease) => lease.connection === connection);
    const locks = names.map((n) => `"${n}"`).join(', ');
    const waits = transient ? this.scheduleRetry() : undefined;
    // Not undone: the session may hold a lock that no lease knows of, which only its end frees.
    if (!undone || (transient && !holds)) host.lost(connection, error, 'ended');
    if (!transient) {
      const translated = translateError(error, host.schema);
      const failure = isEskitError(translated)
        ? translated
        : new LockUnavailableError(`Taking lock(s) ${locks} failed: ${describeFailure(error)}. Check the database and the role's privileges on schema "${host.schema}".`, {
            cause: error,
          });
      for (const name of names) for (const request of [...(this.#requests.get(name) ?? [])]) request.fail(failure);
      return false;
    }
    host.logger.warn(
      { locks: names, sqlstate: sqlState(error), err: error },
      `Taking lock(s) ${locks} failed (${describeFailure(error)}), which waiting can heal; ` +
        `trying again${waits === undefined ? '' : ` in ${Math.round(waits)} ms`} over ${host.session.current === connection ? 'the same' : 'a new'} session`,
    );
    return true;
  }

  /** Names with pending acquires that this registry does not hold. */
  #awaited(): string[] {
    return [...this.#requests.keys()].filter((name) => !this.#host.held.has(name));
  }

  #granted(connection: Connection, name: string, key: string, fencingToken: number): void {
    const host = this.#host;
    const request = this.#requests.get(name)?.[0];
    if (!request) {
      // Every request for it was aborted while the attempt was in flight: give it straight back.
      void query(connection, host.statements.release, [key, host.keys.of(name).waitKey]).catch((error: unknown) => {
        // A dead connection took the lock with it; anything else may leave it held by this session,
        // which only the session's end frees.
        if (isConnectionFailure(error, connection)) {
          host.lost(connection, error);
          return;
        }
        host.logger.error(
          { lock: name, sqlstate: sqlState(error), err: error },
          `Giving back lock "${name}" (its acquire was aborted) failed (${describeFailure(error)}); ending the lock session to free it`,
        );
        host.lost(connection, error, 'ended');
      });
      return;
    }
    const lease = new PostgresLease(name, key, fencingToken, connection, (released) => host.release(released));
    host.held.set(name, lease);
    this.#stopWaiting(name);
    const log = request.routine ? host.logger.debug : host.logger.info;
    log.call(host.logger, { lock: name, fencingToken, holder: host.holderId }, `Lock "${name}" acquired${request.waiting ? ' after waiting' : ''} (fencing token ${fencingToken})`);
    request.grant(lease);
    // Further acquires of the same name in this process now wait for this lease.
    for (const other of this.#requests.get(name) ?? []) this.#markWaiting(other, 'by this node, through another lease');
  }

  /**
   * Errors waiting will not heal (authentication, a missing database, a failed migration) fail every
   * request. A transient one (refused, reset, starting up) fails only new requests of a registry that
   * has never connected (most likely wrong settings); otherwise requests keep trying, so that a
   * database restart, which also takes the leases, leaves standbys waiting instead of failed.
   */
  #connectFailed(names: string[], error: unknown): void {
    const host = this.#host;
    const named = connectionErrorFor(error, host.session.config);
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
        if (!transient || (!request.waiting && !host.session.everConnected)) request.fail(failure);
      }
    }
    if (this.#requests.size > 0) {
      host.logger.warn({ err: error }, `Could not open the lock connection (${describeFailure(error)}); trying again`);
      this.scheduleRetry();
    }
  }

  #schedulePoll(): void {
    if (this.#pollTimer || this.#host.closed()) return;
    if (this.#awaited().length === 0) return;
    this.#pollTimer = setTimeout(() => {
      this.#pollTimer = undefined;
      this.kick();
    }, this.#host.pollIntervalMs);
    this.#pollTimer.unref();
  }
}
