import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type Database from 'better-sqlite3';
import { milliseconds } from '../core/validate.js';
import { InvalidArgumentError, isEskitError, LockUnavailableError } from '../core/errors.js';
import type { AcquireOptions, Lease, LockRegistry } from '../core/lock.js';
import { consoleLogger } from '../core/logger.js';
import type { Logger } from '../core/logger.js';
import { resolveConnection } from './connection.js';
import type { SqliteConnectionOptions } from './connection.js';
import { translateSqliteError } from './errors.js';
import { prepareLockStatements } from './lock-statements.js';
import type { LeaseRow, LockStatements } from './lock-statements.js';
import { fileKey, listen, wake } from './lock-wakeups.js';
import { SqliteLease } from './sqlite-lease.js';

export interface SqliteLockRegistryOptions extends SqliteConnectionOptions {
  /** A database file of its own, opened (and closed on `close()`) by the registry. */
  path?: string;
  /**
   * How long a lease lives without renewal, by the database's clock. A frozen or vanished holder is
   * replaced after at most this long. Default 5000.
   */
  ttlMs?: number;
  /** How often the holder renews its lease. Must be below `ttlMs`; default a third of it. */
  renewIntervalMs?: number;
  /** How often a node waiting for a lock held by another process looks again. Default 100. */
  pollIntervalMs?: number;
  /** Names this node in the lease row (for operators). Default `<host>/<pid>/<random>`. */
  holderId?: string;
  logger?: Logger;
}

interface Waiter {
  fail(error: Error): void;
}

/** A lease held by another node, as this registry first saw it (unchanged since: not renewed). */
interface Watch {
  token: number;
  expiresAt: number;
  /** performance.now() when this registry first saw the row so. */
  since: number;
  /** How long the row must stay so, on this registry's monotonic clock, before it may be taken. */
  waitMs: number;
}

/**
 * Leader election on a SQLite file: one row per lock in `eskit_leases`, holding the newest fencing
 * token, the holder and an expiry. Every decision about expiry is made by SQLite's clock inside the
 * statement that acts on it, never by comparing an application clock with a stored time (the clock-skew
 * failure that cost Axon ownership violations). All processes sharing a SQLite file run on one host
 * (WAL needs shared memory), so this is that host's clock for every node.
 *
 * The holder renews every `renewIntervalMs`. It gives the lease up (aborting `lease.signal`) as soon as
 * a renewal finds the row taken or expired by the database's clock, two renewals in a row fail, or
 * `ttlMs` less a margin (a tenth of it, less if `renewIntervalMs` leaves no room) has passed on its own
 * monotonic clock since the last successful renewal began, whichever comes first. A frozen or killed
 * holder is replaced within `ttlMs` (plus one poll); a graceful release hands over at once in-process
 * and within one `pollIntervalMs` across processes.
 *
 * Clock steps. SQLite's clock is the wall clock, which an NTP step, a resumed VM or an operator can move
 * at once; the monotonic clocks cannot be moved. So a node takes a lease another node holds only when
 * the database's clock says it expired AND the node has itself seen it unrenewed (same token, same
 * expiry) for a ttl (or the longer time the row had left when first seen) on its own monotonic clock.
 * The holder's monotonic deadline lies the margin before a ttl after its last renewal, which came before
 * that sighting: so by then the holder has given the lease up, whatever the wall clock did (unless its
 * event loop was blocked past the margin: a frozen process, which fencing tokens are for).
 * - A forward step can make the database call a live holder's lease expired early. The holder learns at
 *   its next renewal and gives the lease up; no other node takes it before that, or before the
 *   holder's own deadline. It cannot give the lease to two holders at once.
 * - A backward step makes leases look longer-lived. It cannot cause two holders either. A live holder
 *   keeps its lease (its renewals write the stepped time plus a ttl); one that dies before its next
 *   renewal is replaced later by up to the size of the step.
 * - The price: a node that first sees a lease when its holder is already gone (starting after a crash)
 *   waits a ttl before taking it, as it cannot tell a dead holder from a live one behind a step; a
 *   standby that was watching takes over at most one poll later than the expiry. A released lease has
 *   no holder and is taken at once. Nodes sharing a lock should use the same `ttlMs`.
 */
