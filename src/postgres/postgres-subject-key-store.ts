// Subjects' data keys in PostgreSQL (<schema>.subject_keys, migration 13), next to the events whose
// personal fields they encrypt: forgetting a subject destroys its key in the same database.
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { isEskitError } from '../core/errors.js';
import { consoleLogger } from '../core/logger.js';
import type { Logger } from '../core/logger.js';
import { keyFromDriver, newDataKey } from '../core/personal/cipher.js';
import { SubjectForgottenError } from '../core/personal/errors.js';
import { checkSubject } from '../core/personal/personal-data.js';
import type { ForgetResult, SubjectKey, SubjectKeyStore } from '../core/personal/types.js';
import { hearWhileCheckedOut } from './connection.js';
import { translateError } from './errors.js';
import { assertStorableText, unstorableText } from './postgres-dead-letter-store.js';
import { notifyChannel, quoteSchema, subjectLockKey } from './schema.js';
import { PostgresTableAccess } from './table-access.js';
import type { PostgresTableOptions } from './table-access.js';

export interface PostgresSubjectKeyStoreOptions extends PostgresTableOptions {
  /** Where a VACUUM after `forget` that failed is reported. Default: warnings and errors on stderr. */
  logger?: Logger;
  /**
   * Called before each read that may hand out live keys. The event store passes it: while its key
   * cache may hold keys, it listens for other processes' forgets, to drop those keys at once. Before,
   * not after: a forget announced while the read runs must be heard (the cache then refuses to keep
   * what the read found).
   */
  beforeKeysRead?: () => void;
}

/** kid, key (null once destroyed) */
type KeyRow = [string, Buffer | null];

interface Statements {
  latest: pg.QueryArrayConfig;
  byKids: pg.QueryArrayConfig;
  isForgotten: pg.QueryArrayConfig;
  create: pg.QueryArrayConfig;
  forget: pg.QueryArrayConfig;
}

// Prepared per schema, shared by every key store.
const cache = new Map<string, Statements>();

function statements(schema: string): Statements {
  let cached = cache.get(schema);
  if (cached) return cached;
  const s = quoteSchema(schema);
  // A lower-case identifier (notifyChannel), so a literal needs no escaping.
  const channel = `'${notifyChannel('subjects', schema)}'`;
  const name = (what: string): string => `eskit.${schema}.subject_keys_${what}`;
  const array = 'array' as const;
  // The subject's live row if it has one, else one of its forgotten rows.
  const latest = `SELECT kid, key FROM ${s}.subject_keys WHERE subject = $1 ORDER BY forgotten_at IS NULL DESC LIMIT 1`;
  cached = {
    latest: { name: name('latest'), rowMode: array, text: latest },
    byKids: { name: name('by_kids'), rowMode: array, text: `SELECT kid, key FROM ${s}.subject_keys WHERE kid = ANY($1::text[])` },
    // NULL (no row at all) is false: a subject never seen was not forgotten.
    isForgotten: {
      name: name('is_forgotten'),
      rowMode: array,
      text: `SELECT coalesce(bool_and(forgotten_at IS NOT NULL), false) FROM ${s}.subject_keys WHERE subject = $1`,
    },
    // Run under the subject's lock. The live key, else a new one ($2, $3); a forgotten subject gets one
    // only when $4 (refuse forgotten) is false: no row comes back when it is refused.
    create: {
      name: name('create'),
      rowMode: array,
      text: `
        WITH latest AS (${latest}),
        created AS (
          INSERT INTO ${s}.subject_keys (kid, subject, key, created_at)
          SELECT $2::text, $1::text, $3::bytea, clock_timestamp()
          WHERE NOT EXISTS (SELECT 1 FROM latest WHERE key IS NOT NULL)
            AND NOT ($4::boolean AND EXISTS (SELECT 1 FROM latest))
          RETURNING kid, key)
        SELECT kid, key FROM latest WHERE key IS NOT NULL
        UNION ALL
        SELECT kid, key FROM created`,
    },
    // Run under the subject's lock, in one transaction: every live key destroyed (the row stays, as the
    // fence), a fence row ($2) for a subject that never had a key, and the destroyed ids announced on
    // commit, so that other processes drop them from their key caches. Every part reads the snapshot
    // taken before the UPDATE, so `had` sees the rows it destroys.
    forget: {
      name: name('forget'),
      rowMode: array,
      text: `
        WITH destroyed AS (
          UPDATE ${s}.subject_keys SET key = NULL, forgotten_at = clock_timestamp()
          WHERE subject = $1 AND forgotten_at IS NULL
          RETURNING kid),
        had AS (SELECT EXISTS (SELECT 1 FROM ${s}.subject_keys WHERE subject = $1) AS found),
        fenced AS (
          INSERT INTO ${s}.subject_keys (kid, subject, key, created_at, forgotten_at)
          SELECT $2::text, $1::text, NULL, clock_timestamp(), clock_timestamp() WHERE NOT (SELECT found FROM had)
          RETURNING kid),
        told AS (SELECT pg_notify(${channel}, string_agg(kid, ',')) FROM destroyed HAVING count(*) > 0)
        SELECT (SELECT count(*) FROM destroyed)::integer, (SELECT found FROM had), (SELECT count(*) FROM fenced)::integer, (SELECT count(*) FROM told)::integer`,
    },
  };
  cache.set(schema, cached);
  return cached;
}

