// What the PostgresLockRegistry suites (lock-registry.test.ts, lock-registry-redteam.test.ts) share: a schema
// and registries per test, closed after it, and views of the server's side (sessions, advisory locks,
// release notifications). node:test runs each file in a process of its own, so the cleanup list is
// per file: call `cleanUp` from its afterEach.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import type { Lease } from '../../src/core/lock.js';
import { silentLogger } from '../../src/core/logger.js';
import type { Logger } from '../../src/core/logger.js';
import { PostgresLockRegistry } from '../../src/postgres/index.js';
import type { PostgresLockRegistryOptions } from '../../src/postgres/index.js';
import { notifyChannel } from '../../src/postgres/schema.js';
import { waitUntil } from '../../src/testing/wait.js';
import { createTestSchema, POSTGRES_URL } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';

let cleanups: (() => Promise<unknown> | unknown)[] = [];

/** Runs what the last test registered, newest first. */
export async function cleanUp(): Promise<void> {
  const pending = cleanups.reverse();
  cleanups = [];
  for (const cleanup of pending) await cleanup();
}

/** Runs `cleanup` after the current test. */
export function afterTest(cleanup: () => Promise<unknown> | unknown): void {
  cleanups.push(cleanup);
}

/** A schema name of the test's own (created by the first registry's migration), dropped after it. */
export async function testSchema(): Promise<TestSchema> {
  const schema = await createTestSchema({ create: false, poolSize: 6 });
  afterTest(() => schema.drop());
  return schema;
}

/** A registry on the test's schema with an application_name of its own, closed after the test. */
export function registry(schema: TestSchema, options: Partial<PostgresLockRegistryOptions> = {}): PostgresLockRegistry {
  const created = new PostgresLockRegistry({
    connectionString: POSTGRES_URL,
    schema: schema.name,
    applicationName: `eskit-lock-test ${randomBytes(4).toString('hex')}`,
    logger: silentLogger,
    ...options,
  } as PostgresLockRegistryOptions);
  afterTest(() => created.close());
  return created;
}

/** A pending acquire whose outcome (and when it came) the test can look at without awaiting it. */
export function pending(promise: Promise<Lease>) {
  const state: { lease?: Lease; error?: unknown; at?: number } = {};
  const settled = promise.then(
    (lease) => {
      state.lease = lease;
      state.at = performance.now();
      return lease;
    },
    (error: unknown) => {
      state.error = error;
      state.at = performance.now();
      throw error;
    },
  );
  settled.catch(() => undefined);
  return { state, settled };
}

/** The lock connection's backend pid, once it is up. */
export function pidOf(locks: PostgresLockRegistry): Promise<number> {
  return waitUntil(() => locks.connectionPid, { message: `the lock connection of ${locks.applicationName}` });
}

/** Stands `locks` by for `name` (held elsewhere); resolves once onWaiting was called. */
export async function standBy(locks: PostgresLockRegistry, name: string, options: { signal?: AbortSignal } = {}) {
  let waiting = false;
  const acquire = pending(locks.acquire(name, { ...options, onWaiting: () => void (waiting = true) }));
  await waitUntil(() => waiting || acquire.state.error !== undefined || acquire.state.lease !== undefined, { message: `${name}: stand by` });
  assert.equal(acquire.state.lease, undefined, `${name} was held elsewhere`);
  return acquire;
}

/** The backend pids of connections with this application_name. */
export async function backends(schema: TestSchema, applicationName: string): Promise<number[]> {
  const result = await schema.pool.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE application_name = $1 ORDER BY pid', [applicationName]);
  return result.rows.map((r) => r.pid);
}

/** The advisory keys session `pid` holds exclusively (locks), or shared (a standby's waiter keys). */
export async function heldKeys(schema: TestSchema, pid: number, mode: 'ExclusiveLock' | 'ShareLock' = 'ExclusiveLock'): Promise<string[]> {
  const result = await schema.pool.query<{ key: string }>(
    `SELECT ((classid::bigint << 32) | objid::bigint)::text AS key FROM pg_locks
      WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND pid = $1 AND mode = $2 ORDER BY 1`,
    [pid, mode],
  );
  return result.rows.map((r) => r.key);
}

/** Counts the registries' release notifications on `schema` from a raw LISTEN; stops after the test. */
export async function countReleaseNotifications(schema: TestSchema): Promise<() => number> {
  const client = await schema.pool.connect();
  let count = 0;
  client.on('notification', (message) => {
    if (message.channel === notifyChannel('released', schema.name)) count++;
  });
  await client.query(`LISTEN "${notifyChannel('released', schema.name)}"`);
  afterTest(async () => {
    await client.query('UNLISTEN *');
    client.release();
  });
  return () => count;
}

