import type pg from 'pg';
import { MigrationError } from '../core/errors.js';
import { archiveMigrationSql, lifecycleMigrationSql } from './lifecycle-functions.js';
import { subjectKeysTableSql } from './subject-keys-table.js';
import { appendFunctions, appendGroupFunction, EXPECTED_ANY, EXPECTED_NO_STREAM, EXPECTED_STREAM_EXISTS, fasterAppendOne, VERSION_CONFLICT_SQLSTATE } from './append-functions.js';
import { connectionFailure, hearWhileCheckedOut } from './connection.js';
import { advisoryKey, quoteSchema } from './schema.js';

/**
 * One step of the schema. Steps are applied in `version` order, each in its own transaction, and
 * recorded in `<schema>.migrations`. Never edit a released step: add a new one (checkpoints, dead
 * letters and leases come as versions 2, 3, ...).
 */
export interface PostgresMigration {
  version: number;
  name: string;
  /** The SQL of the step; `schema` is already validated and quoted. May hold several statements. */
  sql(schema: string, rawSchema: string): string;
}


const eventsMigration: PostgresMigration = {
  version: 1,
  name: 'events',
  sql: (s, rawSchema) => `
CREATE SEQUENCE ${s}.events_position AS bigint;

CREATE TABLE ${s}.events (
  position bigint NOT NULL,
  id uuid NOT NULL,
  stream_id text NOT NULL,
  stream_version bigint NOT NULL,
  type text NOT NULL,
  data jsonb NOT NULL,
  metadata jsonb NOT NULL,
  created_at timestamptz NOT NULL,
  CONSTRAINT events_pkey PRIMARY KEY (position),
  CONSTRAINT events_id_key UNIQUE (id),
  CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version),
  CONSTRAINT events_stream_version_check CHECK (stream_version >= 1)
);

ALTER SEQUENCE ${s}.events_position OWNED BY ${s}.events.position;

-- append(stream, expected, ids[], types[], data[], metadata[]) appends events to one stream, and
-- append_one(stream, expected, id, type, data, metadata) one event (no arrays to build and take apart).
-- Each whole append is one call, in one round trip, in autocommit.
--
-- Global order. A reader pages with "WHERE position > last seen", so a row must never become visible
-- at a position below one a reader has already seen. Sequence values are handed out before commit, so
-- with concurrent writers that is not true by itself. Here every append takes one transaction-scoped
-- advisory lock (per schema) BEFORE it reads the stream version and draws its positions, and holds it
-- until its commit is visible (PostgreSQL releases locks after the commit is visible to snapshots).
-- Position order is therefore commit order, and a plain keyset read can never skip a row.
--
-- What it costs: appends to one schema run one at a time, from the lock to the end of the commit
-- (including the WAL flush). Concurrent write throughput is capped by that section: adding writers
-- does not add throughput, it adds waiting (measured here: ~the same events/s with 1 or 8 writers,
-- where raw INSERTs scale with group commit). Everything else (parsing the jsonb parameters, the
-- round trip, the client) happens outside it, and readers never wait for it.
--
-- Why an advisory lock and a sequence, not a counter row (UPDATE head SET position = position + n):
-- both serialise, but the counter row leaves one dead row version per append, which cannot be pruned
-- while any transaction in the database holds an old snapshot; with one long transaction open,
-- appends measured 2-5x slower and kept getting slower, while this stayed flat. The price: an append
-- that fails after drawing its positions (a duplicate event id) leaves a gap. Positions are never
-- reused and gaps are allowed by the contract; a version conflict is detected before any position is
-- drawn, so it leaves none.
--
-- Expected version: >= 0 exact, ${EXPECTED_ANY} any, ${EXPECTED_NO_STREAM} no stream, ${EXPECTED_STREAM_EXISTS} stream exists. It is checked
-- after the lock is taken, so inside the write. A conflict raises SQLSTATE ${VERSION_CONFLICT_SQLSTATE} with the actual
-- version as DETAIL. Call these in autocommit (the adapter does): inside a longer transaction the lock,
-- and so every other writer, waits for that transaction to end.
${appendFunctions(s, rawSchema, { replace: false, notify: false })}`,
};

const checkpointsAndLeasesMigration: PostgresMigration = {
  version: 2,
  name: 'checkpoints_and_leases',
  sql: (s) => `
-- One row per subscription. position is NULL while a leader has claimed the row but never saved;
-- fencing_token is the newest token that claimed or saved it (0: never fenced). Writes carrying an
-- older token are refused (see postgres-checkpoint-store.ts).
CREATE TABLE ${s}.checkpoints (
  name text PRIMARY KEY,
  position bigint NULL,
  fencing_token bigint NOT NULL DEFAULT 0,
  updated_at timestamptz NOT NULL
);

-- One row per lock name of PostgresLockRegistry: the last fencing token handed out, and who took it when.
-- Who holds the lock now is the advisory lock itself (pg_locks), not this row: the row only makes the
-- token grow across holders, processes and restarts.
CREATE TABLE ${s}.leases (
  name text PRIMARY KEY,
  fencing_token bigint NOT NULL,
  holder text,
  acquired_at timestamptz
);
`,
};