function keyOf([kid, stored]: KeyRow): SubjectKey {
  return keyFromDriver(kid, stored as Uint8Array);
}

/**
 * Subjects' keys in `<schema>.subject_keys` (every PostgreSQL event store has one: `backend.subjectKeys`,
 * which the store's key cache sits in front of). Creating, forgetting and allowing the keys of a
 * subject are serialised by a transaction-scoped advisory lock of the subject (across processes);
 * reads are one statement.
 *
 * A forget announces the destroyed key ids on the schema's `subjects` channel, so that the event
 * stores of other processes drop them from their caches, and then VACUUMs the table: the old row
 * version, which still holds the key, is removed at once rather than when autovacuum comes by. That
 * is best effort (a transaction older than the forget, anywhere on the server, keeps the row version
 * alive until it ends), and the key is unreadable through SQL from the commit on either way. Its bytes
 * can outlive it where PostgreSQL keeps old pages: the page's free space until reused, the WAL and
 * its archives, backups.
 */
export class PostgresSubjectKeyStore implements SubjectKeyStore {
  readonly #options: PostgresSubjectKeyStoreOptions;
  readonly #logger: Logger;
  #access: PostgresTableAccess | undefined;

  constructor(options: PostgresSubjectKeyStoreOptions) {
    this.#options = options;
    this.#logger = options?.logger ?? consoleLogger();
    // With `store`, its pool and schema are read at first use, not here: an event store makes its key
    // store before it has them (the key store goes to its base class's constructor).
    if (options?.store === undefined) this.#access = this.#table();
  }

  get schema(): string {
    return this.#table().schema;
  }

  /** The pool the keys are read and written on (the event store's, yours, or the one it created). */
  get pool(): pg.Pool {
    return this.#table().pool;
  }

  async keyFor(subject: string): Promise<SubjectKey> {
    checkSubject(subject);
    assertStorableText(subject, 'subject');
    const access = this.#table();
    this.#options.beforeKeysRead?.();
    const [row] = (await access.query(statements(access.schema).latest, [subject])).rows as KeyRow[];
    if (row === undefined) return this.#create(subject, true);
    if (row[1] === null) throw new SubjectForgottenError(subject);
    return keyOf(row);
  }

  async keysById(kids: readonly string[]): Promise<Map<string, Uint8Array | null>> {
    const found = new Map<string, Uint8Array | null>();
    // An id PostgreSQL could not store was never stored: left out, as any unknown id.
    const asked = [...new Set(kids)].filter((kid) => !unstorableText(kid));
    if (asked.length === 0) return found;
    const access = this.#table();
    this.#options.beforeKeysRead?.();
    const rows = (await access.query(statements(access.schema).byKids, [asked])).rows as KeyRow[];
    for (const row of rows) found.set(row[0], row[1] === null ? null : keyOf(row).key);
    return found;
  }