export class SqliteLockRegistry implements LockRegistry {
  readonly database: Database.Database;
  readonly holderId: string;
  readonly ttlMs: number;
  readonly renewIntervalMs: number;
  readonly pollIntervalMs: number;
  readonly #owned: boolean;
  /** How long before its ttl a holder whose renewals did not land gives its lease up. */
  readonly #marginMs: number;
  readonly #logger: Logger;
  readonly #key: string;
  readonly #held = new Set<SqliteLease>();
  readonly #waiters = new Set<Waiter>();
  /**
   * Per lock name, the lease held elsewhere as this registry first saw it. Kept across acquire calls,
   * so that a try-lock repeated until it succeeds can take a dead holder's lease.
   */
  readonly #watches = new Map<string, Watch>();
  #statements: LockStatements | undefined;
  /**
   * Set before close() starts: releasing a lease runs its abort listeners synchronously, and one that
   * acquires again must be refused, not granted a lease that close() has already passed over.
   */
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(options: SqliteLockRegistryOptions) {
    this.ttlMs = milliseconds('ttlMs', options.ttlMs ?? 5000);
    this.renewIntervalMs = milliseconds('renewIntervalMs', options.renewIntervalMs ?? Math.max(1, Math.floor(this.ttlMs / 3)));
    if (this.renewIntervalMs >= this.ttlMs) {
      throw new InvalidArgumentError(`renewIntervalMs (${this.renewIntervalMs}) must be below ttlMs (${this.ttlMs}), or every lease would expire between renewals`);
    }
    this.pollIntervalMs = milliseconds('pollIntervalMs', options.pollIntervalMs ?? 100);
    // At most half the gap between renewals and the ttl: a holder renewing on time never reaches it.
    this.#marginMs = Math.min(Math.floor(this.ttlMs / 10), Math.floor((this.ttlMs - this.renewIntervalMs) / 2));
    const holderId = options.holderId ?? `${hostname()}/${process.pid}/${randomUUID().slice(0, 8)}`;
    if (typeof holderId !== 'string' || holderId.length === 0) throw new InvalidArgumentError('holderId must be a non-empty string');
    this.holderId = holderId;
    this.#logger = options.logger ?? consoleLogger();
    const { database, owned } = resolveConnection(options, 'SqliteLockRegistry', true);
    this.database = database;
    this.#owned = owned;
    this.#key = fileKey(database);
  }

