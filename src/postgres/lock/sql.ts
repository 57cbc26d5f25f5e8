import type * as pg from '../driver.js';
import { lockKey, quoteSchema } from '../schema.js';

/** Every statement the lock registry runs on its connection, prepared once per connection by name. */
export interface LockStatements {
  take: pg.QueryArrayConfig;
  takeOne: pg.QueryArrayConfig;
  release: pg.QueryArrayConfig;
  releaseAll: pg.QueryArrayConfig;
  unlock: pg.QueryArrayConfig;
  wait: pg.QueryArrayConfig;
  stopWaiting: pg.QueryArrayConfig;
}

/** The heartbeat: not prepared, it is the cheapest statement there is either way. */
export const HEARTBEAT: pg.QueryArrayConfig = { text: 'SELECT 1', rowMode: 'array' };

/** The statements for the locks of `schema`; `channel` is where releases tell standbys (see notifyChannel). */
export function lockStatements(schema: string, channel: string): LockStatements {
  const s = quoteSchema(schema);
  const name = (what: string): string => `eskit.${schema}.lock_${what}`;
  const array = 'array' as const;
  return {
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
                      ELSE (SELECT 1 FROM pg_notify('${channel}', $1::bigint::text)) END`,
    },
    releaseAll: {
      name: name('release_all'),
      rowMode: array,
      text: `SELECT pg_advisory_unlock(k), pg_notify('${channel}', k::text) FROM unnest($1::bigint[]) AS k`,
    },
    // Undoes locks a failed take may have been granted: session locks survive the statement's rollback.
    unlock: { name: name('unlock'), rowMode: array, text: 'SELECT pg_advisory_unlock(k) FROM unnest($1::bigint[]) AS k' },
    // A try: a releaser holds the key exclusively for an instant; the name is then tried again anyway.
    wait: { name: name('wait'), rowMode: array, text: 'SELECT pg_try_advisory_lock_shared(k) FROM unnest($1::bigint[]) AS k' },
    stopWaiting: { name: name('stop_waiting'), rowMode: array, text: 'SELECT pg_advisory_unlock_shared(k) FROM unnest($1::bigint[]) AS k' },
  };
}

/** TCP keepalive idle time for a session timeout: three probes' worth fit in the timeout. */
export function keepAliveSeconds(sessionTimeoutMs: number): number {
  return Math.max(1, Math.ceil(sessionTimeoutMs / 3000));
}

/**
 * Run once on a new lock connection; its last result is the session's backend pid. Server side: end
 * this session when it stays silent (frozen or vanished holder: its locks go with it), and notice a
 * dead peer through keepalives and unacknowledged data.
 */
export function sessionSetup(options: { sessionTimeoutMs: number; durableTokens: boolean; channel: string }): string {
  const { sessionTimeoutMs, durableTokens, channel } = options;
  const keepAlive = keepAliveSeconds(sessionTimeoutMs);
  return `SET idle_session_timeout = ${sessionTimeoutMs};
         SET tcp_keepalives_idle = ${keepAlive};
         SET tcp_keepalives_interval = ${Math.max(1, Math.ceil(keepAlive / 3))};
         SET tcp_keepalives_count = 3;
         SET tcp_user_timeout = ${sessionTimeoutMs};
         ${durableTokens ? '' : 'SET synchronous_commit = off;'}
         LISTEN "${channel}";
         SELECT pg_backend_pid() AS pid`;
}

export interface Keys {
  /** The lock's advisory key. */
  key: string;
  /** The key standbys hold shared while they wait, so a release sends its NOTIFY only when someone waits. */
  waitKey: string;
}

/** The advisory keys of a lock name, computed once per name. */
export class LockKeys {
  readonly #keys = new Map<string, Keys>();

  constructor(private readonly schema: string) {}

  of(name: string): Keys {
    let keys = this.#keys.get(name);
    if (!keys) {
      // A lock name cannot contain NUL, so no name's key is a waiter key.
      keys = { key: lockKey(name, this.schema), waitKey: lockKey(`waiting\u0000${name}`, this.schema) };
      this.#keys.set(name, keys);
    }
    return keys;
  }
}