const appendNotifyMigration: PostgresMigration = {
  version: 3,
  name: 'append_notify',
  // Same functions as version 1, plus the wake-up: listeners of other processes hear of an append on
  // commit instead of at their next poll. The bodies are replaced, the signatures are unchanged.
  sql: (s, rawSchema) => appendFunctions(s, rawSchema, { replace: true, notify: true }),
};

const deadLettersAndCompletionsMigration: PostgresMigration = {
  version: 4,
  name: 'dead_letters_and_completions',
  sql: (s) => `
-- The dead-letter queue (postgres-dead-letter-store.ts). Ids are UUIDv7, so id order is creation
-- order. payload is the to-do item's payload ('null' for none); attempts is a JSON array of
-- {at: milliseconds, error}. Times are the server's clock, to the millisecond. No CHECK on stage, so a
-- new stage needs no constraint change. The index serves what the leading node polls (its source's
-- letters in 'redrive', oldest first) and an operator's redrive or count of one source.
CREATE TABLE ${s}.dead_letters (
  id uuid NOT NULL,
  source text NOT NULL,
  stage text NOT NULL,
  key text NOT NULL,
  payload jsonb NOT NULL,
  event_id uuid NOT NULL,
  event_type text NOT NULL,
  event_position bigint NOT NULL,
  stream_id text NOT NULL,
  attempts jsonb NOT NULL,
  status text NOT NULL,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  CONSTRAINT dead_letters_pkey PRIMARY KEY (id),
  CONSTRAINT dead_letters_status_check CHECK (status IN ('dead', 'redrive'))
);
CREATE INDEX dead_letters_source_status_id ON ${s}.dead_letters (source, status, id);

-- Which to-do items of an automation have run (postgres-completion-store.ts). Only ever looked up and
-- pruned by (source, position) ranges, which the primary key serves.
CREATE TABLE ${s}.completions (
  source text NOT NULL,
  position bigint NOT NULL,
  item_id text NOT NULL,
  CONSTRAINT completions_pkey PRIMARY KEY (source, position, item_id)
);
`,
};

const leaseTokensMigration: PostgresMigration = {
  version: 5,
  name: 'lease_tokens',
  sql: (s) => `
-- PostgresLockRegistry's fencing tokens: one sequence per schema, drawn once per granted lock. A token only
-- has to grow with every new holder of a name; a sequence does that for every name at once without a
-- row to update (and vacuum) per acquire. It starts above every token handed out or claimed so far.
-- The leases table stays for nodes of older versions during a rolling deploy; their tokens can be
-- lower than the sequence's, so such a node is fenced (and stands by) after a newer one took over.
CREATE SEQUENCE ${s}.lease_tokens AS bigint MINVALUE 1;
SELECT setval('${s}.lease_tokens', GREATEST((SELECT max(fencing_token) FROM ${s}.leases), (SELECT max(fencing_token) FROM ${s}.checkpoints), 0) + 1, false);
`,
};

const runnerStatusMigration: PostgresMigration = {
  version: 6,
  name: 'runner_status',
  sql: (s) => `
-- What each running subscription, automation and view publishes about itself (postgres-runner-status.ts):
-- one row per (name, node), rewritten on every change and on a heartbeat. heartbeat_at is the server's
-- clock; a running row not rewritten within 3 x heartbeat_ms is stale. The work columns are an
-- automation's to-do list (NULL for the others). No CHECK on kind, state or role, so a new value needs
-- no constraint change.
CREATE TABLE ${s}.runner_status (
  name text NOT NULL,
  node_id text NOT NULL,
  kind text NOT NULL,
  state text NOT NULL,
  role text NOT NULL,
  fencing_token bigint,
  position bigint,
  handled bigint NOT NULL,
  last_position bigint,
  last_handled_at timestamptz,
  pending integer,
  running integer,
  hung integer,
  retrying integer,
  unrecorded integer,
  oldest_pending_ms bigint,
  last_error text,
  heartbeat_ms integer NOT NULL,
  heartbeat_at timestamptz NOT NULL,
  CONSTRAINT runner_status_pkey PRIMARY KEY (name, node_id)
);
`,
};

const appendGroupMigration: PostgresMigration = {
  version: 7,
  name: 'append_group',
  sql: (s, rawSchema) => appendGroupFunction(s, rawSchema) + fasterAppendOne(s, rawSchema),
};