  async acquire(name: string, options: AcquireOptions = {}): Promise<Lease> {
    if (typeof name !== 'string' || name.length === 0) throw new InvalidArgumentError('A lock needs a non-empty name');
    this.#assertOpen();
    options.signal?.throwIfAborted();
    const first = this.#tryTake(name);
    if (first instanceof SqliteLease) return first;
    if (first instanceof Error) throw first;
    this.#logger.debug({ lock: name, holder: this.holderId }, `Lock "${name}" is held by another node; waiting for it`);
    return new Promise<Lease>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      let done = false;
      const finish = (): void => {
        done = true;
        clearTimeout(timer);
        unlisten();
        this.#waiters.delete(waiter);
        options.signal?.removeEventListener('abort', onAbort);
      };
      const waiter: Waiter = {
        fail: (error) => {
          if (done) return;
          finish();
          reject(error);
        },
      };
      const attempt = (): void => {
        if (done) return;
        clearTimeout(timer);
        timer = undefined;
        const outcome = this.#tryTake(name);
        if (outcome instanceof SqliteLease) {
          finish();
          resolve(outcome);
        } else if (outcome instanceof Error) {
          waiter.fail(outcome);
        } else {
          timer = setTimeout(attempt, this.pollIntervalMs);
        }
      };
      const onAbort = (): void => waiter.fail(options.signal?.reason as Error);
      const unlisten = listen(`${this.#key}\u0000${name}`, attempt);
      this.#waiters.add(waiter);
      options.signal?.addEventListener('abort', onAbort, { once: true });
      timer = setTimeout(attempt, this.pollIntervalMs);
      // Called once the waiter listens: an abort, a release or a close() from inside onWaiting is heard
      // at once, instead of at the next poll or never. A throw fails the acquire unless it was granted.
      try {
        options.onWaiting?.();
      } catch (error) {
        waiter.fail(error as Error);
      }
    });
  }

  /**
   * Releases every lease this registry holds, fails pending `acquire` calls with
   * `ESKIT_LOCK_UNAVAILABLE`, stops all timers and closes the connection if the registry opened it.
   * Safe to call twice.
   */
  close(): Promise<void> {
    if (this.#closing === undefined) {
      this.#closed = true;
      this.#closing = this.#close();
    }
    return this.#closing;
  }

  async #close(): Promise<void> {
    for (const waiter of [...this.#waiters]) waiter.fail(new LockUnavailableError('The lock registry was closed while this node waited for a lock.'));
    for (const lease of [...this.#held]) {
      try {
        await lease.release();
      } catch (error) {
        this.#logger.warn({ lock: lease.name, err: error }, `Releasing lock "${lease.name}" on close failed; it expires by itself within ${this.ttlMs} ms`);
      }
    }
    if (this.#owned && this.database.open) this.database.close();
  }

  #assertOpen(): void {
    if (this.#closed) throw new LockUnavailableError('The lock registry is closed; create a new one.');
  }

  #prepare(): LockStatements {
    this.#statements = prepareLockStatements(this.database);
    return this.#statements;
  }

  /**
   * The watch on a row held elsewhere, started anew when the row changed (renewed, or taken by another
   * holder). It lasts a ttl, or what the row had left by the database's clock if that is longer (a
   * holder with a longer ttl); a row already expired when first seen gets a full ttl too: its holder
   * may be alive behind a forward step of the clock.
   */
  #watch(name: string, row: LeaseRow & { expiresAt: number }, seenAt: number): Watch {
    const seen = this.#watches.get(name);
    if (seen !== undefined && seen.token === row.token && seen.expiresAt === row.expiresAt) return seen;
    const watch: Watch = { token: row.token, expiresAt: row.expiresAt, since: seenAt, waitMs: Math.max(this.ttlMs, row.expiresAt - row.now) };
    this.#watches.set(name, watch);
    return watch;
  }

  /**
   * One attempt: a lease, undefined when another node holds the lock, or an error that waiting will not
   * heal. A busy database counts as held: the next poll tries again.
   */
  #tryTake(name: string): SqliteLease | Error | undefined {
    if (this.#closed) return new LockUnavailableError('The lock registry was closed while this node waited for a lock.');
    const started = performance.now();
    let token: number | undefined;
    try {
      const statements = this.#statements ?? this.#prepare();
      // A read first, so that standbys polling a held lock never take the write lock from appenders.
      const row = statements.look.get(name);
      let watched: Watch | undefined;
      if (row !== undefined && row.holder !== null && row.expiresAt !== null) {
        // Read after the row: a renewal that committed just before it began no earlier.
        const seenAt = performance.now();
        watched = this.#watch(name, { ...row, expiresAt: row.expiresAt }, seenAt);
        if (row.expiresAt >= row.now || seenAt - watched.since < watched.waitMs) return undefined;
      }
      token = statements.take.get({ name, holder: this.holderId, ttl: this.ttlMs, token: watched?.token ?? null, expiresAt: watched?.expiresAt ?? null });
    } catch (error) {
      const translated = translateSqliteError(error, this.database, `take lock "${name}"`);
      if (isEskitError(translated, 'ESKIT_STORE_BUSY')) {
        this.#logger.warn({ lock: name, err: translated }, `Taking lock "${name}" failed on a busy database; trying again`);
        return undefined;
      }
      return translated instanceof Error ? translated : new LockUnavailableError(`Taking lock "${name}" failed: ${String(translated)}`);
    }
    if (token === undefined) return undefined;
    this.#watches.delete(name);
    const lease = new SqliteLease(name, token, started + this.ttlMs - this.#marginMs, {
      renew: () => {
        const statements = this.#statements ?? this.#prepare();
        return statements.renew.run({ name, holder: this.holderId, token: token as number, ttl: this.ttlMs }).changes === 1;
      },
      release: () => {
        const statements = this.#statements ?? this.#prepare();
        statements.release.run(name, token as number);
      },
      ended: (lease) => {
        this.#held.delete(lease);
        wake(`${this.#key}\u0000${name}`);
      },
      translate: (error, what) => translateSqliteError(error, this.database, what),
      logger: this.#logger,
      ttlMs: this.ttlMs,
      marginMs: this.#marginMs,
      renewIntervalMs: this.renewIntervalMs,
    });
    this.#held.add(lease);
    this.#logger.debug({ lock: name, fencingToken: token, holder: this.holderId }, `Took lock "${name}"`);
    return lease;
  }
}
