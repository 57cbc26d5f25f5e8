import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { resolve as resolvePath } from 'node:path';
import type Database from 'better-sqlite3';
import { milliseconds } from '../core/validate.js';
import { InvalidArgumentError, isEskitError, LockUnavailableError } from '../core/errors.js';
import type { AcquireOptions, Lease, LockRegistry } from '../core/lock.js';
import { consoleLogger } from '../core/logger.js';
import type { Logger } from '../core/logger.js';
import { resolveConnection } from './connection.js';
import type { SqliteConnectionOptions } from './connection.js';
import { translateSqliteError } from './errors.js';
import { SQLITE_NOW_MS } from './sqlite-checkpoint-store.js';

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

type Statement<P extends unknown[], R = unknown> = Database.Statement<P, R>;

interface LeaseRow {
  holder: string | null;
  token: number;
  expiresAt: number | null;
  /** The database's clock when the row was read, in ms. */
  now: number;
}

interface Statements {
  /** The lease row with the database's time; no row when the lock was never taken. */
  look: Statement<[string], LeaseRow>;
  take: Statement<[{ name: string; holder: string; ttl: number; token: number | null; expiresAt: number | null }], number>;
  renew: Statement<[{ name: string; holder: string; token: number; ttl: number }]>;
  release: Statement<[string, number]>;
}

/**
 * Wake-ups for waiters in this process, keyed by database file and lock name, so that a release hands
 * the lock over at once to a waiter on any registry in the process instead of at its next poll.
 */
const wakers = new Map<string, Set<() => void>>();
const privateDatabaseKeys = new WeakMap<Database.Database, string>();

function fileKey(database: Database.Database): string {
  // An in-memory or temporary database is private to its connection.
  if (database.memory || database.name === '') {
    let key = privateDatabaseKeys.get(database);
    if (key === undefined) {
      key = `private:${randomUUID()}`;
      privateDatabaseKeys.set(database, key);
    }
    return key;
  }
  return `file:${resolvePath(database.name)}`;
}

function wake(key: string): void {
  for (const waiter of [...(wakers.get(key) ?? [])]) waiter();
}