const membersMigration: PostgresMigration = {
  version: 8,
  name: 'members',
  sql: (s) => `
-- Who is alive among the nodes of a partitioned runner (postgres-member-registry.ts): one row per
-- (group, member), rewritten by every heartbeat. expires_at is the server's clock; session_pid is the
-- backend pid of the member's lock connection when it had one, so that a killed node (its session
-- gone from pg_stat_activity) is dead at once rather than when its ttl runs out. A heartbeat of the
-- group deletes rows dead for more than a minute.
CREATE TABLE ${s}.members (
  grp text NOT NULL,
  member text NOT NULL,
  partitions integer NOT NULL,
  session_pid integer,
  expires_at timestamptz NOT NULL,
  CONSTRAINT members_pkey PRIMARY KEY (grp, member)
);
`,
};

const lifecycleMigration: PostgresMigration = {
  version: 9,
  name: 'stream_lifecycle',
  sql: (s) => `
-- Lifecycle events (a stream deleted or truncated) belong to the stream they concern, so they reach
-- the readers of its category, but they sit outside its numbering: their stream_version counts down
-- from -1, so no read of the stream, no version check and no append ever meets them. Existing rows are
-- all >= 1; NOT VALID skips re-checking them (the constraint still holds for every new row).
ALTER TABLE ${s}.events DROP CONSTRAINT events_stream_version_check;
ALTER TABLE ${s}.events ADD CONSTRAINT events_stream_version_check CHECK (stream_version <> 0) NOT VALID;

-- What a soft delete keeps: the stream's events as they were, out of every read, for an audit or a
-- restore by hand. deleted_at is the server's clock. A hard delete removes the stream's rows here too.
CREATE TABLE ${s}.deleted_events (
  position bigint NOT NULL,
  id uuid NOT NULL,
  stream_id text NOT NULL,
  stream_version bigint NOT NULL,
  type text NOT NULL,
  data jsonb NOT NULL,
  metadata jsonb NOT NULL,
  created_at timestamptz NOT NULL,
  deleted_at timestamptz NOT NULL,
  CONSTRAINT deleted_events_pkey PRIMARY KEY (position)
);
CREATE INDEX deleted_events_stream ON ${s}.deleted_events (stream_id, stream_version);
`,
};

const categoriesMigration: PostgresMigration = {
  version: 10,
  name: 'categories',
  sql: (s) => `
-- A category is the stream id up to its first '-' (the whole id when it has none): 'order-42' is in
-- 'order', 'shopping-cart-1' in 'shopping'. An expression index rather than a column: appends write
-- nothing more, and a category read walks exactly its own events in position order. The query must
-- use this very expression (CATEGORY_SQL in postgres-event-store.ts). Built inside the migration's
-- transaction, so appends wait while it builds (seconds per million events).
CREATE INDEX events_category_position ON ${s}.events (split_part(stream_id, '-', 1), position);
`,
};

const snapshotsMigration: PostgresMigration = {
  version: 11,
  name: 'snapshots',
  sql: (s) => `
-- The latest snapshot of each stream per snapshot name (one decider's state). state_version is the
-- version the code gave the state's shape: a row of another version is ignored, never misread.
-- stream_version and event_id name the last event folded in, so a loader can tell that this very
-- event is still in the stream (a stream deleted and started again has other ids). Replaced only by a
-- snapshot of a higher stream_version. state is json, not jsonb: the text as written, key order
-- included, so a state loaded from a snapshot is the state evolve built (jsonb sorts keys).
CREATE TABLE ${s}.snapshots (
  stream_id text NOT NULL,
  name text NOT NULL,
  state_version text NOT NULL,
  stream_version bigint NOT NULL,
  event_id uuid NOT NULL,
  state json NOT NULL,
  created_at timestamptz NOT NULL,
  CONSTRAINT snapshots_pkey PRIMARY KEY (stream_id, name)
);
`,
};

const lifecycleFunctionsMigration: PostgresMigration = {
  version: 12,
  name: 'lifecycle_functions',
  // The append functions again (same signatures): version lookups see events only (stream_version > 0)
  // and a stream deleted with appends: 'refuse' refuses (asked only at version 0); delete_stream and
  // truncate_stream, each one transaction under the append lock (lifecycle-functions.ts).
  sql: (s, rawSchema) => lifecycleMigrationSql(s, rawSchema),
};

const subjectKeysMigration: PostgresMigration = {
  version: 13,
  name: 'subject_keys',
  sql: (s) => subjectKeysTableSql(s),
};

const archiveMigration: PostgresMigration = {
  version: 14,
  name: 'archive',
  sql: (s, rawSchema) => archiveMigrationSql(s, rawSchema),
};