/** A session of the test's own (not a registry's), for playing a holder, a releaser or a blocker. */
export async function session(schema: TestSchema): Promise<pg.PoolClient> {
  const client = await schema.pool.connect();
  afterTest(async () => {
    await client.query('ROLLBACK').catch(() => undefined);
    await client.query('SELECT pg_advisory_unlock_all()').catch(() => undefined);
    client.release();
  });
  return client;
}

export interface LogLine {
  level: string;
  message: string;
  fields: Record<string, unknown>;
}

/** A logger that keeps every line, for tests that look at what was said. */
export function capturingLogger(): Logger & { lines: LogLine[] } {
  const lines: LogLine[] = [];
  const at = (level: string) => (fields: Record<string, unknown>, message: string) => void lines.push({ level, message, fields });
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

/** The lines of `level` whose message matches `pattern`. */
export const said = (lines: LogLine[], level: string, pattern: RegExp): LogLine[] => lines.filter((l) => l.level === level && pattern.test(l.message));

// Faults injected on the server, for the registry under test only: it connects with
// `search_path = <test schema>, pg_catalog`, so its unqualified pg_try_advisory_lock / pg_advisory_unlock
// calls resolve to wrappers in the test's schema, which first look at the `faults` table (raise a given
// SQLSTATE, or wait for an advisory lock the test holds). Nothing outside the schema is touched.

export interface Faults {
  /** From now on, `fn` ('take': pg_try_advisory_lock, 'unlock': pg_advisory_unlock) raises `sqlstate`, or first waits for the advisory lock `gate`. */
  set(fn: 'take' | 'unlock', fault: { sqlstate?: string; gate?: string }): Promise<void>;
  clear(fn: 'take' | 'unlock'): Promise<void>;
}

/** Installs the wrappers in the test's schema (migrated already). */
export async function installFaults(schema: TestSchema): Promise<Faults> {
  const s = `"${schema.name}"`;
  await schema.pool.query(`
    CREATE TABLE ${s}.faults (fn text PRIMARY KEY, sqlstate text, gate bigint);
    CREATE FUNCTION ${s}.fault(what text) RETURNS void LANGUAGE plpgsql AS $$
      DECLARE code text; gate_key bigint;
      BEGIN
        SELECT f.sqlstate, f.gate INTO code, gate_key FROM ${s}.faults f WHERE f.fn = what;
        IF gate_key IS NOT NULL THEN PERFORM pg_catalog.pg_advisory_xact_lock_shared(gate_key); END IF;
        IF code IS NOT NULL THEN RAISE EXCEPTION 'a fault injected by the test' USING ERRCODE = code; END IF;
      END $$;
    CREATE FUNCTION ${s}.pg_try_advisory_lock(key bigint) RETURNS boolean LANGUAGE plpgsql AS $$
      BEGIN PERFORM ${s}.fault('take'); RETURN pg_catalog.pg_try_advisory_lock(key); END $$;
    CREATE FUNCTION ${s}.pg_advisory_unlock(key bigint) RETURNS boolean LANGUAGE plpgsql AS $$
      BEGIN PERFORM ${s}.fault('unlock'); RETURN pg_catalog.pg_advisory_unlock(key); END $$;`);
  return {
    async set(fn, fault) {
      await schema.pool.query(
        `INSERT INTO ${s}.faults (fn, sqlstate, gate) VALUES ($1, $2, $3) ON CONFLICT (fn) DO UPDATE SET sqlstate = excluded.sqlstate, gate = excluded.gate`,
        [fn, fault.sqlstate ?? null, fault.gate ?? null],
      );
    },
    async clear(fn) {
      await schema.pool.query(`DELETE FROM ${s}.faults WHERE fn = $1`, [fn]);
    },
  };
}

/** A registry whose lock connection runs into the faults (and `settings`, as -c options). */
export function faulty(schema: TestSchema, options: Partial<PostgresLockRegistryOptions> = {}, settings: string[] = []): PostgresLockRegistry {
  return registry(schema, {
    connectionString: undefined,
    connection: {
      connectionString: POSTGRES_URL,
      options: [`-c search_path=${schema.name},pg_catalog`, ...settings.map((setting) => `-c ${setting}`)].join(' '),
    } as pg.ClientConfig,
    migrate: false,
    ...options,
  });
}
