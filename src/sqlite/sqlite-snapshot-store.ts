import type Database from 'better-sqlite3';
import { isEskitError } from '../core/errors.js';
import { checkSnapshot, checkSnapshotText, parseSnapshotState } from '../core/snapshot.js';
import type { NewSnapshot, SaveSnapshotOptions, Snapshot, SnapshotStore } from '../core/snapshot.js';
import { SQLITE_NOW_MS } from './sqlite-checkpoint-store.js';
import { resolveConnection } from './connection.js';
import type { SqliteConnectionOptions } from './connection.js';
import { translateSqliteError } from './errors.js';

export type SqliteSnapshotStoreOptions = Omit<SqliteConnectionOptions, 'path'>;

type Statement<P extends unknown[] | object, R = unknown> = Database.Statement<P extends unknown[] ? P : [P], R>;

interface SaveParams {
  streamId: string;
  name: string;
  stateVersion: string;
  streamVersion: number;
  eventId: string;
  state: string;
  replacingVersion: number | null;
  replacingEventId: string | null;
}

interface Statements {
  load: Statement<[string, string], [string, number, string, string, number]>;
  save: Statement<[SaveParams], number>;
  delete: Statement<[string]>;
}

// Prepared per connection, shared by every snapshot store on that handle.
const prepared = new WeakMap<Database.Database, Statements>();

function statements(database: Database.Database): Statements {
  let cached = prepared.get(database);
  if (cached !== undefined) return cached;
  // safeIntegers(false): a shared handle may have turned on BigInt results by default.
  cached = {
    load: database
      .prepare<[string, string], [string, number, string, string, number]>(
        'SELECT state_version, stream_version, event_id, state, created_at FROM eskit_snapshots WHERE stream_id = ? AND name = ?',
      )
      .raw()
      .safeIntegers(false),
    // One statement, atomic across connections: the row moves only to a higher stream version, or
    // replaces the very row the caller found unusable. No row returned: the stored one stays.
    save: database
      .prepare<[SaveParams], number>(
        `INSERT INTO eskit_snapshots (stream_id, name, state_version, stream_version, event_id, state, created_at)
         VALUES (:streamId, :name, :stateVersion, :streamVersion, :eventId, :state, ${SQLITE_NOW_MS})
         ON CONFLICT (stream_id, name) DO UPDATE SET
           state_version = excluded.state_version,
           stream_version = excluded.stream_version,
           event_id = excluded.event_id,
           state = excluded.state,
           created_at = excluded.created_at
         WHERE eskit_snapshots.stream_version < excluded.stream_version
            OR (eskit_snapshots.stream_version = :replacingVersion AND eskit_snapshots.event_id = :replacingEventId)
         RETURNING 1`,
      )
      .pluck()
      .safeIntegers(false),
    delete: database.prepare<[string]>('DELETE FROM eskit_snapshots WHERE stream_id = ?'),
  };
  prepared.set(database, cached);
  return cached;
}

/**
 * Snapshots in the `eskit_snapshots` table, next to the events (share the event store's connection
 * with `{ store }`). Every call is one statement, so it is atomic across processes sharing the file.
 */
export class SqliteSnapshotStore implements SnapshotStore {
  /** The connection the snapshots live on (an event store's, or the handle you passed). */
  readonly database: Database.Database;

  constructor(options: SqliteSnapshotStoreOptions) {
    this.database = resolveConnection(options, 'SqliteSnapshotStore', false).database;
  }

  async load(streamId: string, name: string): Promise<Snapshot | undefined> {
    checkSnapshotText('streamId', streamId);
    checkSnapshotText('name', name);
    const row = this.#run(`load the snapshot "${name}" of stream "${streamId}"`, () => statements(this.database).load.get(streamId, name));
    if (row === undefined) return undefined;
    const [stateVersion, streamVersion, eventId, state, createdAt] = row;
    return { streamId, name, stateVersion, streamVersion, eventId, state: parseSnapshotState(streamId, name, state), createdAt: new Date(createdAt) };
  }

  async save(snapshot: NewSnapshot, options?: SaveSnapshotOptions): Promise<boolean> {
    const checked = checkSnapshot(snapshot, options);
    const { streamId, name, stateVersion, streamVersion, eventId, state, replacing } = checked;
    const written = this.#run(`save the snapshot "${name}" of stream "${streamId}"`, () =>
      statements(this.database).save.get({
        streamId,
        name,
        stateVersion,
        streamVersion,
        eventId,
        state,
        replacingVersion: replacing?.streamVersion ?? null,
        replacingEventId: replacing?.eventId ?? null,
      }),
    );
    return written !== undefined;
  }

  async deleteStream(streamId: string): Promise<number> {
    checkSnapshotText('streamId', streamId);
    return this.#run(`delete the snapshots of stream "${streamId}"`, () => statements(this.database).delete.run(streamId).changes);
  }

  #run<T>(what: string, operation: () => T): T {
    try {
      return operation();
    } catch (error) {
      if (isEskitError(error)) throw error;
      throw translateSqliteError(error, this.database, what);
    }
  }
}
