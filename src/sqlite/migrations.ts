import type Database from 'better-sqlite3';
import { isEskitError, MigrationError } from '../core/errors.js';
import { translateSqliteError } from './errors.js';

export interface SqliteMigration {
  /** 1, 2, 3, ... without gaps; the order migrations are applied in. */
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

/**
 * The schema, as a history. Append new migrations at the end; never edit or
 * reorder one that has shipped, since databases in the field already ran it.
 */
export const SQLITE_MIGRATIONS: readonly SqliteMigration[] = [
  {
    version: 1,
    name: 'events',
    // AUTOINCREMENT so a position is never handed out twice, even after the newest row is deleted.
    // No streams table: the stream version comes from the (stream_id, stream_version) index in
    // O(log n), and a measured upsert per append cost ~10% of append throughput for nothing.
    sql: `
      CREATE TABLE eskit_events (
        position       INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id       TEXT    NOT NULL UNIQUE,
        stream_id      TEXT    NOT NULL,
        stream_version INTEGER NOT NULL CHECK (stream_version > 0),
        type           TEXT    NOT NULL,
        data           TEXT    NOT NULL,
        metadata       TEXT    NOT NULL,
        created_at     INTEGER NOT NULL,
        UNIQUE (stream_id, stream_version)
      );
      CREATE INDEX eskit_events_type_position ON eskit_events (type, position);
    `,
  },
  {
    version: 2,
    name: 'checkpoints',
    // position NULL: claimed by a leader (fencing_token recorded) but never saved. fencing_token is the
    // newest token that claimed or saved the row; writes with an older one are rejected.
    sql: `
      CREATE TABLE eskit_checkpoints (
        name          TEXT    PRIMARY KEY,
        position      INTEGER NULL CHECK (position >= 0),
        fencing_token INTEGER NOT NULL DEFAULT 0,
        updated_at    INTEGER NOT NULL
      );
    `,
  },
  {
    version: 3,
    name: 'leases',
    // expires_at is milliseconds since the epoch by SQLite's clock (unixepoch('subsec')), never an
    // application's. holder and expires_at are NULL once released; the row stays so the token keeps growing.
    sql: `
      CREATE TABLE eskit_leases (
        name          TEXT    PRIMARY KEY,
        fencing_token INTEGER NOT NULL,
        holder        TEXT    NULL,
        expires_at    INTEGER NULL
      );
    `,
  },
  {
    version: 4,
    name: 'dead letters and completions',
    // Times are milliseconds since the epoch. attempts is a JSON array of {at: ms, error}; payload is
    // JSON text ('null' for none). No CHECK on stage, so a new stage needs no table rebuild. The index
    // serves what the leading node polls (its source's letters in 'redrive', oldest first).
    // Completions are looked up and pruned by (source, position) ranges only, so the key is the table.
    sql: `
      CREATE TABLE eskit_dead_letters (
        id             TEXT    PRIMARY KEY,
        source         TEXT    NOT NULL,
        stage          TEXT    NOT NULL,
        key            TEXT    NOT NULL,
        payload        TEXT    NOT NULL,
        event_id       TEXT    NOT NULL,
        event_type     TEXT    NOT NULL,
        event_position INTEGER NOT NULL,
        stream_id      TEXT    NOT NULL,
        attempts       TEXT    NOT NULL,
        status         TEXT    NOT NULL CHECK (status IN ('dead', 'redrive')),
        created_at     INTEGER NOT NULL,
        updated_at     INTEGER NOT NULL
      );
      CREATE INDEX eskit_dead_letters_source_status_id ON eskit_dead_letters (source, status, id);
      CREATE TABLE eskit_completions (
        source   TEXT    NOT NULL,
        position INTEGER NOT NULL,
        item_id  TEXT    NOT NULL,
        PRIMARY KEY (source, position, item_id)
      ) WITHOUT ROWID;
    `,
  },
  {
    version: 5,
    name: 'runner status',
    // What each running subscription, automation and view publishes about itself (sqlite-runner-status.ts):
    // one row per (name, node), rewritten on every change and on a heartbeat. Times are milliseconds
    // since the epoch by SQLite's clock; a running row not rewritten within 3 x heartbeat_ms is stale.
    // The work columns are an automation's to-do list (NULL for the others).
    sql: `
      CREATE TABLE eskit_runner_status (
        name              TEXT    NOT NULL,
        node_id           TEXT    NOT NULL,
        kind              TEXT    NOT NULL,
        state             TEXT    NOT NULL,
        role              TEXT    NOT NULL,
        fencing_token     INTEGER NULL,
        position          INTEGER NULL,
        handled           INTEGER NOT NULL,
        last_position     INTEGER NULL,
        last_handled_at   INTEGER NULL,
        pending           INTEGER NULL,
        running           INTEGER NULL,
        hung              INTEGER NULL,
        retrying          INTEGER NULL,
        unrecorded        INTEGER NULL,
        oldest_pending_ms INTEGER NULL,
        last_error        TEXT    NULL,
        heartbeat_ms      INTEGER NOT NULL,
        heartbeat_at      INTEGER NOT NULL,
        PRIMARY KEY (name, node_id)
      ) WITHOUT ROWID;
    `,
  },
  {
    version: 6,
    name: 'members',
    // Who is alive among the nodes of a partitioned runner (sqlite-member-registry.ts): one row per
    // (group, member). expires_at is milliseconds since the epoch by SQLite's clock, never an
    // application's; a row past it is dead, and a heartbeat of its group deletes it a minute later.
    sql: `
      CREATE TABLE eskit_members (
        grp        TEXT    NOT NULL,
        member     TEXT    NOT NULL,
        partitions INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (grp, member)
      ) WITHOUT ROWID;
    `,
  },
  {
    version: 7,
    name: 'stream lifecycle',
    // Lifecycle events (a stream deleted or truncated) belong to the stream they concern but sit
    // outside its numbering: stream_version counts down from -1, so no read of the stream, no version
    // check and no append meets them. SQLite cannot change a CHECK in place, so the table is rebuilt
    // (a copy of the log, once; triggers of your own on eskit_events must be created again). The
    // AUTOINCREMENT high-water mark is carried over, so no position is ever handed out twice.
    // eskit_deleted_events: what a soft delete keeps, out of every read (deleted_at: ms since the epoch).
    sql: `
      CREATE TABLE eskit_events_rebuilt (
        position       INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id       TEXT    NOT NULL UNIQUE,
        stream_id      TEXT    NOT NULL,
        stream_version INTEGER NOT NULL CHECK (stream_version <> 0),
        type           TEXT    NOT NULL,
        data           TEXT    NOT NULL,
        metadata       TEXT    NOT NULL,
        created_at     INTEGER NOT NULL,
        UNIQUE (stream_id, stream_version)
      );
      INSERT INTO eskit_events_rebuilt (position, event_id, stream_id, stream_version, type, data, metadata, created_at)
        SELECT position, event_id, stream_id, stream_version, type, data, metadata, created_at FROM eskit_events ORDER BY position;
      INSERT INTO sqlite_sequence (name, seq)
        SELECT 'eskit_events_rebuilt', seq FROM sqlite_sequence WHERE name = 'eskit_events'
          AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'eskit_events_rebuilt');
      UPDATE sqlite_sequence SET seq = MAX(seq, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'eskit_events'), 0))
        WHERE name = 'eskit_events_rebuilt';
      DROP TABLE eskit_events;
      ALTER TABLE eskit_events_rebuilt RENAME TO eskit_events;
      CREATE INDEX eskit_events_type_position ON eskit_events (type, position);
      CREATE TABLE eskit_deleted_events (
        position       INTEGER PRIMARY KEY,
        event_id       TEXT    NOT NULL,
        stream_id      TEXT    NOT NULL,
        stream_version INTEGER NOT NULL,
        type           TEXT    NOT NULL,
        data           TEXT    NOT NULL,
        metadata       TEXT    NOT NULL,
        created_at     INTEGER NOT NULL,
        deleted_at     INTEGER NOT NULL
      );
      CREATE INDEX eskit_deleted_events_stream ON eskit_deleted_events (stream_id, stream_version);
    `,
  },
  {
    version: 8,
    name: 'categories',
    // A category is the stream id up to its first '-' (the whole id when it has none). An expression
    // index: appends write nothing more, and a category read walks its own events in position order.
    // Queries must use this very expression (CATEGORY_SQL in sqlite-event-store.ts).
    sql: `
      CREATE INDEX eskit_events_category_position ON eskit_events (
        (CASE WHEN instr(stream_id, '-') > 0 THEN substr(stream_id, 1, instr(stream_id, '-') - 1) ELSE stream_id END),
        position
      );
    `,
  },
  {
    version: 9,
    name: 'snapshots',
    // The latest snapshot of each stream per snapshot name (one decider's state). state_version is the
    // version the code gave the state's shape (a row of another version is ignored); stream_version and
    // event_id name the last event folded in, so a loader can tell that this very event is still in
    // the stream. Replaced only by a snapshot of a higher stream_version. created_at: ms since the epoch.
    sql: `
      CREATE TABLE eskit_snapshots (
        stream_id      TEXT    NOT NULL,
        name           TEXT    NOT NULL,
        state_version  TEXT    NOT NULL,
        stream_version INTEGER NOT NULL,
        event_id       TEXT    NOT NULL,
        state          TEXT    NOT NULL,
        created_at     INTEGER NOT NULL,
        PRIMARY KEY (stream_id, name)
      ) WITHOUT ROWID;
    `,
  },
  {
    version: 10,
    name: 'subject keys',
    // The data keys of personal data, one live key per subject at most (the partial unique index).
    // forget sets key NULL and forgotten_at on the subject's rows and never deletes one: the row is
    // the fence that refuses new keys, and a destroyed key must never look like one never created. A
    // subject forgotten before it had a key gets a row with no key at all. Times: ms since the epoch.
    sql: `
      CREATE TABLE eskit_subject_keys (
        kid          TEXT    PRIMARY KEY,
        subject      TEXT    NOT NULL,
        key          BLOB    NULL,
        created_at   INTEGER NOT NULL,
        forgotten_at INTEGER NULL,
        CHECK ((key IS NULL) = (forgotten_at IS NOT NULL))
      );
      CREATE UNIQUE INDEX eskit_subject_keys_live ON eskit_subject_keys (subject) WHERE forgotten_at IS NULL;
      CREATE INDEX eskit_subject_keys_subject ON eskit_subject_keys (subject);
    `,
  },
  {
    version: 11,
    name: 'archived events',
    // What archiveStream moved out of the log (sqlite-lifecycle.ts), read back by readArchived.
    sql: `
      CREATE TABLE eskit_archived_events (
        position       INTEGER PRIMARY KEY,
        event_id       TEXT    NOT NULL,
        stream_id      TEXT    NOT NULL,
        stream_version INTEGER NOT NULL,
        type           TEXT    NOT NULL,
        data           TEXT    NOT NULL,
        metadata       TEXT    NOT NULL,
        created_at     INTEGER NOT NULL,
        archived_at    INTEGER NOT NULL
      );
      CREATE INDEX eskit_archived_events_stream ON eskit_archived_events (stream_id, stream_version);
    `,
  },
];

const CREATE_MIGRATIONS_TABLE = `
  CREATE TABLE IF NOT EXISTS eskit_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
  )`;

/** The highest migration version applied to the database; 0 for a database eskit never touched. */
export function sqliteSchemaVersion(database: Database.Database): number {
  try {
    const hasTable = database
      .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'eskit_migrations'")
      .pluck()
      .get();
    if (hasTable === undefined) return 0;
    return database.prepare('SELECT COALESCE(MAX(version), 0) FROM eskit_migrations').pluck().safeIntegers(false).get() as number;
  } catch (error) {
    throw translateSqliteError(error, database, 'read the schema version');
  }
}

/**
 * Brings the schema up to date and returns the versions it applied (empty when there was nothing to
 * do). Idempotent, and safe when several processes run it at once: each migration runs in its own
 * `BEGIN IMMEDIATE` transaction, which takes the write lock before it looks at the applied versions,
 * so a second process waits for the first and then finds the work done. A database migrated by a
 * newer eskit is left alone: migrations only add, so older code keeps working on it.
 */
export function migrateSqlite(database: Database.Database, migrations: readonly SqliteMigration[] = SQLITE_MIGRATIONS): number[] {
  const latest = migrations.length === 0 ? 0 : (migrations[migrations.length - 1] as SqliteMigration).version;
  // The common case (already migrated) must not take the write lock: every process runs this on start.
  if (sqliteSchemaVersion(database) >= latest) return [];

  const applied: number[] = [];
  for (const migration of migrations) {
    const apply = database.transaction((): boolean => {
      database.exec(CREATE_MIGRATIONS_TABLE);
      const current = database.prepare('SELECT COALESCE(MAX(version), 0) FROM eskit_migrations').pluck().safeIntegers(false).get() as number;
      if (current >= migration.version) return false;
      if (current !== migration.version - 1) {
        throw new MigrationError(
          `The database is at schema version ${current}, but migration ${migration.version} (${migration.name}) expects ${migration.version - 1}. ` +
            'The eskit_migrations table was changed by hand; restore it before migrating.',
        );
      }
      database.exec(migration.sql);
      database.prepare('INSERT INTO eskit_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(migration.version, migration.name, Date.now());
      return true;
    });
    try {
      if (apply.immediate()) applied.push(migration.version);
    } catch (error) {
      if (isEskitError(error)) throw error;
      const translated = translateSqliteError(error, database, `apply migration ${migration.version} (${migration.name})`);
      if (translated !== error) throw translated;
      const reason = error instanceof Error ? error.message : String(error);
      throw new MigrationError(
        `Migration ${migration.version} (${migration.name}) failed and was rolled back: ${reason}. Fix the cause and run migrate() again.`,
        { cause: error },
      );
    }
  }
  return applied;
}
