import type Database from 'better-sqlite3';
import { SQLITE_NOW_MS } from './sqlite-checkpoint-store.js';

type Statement<P extends unknown[], R = unknown> = Database.Statement<P, R>;

export interface LeaseRow {
  holder: string | null;
  token: number;
  expiresAt: number | null;
  /** The database's clock when the row was read, in ms. */
  now: number;
}

export interface LockStatements {
  /** The lease row with the database's time; no row when the lock was never taken. */
  look: Statement<[string], LeaseRow>;
  take: Statement<[{ name: string; holder: string; ttl: number; token: number | null; expiresAt: number | null }], number>;
  renew: Statement<[{ name: string; holder: string; token: number; ttl: number }]>;
  release: Statement<[string, number]>;
}

/** The lock registry's statements on `eskit_leases`, prepared on `db`. */
export function prepareLockStatements(db: Database.Database): LockStatements {
  // safeIntegers(false): a shared handle may have turned on BigInt results by default.
  return {
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
}
