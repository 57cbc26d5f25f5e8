import type pg from 'pg';
import { checkSnapshot, checkSnapshotText, parseSnapshotState } from '../core/snapshot.js';
import type { NewSnapshot, SaveSnapshotOptions, Snapshot, SnapshotStore } from '../core/snapshot.js';
import { quoteSchema } from './schema.js';
import { PostgresTableAccess } from './table-access.js';
import type { PostgresTableOptions } from './table-access.js';

export type PostgresSnapshotStoreOptions = PostgresTableOptions;

interface Statements {
  load: pg.QueryArrayConfig;
  save: pg.QueryArrayConfig;
  delete: pg.QueryArrayConfig;
}

// Prepared per schema, shared by every snapshot store.
const cache = new Map<string, Statements>();

function statements(schema: string): Statements {
  let cached = cache.get(schema);
  if (cached) return cached;
  const s = quoteSchema(schema);
  const name = (what: string): string => `eskit.${schema}.snapshot_${what}`;
  const array = 'array' as const;
  cached = {
    // state as text, parsed here: the pool may carry its own json type parser, and a row that does not
    // parse must become a CorruptSnapshotError like on the other adapters.
    load: {
      name: name('load'),
      rowMode: array,
      text: `SELECT state_version, stream_version, event_id, state::text, created_at FROM ${s}.snapshots WHERE stream_id = $1 AND name = $2`,
    },
    // One statement, atomic on its own: the row moves only to a higher stream version, or replaces the
    // very row the caller found unusable ($7, $8). No row returned: the stored one stays.
    save: {
      name: name('save'),
      rowMode: array,
      text: `
        INSERT INTO ${s}.snapshots AS t (stream_id, name, state_version, stream_version, event_id, state, created_at)
        VALUES ($1, $2, $3, $4, $5, $6::json, clock_timestamp())
        ON CONFLICT (stream_id, name) DO UPDATE SET
          state_version = excluded.state_version,
          stream_version = excluded.stream_version,
          event_id = excluded.event_id,
          state = excluded.state,
          created_at = excluded.created_at
        WHERE t.stream_version < excluded.stream_version
           OR (t.stream_version = $7::bigint AND t.event_id = $8::uuid)
        RETURNING 1`,
    },
    delete: { name: name('delete'), rowMode: array, text: `DELETE FROM ${s}.snapshots WHERE stream_id = $1` },
  };
  cache.set(schema, cached);
  return cached;
}

/**
 * Snapshots in `<schema>.snapshots`, next to the events. Every call is one statement, so it is atomic
 * across processes.
 *
 * ```ts
 * const snapshots = new PostgresSnapshotStore({ store }); // shares the event store's pool and schema
 * ```
 */
export class PostgresSnapshotStore implements SnapshotStore {
  readonly schema: string;
  readonly pool: pg.Pool;
  readonly #access: PostgresTableAccess;

  constructor(options: PostgresSnapshotStoreOptions) {
    this.#access = new PostgresTableAccess(options, 'PostgresSnapshotStore', 'snapshot store');
    this.schema = this.#access.schema;
    this.pool = this.#access.pool;
  }

  async load(streamId: string, name: string): Promise<Snapshot | undefined> {
    checkSnapshotText('streamId', streamId);
    checkSnapshotText('name', name);
    const { rows } = await this.#access.query(statements(this.schema).load, [streamId, name]);
    const row = rows[0];
    if (row === undefined) return undefined;
    const [stateVersion, streamVersion, eventId, state, createdAt] = row as [string, string, string, string, Date | string];
    return {
      streamId,
      name,
      stateVersion,
      streamVersion: Number(streamVersion),
      eventId,
      state: parseSnapshotState(streamId, name, state),
      createdAt: createdAt instanceof Date ? createdAt : new Date(createdAt),
    };
  }

  async save(snapshot: NewSnapshot, options?: SaveSnapshotOptions): Promise<boolean> {
    const { streamId, name, stateVersion, streamVersion, eventId, state, replacing } = checkSnapshot(snapshot, options);
    const values = [streamId, name, stateVersion, streamVersion, eventId, state, replacing?.streamVersion ?? null, replacing?.eventId ?? null];
    const { rows } = await this.#access.query(statements(this.schema).save, values);
    return rows.length > 0;
  }

  async deleteStream(streamId: string): Promise<number> {
    checkSnapshotText('streamId', streamId);
    const result = await this.#access.query(statements(this.schema).delete, [streamId]);
    return result.rowCount ?? 0;
  }

  /** Ends the pool if this store created it (from `connectionString`). Safe to call twice. */
  close(): Promise<void> {
    return this.#access.close();
  }
}