/** Every step, in order. Later adapters' tables are added here as new versions. */
export const POSTGRES_MIGRATIONS: readonly PostgresMigration[] = [
  eventsMigration,
  checkpointsAndLeasesMigration,
  appendNotifyMigration,
  deadLettersAndCompletionsMigration,
  leaseTokensMigration,
  runnerStatusMigration,
  appendGroupMigration,
  membersMigration,
  lifecycleMigration,
  categoriesMigration,
  snapshotsMigration,
  lifecycleFunctionsMigration,
  subjectKeysMigration,
  archiveMigration,
];

/**
 * Brings `schema` up to the latest version, creating it if needed. Safe to call from several processes
 * at once: each step runs in a transaction that first takes an advisory lock derived from the schema
 * name, then re-checks whether the step is still missing. Returns the versions this call applied.
 *
 * A database migrated further by a newer eskit is left as it is (steps only add), so old and new
 * processes can run side by side during a rolling deploy.
 */
export async function migratePostgres(
  pool: pg.Pool,
  schema: string,
  migrations: readonly PostgresMigration[] = POSTGRES_MIGRATIONS,
): Promise<number[]> {
  quoteSchema(schema);
  assertOrdered(migrations);
  let client: pg.PoolClient;
  try {
    client = await pool.connect();
  } catch (cause) {
    // Not a migration problem: the same failure as any other first call, so the same error.
    throw connectionFailure(cause, pool) ?? new MigrationError(`Could not connect to PostgreSQL to migrate schema "${schema}": ${describe(cause)}`, { cause });
  }
  const stopHearing = hearWhileCheckedOut(client);
  try {
    return await migrateOnClient(client, schema, migrations);
  } finally {
    stopHearing();
    client.release();
  }
}

/**
 * `migratePostgres` on a connection the caller holds (not inside a transaction of its own): the lock
 * registry migrates on its dedicated connection rather than opening a pool for it.
 */
export async function migrateOnClient(
  client: pg.ClientBase,
  schema: string,
  migrations: readonly PostgresMigration[] = POSTGRES_MIGRATIONS,
): Promise<number[]> {
  const s = quoteSchema(schema);
  assertOrdered(migrations);
  const [lockClass, lockObject] = advisoryKey('migrate', schema);
  const applied: number[] = [];
  // Fast path, without a lock or a write: everything is there already (the usual case).
  if ((await pendingVersions(client, schema, s, migrations)).length === 0) return applied;
  for (const migration of migrations) {
    await client.query('BEGIN');
    try {
      await client.query('SELECT pg_advisory_xact_lock($1, $2)', [lockClass, lockObject]);
      // Under the lock, and with a fresh snapshot: another process may have just done this step.
      const pending = await pendingVersions(client, schema, s, migrations, true);
      if (pending.includes(migration.version)) {
        await client.query(migration.sql(s, schema));
        await client.query(`INSERT INTO ${s}.migrations (version, name) VALUES ($1, $2)`, [migration.version, migration.name]);
        applied.push(migration.version);
      }
      await client.query('COMMIT');
    } catch (cause) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw new MigrationError(
        `Migration ${migration.version} (${migration.name}) of schema "${schema}" failed and was rolled back: ${describe(cause)}. ` +
          'Fix the cause (often permissions: the role needs CREATE on the database or schema), then call migrate() again.',
        { cause },
      );
    }
  }
  return applied;
}

async function pendingVersions(
  client: pg.ClientBase,
  schema: string,
  s: string,
  migrations: readonly PostgresMigration[],
  create = false,
): Promise<number[]> {
  // Plain queries on the catalogs, not to_regclass(): name lookups go through a cache that is not
  // refreshed by waiting on an advisory lock, so they could miss what the previous holder created.
  const exists = await client.query<{ has_schema: boolean; has_table: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1) AS has_schema,
            EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = $1 AND c.relname = 'migrations') AS has_table`,
    [schema],
  );
  const { has_schema: hasSchema, has_table: hasTable } = exists.rows[0] ?? { has_schema: false, has_table: false };
  if (!hasTable) {
    if (!create) return migrations.map((m) => m.version);
    // Not CREATE SCHEMA IF NOT EXISTS: it demands CREATE on the database even when the schema exists.
    if (!hasSchema) await client.query(`CREATE SCHEMA ${s}`);
    await client.query(
      `CREATE TABLE ${s}.migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
    );
    return migrations.map((m) => m.version);
  }
  const done = await client.query<{ version: number }>(`SELECT version FROM ${s}.migrations`);
  const have = new Set(done.rows.map((r) => r.version));
  return migrations.filter((m) => !have.has(m.version)).map((m) => m.version);
}

function assertOrdered(migrations: readonly PostgresMigration[]): void {
  migrations.forEach((m, index) => {
    if (m.version !== index + 1) {
      throw new MigrationError(`Migration versions must be 1, 2, 3, ... in order; found ${m.version} at index ${index} (${m.name}).`);
    }
  });
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
