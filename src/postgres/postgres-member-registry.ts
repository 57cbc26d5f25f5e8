import type pg from 'pg';
import { checkGroup, checkHeartbeat, checkMemberId, MEMBER_ROW_RETENTION_MS, sortMembers } from '../core/member-checks.js';
import type { LiveMember, MemberHeartbeat, MemberRegistry } from '../core/members.js';
import { translateError } from './errors.js';
import { queryPooled } from './pooled-query.js';
import { notifyChannel, quoteSchema } from './schema.js';
import { PostgresTableAccess } from './table-access.js';
import type { PostgresStoreHandle } from './table-access.js';

/** What the registry needs of a `PostgresEventStore`: its pool, schema, migration and member notifications. */
export interface PostgresMembersStore extends PostgresStoreHandle {
  onMembersChanged(listener: (group: string) => void): () => void;
}

export interface PostgresMemberRegistryOptions {
  /** The event store whose pool, schema and LISTEN connection to share. */
  store: PostgresMembersStore;
  /**
   * This node's lock registry (a `PostgresLockRegistry`): each heartbeat records the backend pid of its
   * lock connection, so that the others count this node dead the moment that session ends (a killed
   * process) instead of when its ttl runs out. Without it, or while the lock connection is down, the
   * ttl alone decides.
   */
  locks?: { readonly connectionPid: number | undefined };
  /** Default true: the first call migrates the schema (through the store). */
  migrate?: boolean;
}

type MemberRow = [member: string, partitions: number];

interface Statements {
  heartbeat: pg.QueryArrayConfig;
  leave: pg.QueryArrayConfig;
}

// Prepared per schema: the text holds the schema and its channel, nothing of one registry.
const cache = new Map<string, Statements>();

function statements(schema: string): Statements {
  let cached = cache.get(schema);
  if (cached) return cached;
  const s = quoteSchema(schema);
  // A lower-case identifier (notifyChannel), so a literal needs no escaping.
  const channel = `'${notifyChannel('members', schema)}'`;
  const name = (what: string): string => `eskit.${schema}.members_${what}`;
  const array = 'array' as const;
  // Alive: within its ttl by the server's clock, and its lock session (if it recorded one) still there.
  const alive = (m: string): string =>
    `${m}.expires_at > clock_timestamp() AND (${m}.session_pid IS NULL OR EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = ${m}.session_pid))`;
  cached = {
    // ONE statement, so one round trip and one transaction. Every part of it reads the snapshot taken
    // before the upsert: `before` sees whether this member was alive (no announcement if it was), and
    // the main query the others, to which this member is added from the upsert's own row.
    //  - The announcement is in the upsert's RETURNING, so it runs exactly once, and is sent on commit.
    //  - `swept` deletes the group's rows dead for a minute. SKIP LOCKED: two members sweeping at once,
    //    each also holding its own row, must not wait on each other (they could deadlock).
    heartbeat: {
      name: name('heartbeat'),
      rowMode: array,
      text: `
        WITH before AS (
          SELECT ${alive('m')} AS alive FROM ${s}.members m WHERE m.grp = $1::text AND m.member = $2::text
        ), beat AS (
          INSERT INTO ${s}.members AS m (grp, member, partitions, session_pid, expires_at)
          VALUES ($1::text, $2::text, $3::integer, $4::integer, clock_timestamp() + $5::integer * interval '1 millisecond')
          ON CONFLICT (grp, member) DO UPDATE SET
            partitions = excluded.partitions, session_pid = excluded.session_pid, expires_at = excluded.expires_at
          RETURNING CASE WHEN coalesce((SELECT alive FROM before), false) THEN NULL ELSE pg_notify(${channel}, $1::text) END
        ), swept AS (
          DELETE FROM ${s}.members WHERE (grp, member) IN (
            SELECT grp, member FROM ${s}.members
            WHERE grp = $1::text AND member <> $2::text AND expires_at < clock_timestamp() - interval '${MEMBER_ROW_RETENTION_MS} milliseconds'
            FOR UPDATE SKIP LOCKED)
        )
        SELECT m.member, m.partitions FROM ${s}.members m WHERE m.grp = $1::text AND m.member <> $2::text AND ${alive('m')}
        UNION ALL
        SELECT $2::text, $3::integer FROM beat`,
    },
    // Announced only when there was a row to delete: a second leave says nothing.
    leave: {
      name: name('leave'),
      rowMode: array,
      text: `
        WITH gone AS (DELETE FROM ${s}.members WHERE grp = $1::text AND member = $2::text RETURNING grp)
        SELECT pg_notify(${channel}, grp) FROM gone`,
    },
  };
  cache.set(schema, cached);
  return cached;
}

/**
 * Who is alive in each group, in `<schema>.members`, judged by the server's clock: a member is dead
 * when its ttl runs out (a frozen node) or, sooner, when the lock session it recorded ends (a killed
 * node: the server ends its sessions, so pg_stat_activity no longer lists it). Each call is one
 * statement on the store's pool; joins and leaves are announced with NOTIFY on the schema's `members`
 * channel, which every store on the schema hears over its LISTEN connection.
 *
 * ```ts
 * const members = new PostgresMemberRegistry({ store, locks }); // `postgres()` makes one when leader election is on
 * ```
 */
export class PostgresMemberRegistry implements MemberRegistry {
  readonly schema: string;
  readonly #access: PostgresTableAccess;
  readonly #store: PostgresMembersStore;
  readonly #locks: { readonly connectionPid: number | undefined } | undefined;
  /** Removers of this registry's listeners, called on close(). */
  readonly #removers = new Set<() => void>();
  #closed = false;

  constructor(options: PostgresMemberRegistryOptions) {
    this.#access = new PostgresTableAccess({ store: options.store, migrate: options.migrate }, 'PostgresMemberRegistry', 'member registry');
    this.#store = options.store;
    this.#locks = options.locks;
    this.schema = this.#access.schema;
  }

  async heartbeat(group: string, member: MemberHeartbeat): Promise<LiveMember[]> {
    checkGroup(group);
    const { id, partitions, ttlMs } = checkHeartbeat(member);
    const rows = await this.#query(statements(this.schema).heartbeat, [group, id, partitions, this.#locks?.connectionPid ?? null, ttlMs]);
    return sortMembers(rows.map(([other, count]) => ({ id: other, partitions: Number(count) })));
  }

  async leave(group: string, member: string): Promise<void> {
    checkGroup(group);
    checkMemberId(member);
    await this.#query(statements(this.schema).leave, [group, member]);
  }

  onChange(listener: (group: string) => void): () => void {
    if (this.#closed) return () => undefined;
    const remove = this.#store.onMembersChanged(listener);
    const remover = (): void => {
      this.#removers.delete(remover);
      remove();
    };
    this.#removers.add(remover);
    return remover;
  }

  /**
   * Removes this registry's listeners (the store's LISTEN connection idles once nobody listens) and
   * refuses further calls. The store and its pool stay open. Members it announced stay until they
   * leave or their ttl runs out. Safe to call twice.
   */
  async close(): Promise<void> {
    this.#closed = true;
    for (const remove of [...this.#removers]) remove();
    await this.#access.close();
  }

  async #query(statement: pg.QueryArrayConfig, values: unknown[]): Promise<MemberRow[]> {
    await this.#access.ready();
    try {
      return await queryPooled<MemberRow>(this.#access.pool, { ...statement, values });
    } catch (error) {
      throw translateError(error, this.schema, this.#access.pool);
    }
  }
}
