import type Database from 'better-sqlite3';
import { byName } from '../core/admin.js';
import { checkPruneAge, checkRunnerStatus, isStale } from '../core/runner-status.js';
import type { RunnerKind, RunnerRole, RunnerState, RunnerStatusRow, RunnerStatusStore, RunnerStatusUpdate } from '../core/runner-status.js';
import { SqliteHandle } from './handle.js';
import type { SqliteOwnedConnectionOptions } from './handle.js';
import { SQLITE_NOW_MS } from './sqlite-checkpoint-store.js';

export type SqliteRunnerStatusStoreOptions = SqliteOwnedConnectionOptions;

interface Row {
  name: string;
  node_id: string;
  kind: string;
  state: string;
  role: string;
  fencing_token: number | null;
  position: number | null;
  handled: number;
  last_position: number | null;
  last_handled_at: number | null;
  pending: number | null;
  running: number | null;
  hung: number | null;
  retrying: number | null;
  unrecorded: number | null;
  oldest_pending_ms: number | null;
  last_error: string | null;
  heartbeat_ms: number;
  heartbeat_at: number;
  age_ms: number;
}

const COLUMNS = `name, node_id, kind, state, role, fencing_token, position, handled, last_position, last_handled_at,
  pending, running, hung, retrying, unrecorded, oldest_pending_ms, last_error, heartbeat_ms, heartbeat_at`;

const PUBLISH = `
  INSERT INTO eskit_runner_status (${COLUMNS})
  VALUES (@name, @nodeId, @kind, @state, @role, @fencingToken, @position, @handled, @lastPosition,
          CASE WHEN @lastAgeMs IS NULL THEN NULL ELSE ${SQLITE_NOW_MS} - @lastAgeMs END,
          @pending, @running, @hung, @retrying, @unrecorded, @oldestPendingMs, @lastError, @heartbeatMs, ${SQLITE_NOW_MS})
  ON CONFLICT (name, node_id) DO UPDATE SET
    kind = excluded.kind, state = excluded.state, role = excluded.role, fencing_token = excluded.fencing_token,
    position = excluded.position, handled = excluded.handled, last_position = excluded.last_position,
    last_handled_at = excluded.last_handled_at, pending = excluded.pending, running = excluded.running,
    hung = excluded.hung, retrying = excluded.retrying, unrecorded = excluded.unrecorded,
    oldest_pending_ms = excluded.oldest_pending_ms, last_error = excluded.last_error,
    heartbeat_ms = excluded.heartbeat_ms, heartbeat_at = excluded.heartbeat_at`;

const LIST = `SELECT ${COLUMNS}, MAX(0, ${SQLITE_NOW_MS} - heartbeat_at) AS age_ms FROM eskit_runner_status`;
const PRUNE = `DELETE FROM eskit_runner_status WHERE heartbeat_at < ${SQLITE_NOW_MS} - ?`;

const optional = (value: number | null): number | undefined => (value === null ? undefined : value);

/**
 * The runners' status rows in `eskit_runner_status`, one per (name, node id). Times are SQLite's
 * clock (the host's, shared by every process on the file), never a runner's own: ages a runner
 * measured are subtracted from it.
 */
export class SqliteRunnerStatusStore implements RunnerStatusStore {
  readonly #handle: SqliteHandle;
  #statements: { publish: Database.Statement; list: Database.Statement; prune: Database.Statement } | undefined;

  constructor(options: SqliteRunnerStatusStoreOptions) {
    this.#handle = new SqliteHandle(options, 'SqliteRunnerStatusStore', 'runner status store');
  }

  async publish(update: RunnerStatusUpdate): Promise<void> {
    const u = checkRunnerStatus(update);
    this.#handle.run(`publish the status of "${u.name}"`, () =>
      this.#prepared().publish.run({
        name: u.name,
        nodeId: u.nodeId,
        kind: u.kind,
        state: u.state,
        role: u.role,
        fencingToken: u.fencingToken ?? null,
        position: u.position ?? null,
        handled: u.handled,
        lastPosition: u.lastEvent?.position ?? null,
        lastAgeMs: u.lastEvent?.ageMs ?? null,
        pending: u.work?.pending ?? null,
        running: u.work?.running ?? null,
        hung: u.work?.hung ?? null,
        retrying: u.work?.retrying ?? null,
        unrecorded: u.work?.unrecorded ?? null,
        oldestPendingMs: u.work?.oldestPendingMs ?? null,
        lastError: u.lastError ?? null,
        heartbeatMs: u.heartbeatMs,
      }),
    );
  }

  async list(): Promise<RunnerStatusRow[]> {
    const rows = this.#handle.run('list the runner status rows', () => this.#prepared().list.all() as Row[]);
    return rows
      .map((row): RunnerStatusRow => {
        const state = row.state as RunnerState;
        return {
          name: row.name,
          nodeId: row.node_id,
          kind: row.kind as RunnerKind,
          state,
          role: row.role as RunnerRole,
          fencingToken: optional(row.fencing_token),
          position: optional(row.position),
          handled: row.handled,
          lastEvent: row.last_position === null || row.last_handled_at === null ? undefined : { position: row.last_position, at: new Date(row.last_handled_at) },
          work:
            row.pending === null
              ? undefined
              : {
                  pending: row.pending,
                  running: row.running ?? 0,
                  hung: row.hung ?? 0,
                  retrying: row.retrying ?? 0,
                  unrecorded: row.unrecorded ?? 0,
                  oldestPendingMs: optional(row.oldest_pending_ms),
                },
          lastError: row.last_error ?? undefined,
          heartbeatMs: row.heartbeat_ms,
          heartbeatAt: new Date(row.heartbeat_at),
          heartbeatAgeMs: row.age_ms,
          stale: isStale(state, row.heartbeat_ms, row.age_ms),
        };
      })
      .sort((a, b) => byName(a.name, b.name) || byName(a.nodeId, b.nodeId));
  }

  async prune(olderThanMs: number): Promise<number> {
    const age = checkPruneAge(olderThanMs);
    return this.#handle.run('prune the runner status rows', () => this.#prepared().prune.run(age).changes);
  }

  close(): void {
    this.#handle.close();
  }

  // Prepared on first use: a store created with migrate: false may be migrated after it was created.
  #prepared(): { publish: Database.Statement; list: Database.Statement; prune: Database.Statement } {
    const db = this.#handle.database;
    // safeIntegers(false): a shared handle may have turned on BigInt results by default.
    this.#statements ??= {
      publish: db.prepare(PUBLISH),
      list: db.prepare(LIST).safeIntegers(false),
      prune: db.prepare(PRUNE),
    };
    return this.#statements;
  }
}