function listen(key: string, waiter: () => void): () => void {
  let set = wakers.get(key);
  if (set === undefined) {
    set = new Set();
    wakers.set(key, set);
  }
  set.add(waiter);
  return () => {
    set.delete(waiter);
    if (set.size === 0 && wakers.get(key) === set) wakers.delete(key);
  };
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
  #statements: Statements | undefined;
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

  #prepare(): Statements {
    const db = this.database;
    // safeIntegers(false): a shared handle may have turned on BigInt results by default.
    const statements: Statements = {
      look: db
        .prepare<[string], LeaseRow>(
          `SELECT holder, fencing_token AS token, expires_at AS expiresAt, ${SQLITE_NOW_MS} AS now FROM eskit_leases WHERE name = ?`,
        )
        .safeIntegers(false),
      // Atomic on its own: the row is taken only if, at the moment the statement holds the write lock,
      // it is free, or it is still the expired row the caller watched (:token, :expiresAt) and expired
      // by the database's clock; otherwise nothing changes and no row comes back.
      take: db
        .prepare<[{ name: string; holder: string; ttl: number; token: number | null; expiresAt: number | null }], number>(`
          INSERT INTO eskit_leases (name, fencing_token, holder, expires_at)
          VALUES (:name, 1, :holder, ${SQLITE_NOW_MS} + :ttl)
          ON CONFLICT (name) DO UPDATE SET
            fencing_token = eskit_leases.fencing_token + 1,
            holder = excluded.holder,
            expires_at = excluded.expires_at
          WHERE eskit_leases.holder IS NULL OR eskit_leases.expires_at IS NULL
             OR (eskit_leases.expires_at < ${SQLITE_NOW_MS} AND eskit_leases.fencing_token = :token AND eskit_leases.expires_at = :expiresAt)
          RETURNING fencing_token`)
        .pluck()
        .safeIntegers(false),
      // `expires_at >= now`: a lease that expired is never revived, even when no one took it meanwhile.
      renew: db.prepare<[{ name: string; holder: string; token: number; ttl: number }]>(`
        UPDATE eskit_leases SET expires_at = ${SQLITE_NOW_MS} + :ttl
        WHERE name = :name AND holder = :holder AND fencing_token = :token AND expires_at >= ${SQLITE_NOW_MS}`),
      release: db.prepare<[string, number]>('UPDATE eskit_leases SET holder = NULL, expires_at = NULL WHERE name = ? AND fencing_token = ?'),
    };
    this.#statements = statements;
    return statements;
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

interface LeaseBackend {
  /** True when the row was still ours and unexpired, and now expires a ttl later. */
  renew(): boolean;
  release(): void;
  ended(lease: SqliteLease): void;
  translate(error: unknown, what: string): unknown;
  logger: Logger;
  ttlMs: number;
  marginMs: number;
  renewIntervalMs: number;
}

class SqliteLease implements Lease {
  readonly #controller = new AbortController();
  readonly #backend: LeaseBackend;
  /**
   * performance.now() at which this holder gives the lease up: a margin before another node may take it
   * (a ttl after its last renewal began, by the database's clock and by the other node's own).
   */
  #deadline: number;
  #failures = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #ended = false;

  constructor(
    readonly name: string,
    readonly fencingToken: number,
    deadline: number,
    backend: LeaseBackend,
  ) {
    this.#deadline = deadline;
    this.#backend = backend;
    // Ref'd on purpose: a worker whose only job is a subscription must stay alive while it leads.
    this.#schedule();
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  async release(): Promise<void> {
    if (this.#ended) return;
    this.#end(new LockUnavailableError(`The lease on "${this.name}" (fencing token ${this.fencingToken}) was released.`));
    try {
      this.#backend.release();
    } catch (error) {
      throw this.#backend.translate(error, `release lock "${this.name}"`);
    } finally {
      this.#backend.ended(this);
    }
  }

  #schedule(): void {
    const wait = Math.max(0, Math.min(this.#backend.renewIntervalMs, this.#deadline - performance.now()));
    this.#timer = setTimeout(() => this.#renew(), wait);
  }

  #renew(): void {
    this.#timer = undefined;
    if (this.#ended) return;
    const started = performance.now();
    if (started >= this.#deadline) {
      this.#lose(`it was not renewed within its ttl of ${this.#ttl()} (was this process frozen, starved or blocked?)`);
      return;
    }
    let renewed: boolean;
    try {
      renewed = this.#backend.renew();
    } catch (error) {
      const translated = this.#backend.translate(error, `renew lock "${this.name}"`);
      this.#failures += 1;
      if (this.#failures >= 2) {
        this.#lose('renewing it failed twice in a row', translated);
        return;
      }
      this.#backend.logger.warn({ lock: this.name, fencingToken: this.fencingToken, err: translated }, `Renewing lock "${this.name}" failed; trying again`);
      this.#schedule();
      return;
    }
    if (!renewed) {
      this.#lose('the database says it expired or another node took it over');
      return;
    }
    this.#failures = 0;
    this.#deadline = started + this.#backend.ttlMs - this.#backend.marginMs;
    // A renewal that waited on a busy database may come back too late to count.
    if (performance.now() >= this.#deadline) {
      this.#lose(`its renewal took longer than its ttl of ${this.#ttl()}`);
      return;
    }
    this.#schedule();
  }

  #ttl(): string {
    const { ttlMs, marginMs } = this.#backend;
    return marginMs > 0 ? `${ttlMs} ms less a margin of ${marginMs} ms` : `${ttlMs} ms`;
  }

  #end(reason: Error): void {
    this.#ended = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#controller.abort(reason);
  }

  #lose(reason: string, cause?: unknown): void {
    const error = new LockUnavailableError(
      `Lost the lease on "${this.name}" (fencing token ${this.fencingToken}): ${reason}. Stop work guarded by it; acquire the lock again to go on.`,
      { cause },
    );
    this.#end(error);
    this.#backend.logger.warn({ lock: this.name, fencingToken: this.fencingToken, err: error }, error.message);
    try {
      // Conditional on the token: frees the row for the next holder unless another node already took it.
      this.#backend.release();
    } catch {
      // The row expires by itself; nothing else to do.
    } finally {
      this.#backend.ended(this);
    }
  }
}
