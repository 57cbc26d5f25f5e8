import type pg from 'pg';
import { byName } from '../core/admin.js';
import { checkPruneAge, checkRunnerStatus, isStale } from '../core/runner-status.js';
import type { RunnerKind, RunnerRole, RunnerState, RunnerStatusRow, RunnerStatusStore, RunnerStatusUpdate } from '../core/runner-status.js';
import { quoteSchema } from './schema.js';
import { PostgresTableAccess } from './table-access.js';
import type { PostgresTableOptions } from './table-access.js';

export type PostgresRunnerStatusStoreOptions = PostgresTableOptions;

const COLUMNS = `name, node_id, kind, state, role, fencing_token, position, handled, last_position, last_handled_at,
  pending, running, hung, retrying, unrecorded, oldest_pending_ms, last_error, heartbeat_ms, heartbeat_at`;

type Row = [
  name: string,
  nodeId: string,
  kind: string,
  state: string,
  role: string,
  fencingToken: string | null,
  position: string | null,
  handled: string,
  lastPosition: string | null,
  lastHandledAt: Date | null,
  pending: number | null,
  running: number | null,
  hung: number | null,
  retrying: number | null,
  unrecorded: number | null,
  oldestPendingMs: string | null,
  lastError: string | null,
  heartbeatMs: number,
  heartbeatAt: Date,
  ageMs: number,
];

const optional = (value: string | null): number | undefined => (value === null ? undefined : Number(value));

/**
 * The runners' status rows in `<schema>.runner_status`, one per (name, node id). Every time is the
 * server's (`now()` when written, `clock_timestamp()` when listed), so that a node whose clock is off
 * can neither look alive nor stale: ages a runner measured are subtracted from the server's time.
 */
export class PostgresRunnerStatusStore implements RunnerStatusStore {
  readonly #access: PostgresTableAccess;
  readonly #sql: { publish: pg.QueryArrayConfig; list: pg.QueryArrayConfig; prune: pg.QueryArrayConfig };

  constructor(options: PostgresRunnerStatusStoreOptions) {
    this.#access = new PostgresTableAccess(options, 'PostgresRunnerStatusStore', 'runner status store');
    const s = quoteSchema(this.#access.schema);
    const name = (what: string): string => `eskit.${this.#access.schema}.runner_status_${what}`;
    const array = 'array' as const;
    this.#sql = {
      publish: {
        name: name('publish'),
        rowMode: array,
        text: `
          INSERT INTO ${s}.runner_status AS r (${COLUMNS})
          VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now() - $10::bigint * interval '1 millisecond',
                  $11, $12, $13, $14, $15, $16, $17, $18, now())
          ON CONFLICT (name, node_id) DO UPDATE SET
            kind = excluded.kind, state = excluded.state, role = excluded.role, fencing_token = excluded.fencing_token,
            position = excluded.position, handled = excluded.handled, last_position = excluded.last_position,
            last_handled_at = excluded.last_handled_at, pending = excluded.pending, running = excluded.running,
            hung = excluded.hung, retrying = excluded.retrying, unrecorded = excluded.unrecorded,
            oldest_pending_ms = excluded.oldest_pending_ms, last_error = excluded.last_error,
            heartbeat_ms = excluded.heartbeat_ms, heartbeat_at = excluded.heartbeat_at`,
      },
      list: {
        name: name('list'),
        rowMode: array,
        text: `SELECT ${COLUMNS}, greatest(0, extract(epoch FROM clock_timestamp() - heartbeat_at) * 1000)::float8 FROM ${s}.runner_status`,
      },
      prune: {
        name: name('prune'),
        rowMode: array,
        text: `DELETE FROM ${s}.runner_status WHERE heartbeat_at < clock_timestamp() - $1::bigint * interval '1 millisecond'`,
      },
    };
  }

  async publish(update: RunnerStatusUpdate): Promise<void> {
    const u = checkRunnerStatus(update);
    const work = u.work;
    await this.#access.query(this.#sql.publish, [
      u.name,
      u.nodeId,
      u.kind,
      u.state,
      u.role,
      u.fencingToken ?? null,
      u.position ?? null,
      u.handled,
      u.lastEvent?.position ?? null,
      u.lastEvent?.ageMs ?? null,
      work?.pending ?? null,
      work?.running ?? null,
      work?.hung ?? null,
      work?.retrying ?? null,
      work?.unrecorded ?? null,
      work?.oldestPendingMs ?? null,
      u.lastError ?? null,
      u.heartbeatMs,
    ]);
  }

  async list(): Promise<RunnerStatusRow[]> {
    const result = await this.#access.query(this.#sql.list, []);
    return (result.rows as Row[])
      .map((row): RunnerStatusRow => {
        const [name, nodeId, kind, state, role, fencingToken, position, handled, lastPosition, lastHandledAt, ...rest] = row;
        const [pending, running, hung, retrying, unrecorded, oldestPendingMs, lastError, heartbeatMs, heartbeatAt, ageMs] = rest;
        const heartbeatAgeMs = Math.round(ageMs);
        return {
          name,
          nodeId,
          kind: kind as RunnerKind,
          state: state as RunnerState,
          role: role as RunnerRole,
          fencingToken: optional(fencingToken),
          position: optional(position),
          handled: Number(handled),
          lastEvent: lastPosition === null || lastHandledAt === null ? undefined : { position: Number(lastPosition), at: lastHandledAt },
          work:
            pending === null
              ? undefined
              : { pending, running: running ?? 0, hung: hung ?? 0, retrying: retrying ?? 0, unrecorded: unrecorded ?? 0, oldestPendingMs: optional(oldestPendingMs) },
          lastError: lastError ?? undefined,
          heartbeatMs,
          heartbeatAt,
          heartbeatAgeMs,
          stale: isStale(state as RunnerState, heartbeatMs, heartbeatAgeMs),
        };
      })
      .sort((a, b) => byName(a.name, b.name) || byName(a.nodeId, b.nodeId));
  }

  async prune(olderThanMs: number): Promise<number> {
    const result = await this.#access.query(this.#sql.prune, [checkPruneAge(olderThanMs)]);
    return result.rowCount ?? 0;
  }

  /** Ends the pool if the store created it. */
  close(): Promise<void> {
    return this.#access.close();
  }
}