  async forget(subject: string): Promise<ForgetResult> {
    checkSubject(subject);
    assertStorableText(subject, 'subject');
    const row = await this.#locked(subject, (client, schema) => client.query({ ...statements(schema).forget, values: [subject, randomUUID()] }));
    const [destroyed, had] = row as [number, boolean];
    if (destroyed > 0) await this.#vacuum(subject);
    return { subject, keysDestroyed: destroyed, alreadyForgotten: destroyed === 0 && had };
  }

  async allowNewKey(subject: string): Promise<SubjectKey> {
    checkSubject(subject);
    assertStorableText(subject, 'subject');
    return this.#create(subject, false);
  }

  async isForgotten(subject: string): Promise<boolean> {
    checkSubject(subject);
    if (unstorableText(subject)) return false;
    const access = this.#table();
    const [row] = (await access.query(statements(access.schema).isForgotten, [subject])).rows;
    return row?.[0] === true;
  }

  /** Ends the pool if this store created it (from `connectionString`). Safe to call twice. */
  async close(): Promise<void> {
    await this.#access?.close();
  }

  async #create(subject: string, refuseForgotten: boolean): Promise<SubjectKey> {
    const key = Buffer.from(newDataKey());
    this.#options.beforeKeysRead?.();
    try {
      const row = await this.#locked(subject, (client, schema) => client.query({ ...statements(schema).create, values: [subject, randomUUID(), key, refuseForgotten] }));
      if (row === undefined) throw new SubjectForgottenError(subject);
      return keyOf(row as KeyRow);
    } finally {
      key.fill(0);
    }
  }

  /**
   * `run`'s first row, run in one READ COMMITTED transaction under the subject's advisory lock (its
   * statement then reads what the previous holder committed; a higher isolation level would read the
   * snapshot taken before the wait).
   */
  async #locked(subject: string, run: (client: pg.PoolClient, schema: string) => Promise<pg.QueryResult<unknown[]>>): Promise<unknown[] | undefined> {
    const access = this.#table();
    await access.ready();
    const { schema, pool } = access;
    const [lockClass, lockObject] = subjectLockKey(schema, subject);
    let client: pg.PoolClient;
    try {
      client = await pool.connect();
    } catch (error) {
      throw translateError(error, schema, pool);
    }
    const stopHearing = hearWhileCheckedOut(client);
    let broken: Error | undefined;
    try {
      // Integers, so they go into the text as they are: BEGIN and the lock in one round trip.
      await client.query(`BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock(${lockClass}, ${lockObject})`);
      const { rows } = await run(client, schema);
      await client.query('COMMIT');
      return rows[0];
    } catch (error) {
      await client.query('ROLLBACK').catch((rollbackError: unknown) => {
        // A connection that cannot even roll back is not given back to the pool.
        broken = rollbackError instanceof Error ? rollbackError : new Error('ROLLBACK failed');
      });
      throw isEskitError(error) ? error : translateError(error, schema, pool);
    } finally {
      stopHearing();
      client.release(broken);
    }
  }

  /**
   * Removes the old row version that holds the destroyed key (see the class comment). SKIP_LOCKED: a
   * VACUUM already running on the table (autovacuum, another forget) is not waited for. INDEX_CLEANUP
   * OFF: the indexes hold no key, and cleaning them costs a pass over each whatever the table's size.
   */
  async #vacuum(subject: string): Promise<void> {
    const access = this.#table();
    try {
      await access.pool.query(`VACUUM (SKIP_LOCKED, INDEX_CLEANUP OFF) ${quoteSchema(access.schema)}.subject_keys`);
    } catch (error) {
      this.#logger.warn(
        { subject, err: error },
        `The VACUUM after forgetting subject "${subject}" failed (the subject is forgotten: its key is unreadable through SQL); autovacuum removes the old row version later`,
      );
    }
  }

  #table(): PostgresTableAccess {
    this.#access ??= new PostgresTableAccess(this.#options, 'PostgresSubjectKeyStore', 'subject key store');
    return this.#access;
  }
}
