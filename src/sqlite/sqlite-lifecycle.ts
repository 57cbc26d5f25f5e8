// Deleting, truncating and archiving streams on SQLite (see lifecycle.ts in core): one BEGIN IMMEDIATE
// transaction, so it holds the database's single write lock like every append, and its lifecycle
// event takes its position (AUTOINCREMENT: above every one ever handed out) under that lock.
import type Database from 'better-sqlite3';
import { StreamDeletedError, StreamNotFoundError } from '../core/errors.js';
import { lifecycleData, lifecycleType, truncateBeyondVersion } from '../core/lifecycle.js';
import type { LifecycleRequest, LifecycleWritten } from '../core/lifecycle.js';
import { assertExpectedVersion } from '../core/store.js';

/** A stream's version: its events only (lifecycle events have negative versions). */
export const STREAM_VERSION_SQL = 'SELECT COALESCE(MAX(stream_version), 0) FROM eskit_events WHERE stream_id = ? AND stream_version > 0';

/**
 * Whether the stream's latest lifecycle event (the lowest negative version) refuses appends. Asked
 * only for a stream at version 0, so appends to existing streams never pay for it.
 */
export function refusesAppends(db: Database.Database): (streamId: string) => void {
  const latest = db
    .prepare<[string], number>(
      // By the data, not the type: a delete with appends 'refuse' and an archive both say so.
      `SELECT json_extract(data, '$.appends') = 'refuse' FROM eskit_events
        WHERE stream_id = ? AND stream_version < 0 ORDER BY stream_version LIMIT 1`,
    )
    .pluck()
    .safeIntegers(false);
  return (streamId) => {
    if (latest.get(streamId) === 1) throw new StreamDeletedError(streamId);
  };
}

/** The lifecycle write, prepared on `db`; run it inside `BEGIN IMMEDIATE` (the returned function is a better-sqlite3 transaction). */
export function lifecycleWriter(db: Database.Database): Database.Transaction<(streamId: string, request: LifecycleRequest) => LifecycleWritten> {
  const prepare = <P extends unknown[]>(sql: string) => db.prepare<P>(sql).safeIntegers(false);
  const version = db.prepare<[string], number>(STREAM_VERSION_SQL).pluck().safeIntegers(false);
  const keep = prepare<[number, string]>(
    `INSERT INTO eskit_deleted_events (position, event_id, stream_id, stream_version, type, data, metadata, created_at, deleted_at)
     SELECT position, event_id, stream_id, stream_version, type, data, metadata, created_at, ? FROM eskit_events
      WHERE stream_id = ? AND stream_version > 0`,
  );
  const archive = prepare<[number, string]>(
    `INSERT INTO eskit_archived_events (position, event_id, stream_id, stream_version, type, data, metadata, created_at, archived_at)
     SELECT position, event_id, stream_id, stream_version, type, data, metadata, created_at, ? FROM eskit_events
      WHERE stream_id = ? AND stream_version > 0`,
  );
  const removeAll = prepare<[string]>('DELETE FROM eskit_events WHERE stream_id = ? AND stream_version > 0');
  const removeBefore = prepare<[string, number]>('DELETE FROM eskit_events WHERE stream_id = ? AND stream_version > 0 AND stream_version < ?');
  const forget = prepare<[string]>('DELETE FROM eskit_deleted_events WHERE stream_id = ?');
  const snapshots = prepare<[string]>('DELETE FROM eskit_snapshots WHERE stream_id = ?');
  const nextVersion = db
    .prepare<[string], number>('SELECT COALESCE(MIN(stream_version), 0) - 1 FROM eskit_events WHERE stream_id = ? AND stream_version < 0')
    .pluck()
    .safeIntegers(false);
  const insert = prepare<[string, string, number, string, string, number]>(
    "INSERT INTO eskit_events (event_id, stream_id, stream_version, type, data, metadata, created_at) VALUES (?, ?, ?, ?, ?, '{}', ?)",
  );
  return db.transaction((streamId: string, request: LifecycleRequest): LifecycleWritten => {
    const current = version.get(streamId) as number;
    if (current === 0) throw new StreamNotFoundError(streamId, request.kind);
    assertExpectedVersion(streamId, request.expected, current);
    const now = Date.now();
    if (request.kind === 'truncate') {
      if (request.before > current) throw truncateBeyondVersion(streamId, request.before, current);
      removeBefore.run(streamId, request.before);
    } else {
      if (request.kind === 'archive') archive.run(now, streamId);
      else if (request.hard) forget.run(streamId);
      else keep.run(now, streamId);
      removeAll.run(streamId);
      snapshots.run(streamId);
    }
    const data = JSON.stringify(lifecycleData(request, current));
    const { lastInsertRowid } = insert.run(request.id, streamId, nextVersion.get(streamId) as number, lifecycleType(request), data, now);
    return { position: Number(lastInsertRowid), timestamp: new Date(now) };
  });
}
