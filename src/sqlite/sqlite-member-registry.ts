import type Database from 'better-sqlite3';
import { checkGroup, checkHeartbeat, checkMemberId, MEMBER_ROW_RETENTION_MS, sortMembers } from '../core/member-checks.js';
import type { LiveMember, MemberHeartbeat, MemberRegistry } from '../core/members.js';
import { SqliteHandle } from './handle.js';
import type { SqliteOwnedConnectionOptions } from './handle.js';
import { fileKey } from './lock-wakeups.js';
import { SQLITE_NOW_MS } from './sqlite-checkpoint-store.js';

export type SqliteMemberRegistryOptions = SqliteOwnedConnectionOptions;

type Statement<P extends unknown[], R = unknown> = Database.Statement<P, R>;

interface GroupRow {
  member: string;
  partitions: number;
  alive: number;
  stale: number;
}

interface Statements {
  group: Statement<[string], GroupRow>;
  upsert: Statement<[{ group: string; id: string; partitions: number; ttl: number }]>;
  sweep: Statement<[{ group: string; id: string }]>;
  leave: Statement<[string, string]>;
}

function prepare(database: Database.Database): Statements {
  // safeIntegers(false): a shared handle may have turned on BigInt results by default.
  return {
    group: database
      .prepare<[string], GroupRow>(
        `SELECT member, partitions, expires_at > ${SQLITE_NOW_MS} AS alive, expires_at < ${SQLITE_NOW_MS} - ${MEMBER_ROW_RETENTION_MS} AS stale
         FROM eskit_members WHERE grp = ?`,
      )
      .safeIntegers(false),
    upsert: database.prepare(`
      INSERT INTO eskit_members (grp, member, partitions, expires_at) VALUES (:group, :id, :partitions, ${SQLITE_NOW_MS} + :ttl)
      ON CONFLICT (grp, member) DO UPDATE SET partitions = excluded.partitions, expires_at = excluded.expires_at`),
    sweep: database.prepare(
      `DELETE FROM eskit_members WHERE grp = :group AND member <> :id AND expires_at < ${SQLITE_NOW_MS} - ${MEMBER_ROW_RETENTION_MS}`,
    ),
    leave: database.prepare('DELETE FROM eskit_members WHERE grp = ? AND member = ?'),
  };
}

/**
 * Listeners per database file in this process: a heartbeat or a leave on any registry of the file
 * tells every registry of the file here at once. Other processes sharing the file hear nothing and
 * learn at their next heartbeat (SQLite has no notifications).
 */
const listenersByFile = new Map<string, Set<(group: string) => void>>();

function announce(key: string, group: string): void {
  const listeners = listenersByFile.get(key);
  if (listeners === undefined) return;
  for (const listener of listeners) {
    queueMicrotask(() => {
      // A listener removed meanwhile (its registry closed) hears nothing more.
      if (!listeners.has(listener)) return;
      try {
        listener(group);
      } catch {
        // A hint that a listener failed to take: its next heartbeat tells it the same.
      }
    });
  }
}

/**
 * Who is alive in each group, in `eskit_members` on a SQLite file, judged by SQLite's clock (all the
 * processes sharing a file run on one host, so this is that host's clock for every node). A member is
 * dead once its last heartbeat's ttl ran out: SQLite cannot see a killed process, so a killed node is
 * found out no sooner than a frozen one.
 *
 * A heartbeat is one `BEGIN IMMEDIATE` transaction: the group's rows, then this member's upsert. It
 * waits for the write lock up to the connection's busy timeout, and fails with ESKIT_STORE_BUSY past
 * it: the caller's next heartbeat tries again.
 */
export class SqliteMemberRegistry implements MemberRegistry {
  readonly database: Database.Database;
  readonly #handle: SqliteHandle;
  readonly #key: string;
  /** This registry's listeners, removed from the file's on close(). */
  readonly #mine = new Set<(group: string) => void>();
  #statements: Statements | undefined;
  #closed = false;
  readonly #beat: Database.Transaction<(group: string, member: MemberHeartbeat) => { live: LiveMember[]; joined: boolean }>;

  constructor(options: SqliteMemberRegistryOptions) {
    this.#handle = new SqliteHandle(options, 'SqliteMemberRegistry', 'member registry');
    this.database = this.#handle.database;
    this.#key = fileKey(this.database);
    this.#beat = this.database.transaction((group: string, { id, partitions, ttlMs }: MemberHeartbeat) => {
      const statements = this.#prepared();
      const live: LiveMember[] = [];
      let joined = true;
      let stale = false;
      // Read before the upsert, in the same transaction: whether this member was alive before is what
      // decides the announcement, and the others' rows cannot change under the write lock.
      for (const row of statements.group.all(group)) {
        if (row.member === id) joined = row.alive !== 1;
        else if (row.alive === 1) live.push({ id: row.member, partitions: row.partitions });
        else if (row.stale === 1) stale = true;
      }
      statements.upsert.run({ group, id, partitions, ttl: ttlMs });
      if (stale) statements.sweep.run({ group, id });
      live.push({ id, partitions });
      return { live: sortMembers(live), joined };
    });
  }

  async heartbeat(group: string, member: MemberHeartbeat): Promise<LiveMember[]> {
    checkGroup(group);
    const checked = checkHeartbeat(member);
    const { live, joined } = this.#handle.run(`record a heartbeat of member "${checked.id}" in group "${group}"`, () => this.#beat.immediate(group, checked));
    if (joined) announce(this.#key, group);
    return live;
  }

  async leave(group: string, member: string): Promise<void> {
    checkGroup(group);
    checkMemberId(member);
    const { changes } = this.#handle.run(`take member "${member}" out of group "${group}"`, () => this.#prepared().leave.run(group, member));
    if (changes > 0) announce(this.#key, group);
  }

  onChange(listener: (group: string) => void): () => void {
    // Wrapped, so that the same function added twice is two listeners with a remover each.
    const wrapped = (group: string): void => listener(group);
    // A closed registry calls no one, and must not leave a listener in the file's set for good.
    if (this.#closed) return () => undefined;
    let listeners = listenersByFile.get(this.#key);
    if (listeners === undefined) {
      listeners = new Set();
      listenersByFile.set(this.#key, listeners);
    }
    listeners.add(wrapped);
    this.#mine.add(wrapped);
    return () => this.#unlisten(wrapped);
  }

  /**
   * Removes this registry's listeners and refuses further calls; closes the connection if the registry
   * opened it (from `path`). Members it announced stay until they leave or their ttl runs out. Safe to
   * call twice.
   */
  async close(): Promise<void> {
    this.#closed = true;
    for (const listener of [...this.#mine]) this.#unlisten(listener);
    this.#handle.close();
  }

  #unlisten(listener: (group: string) => void): void {
    this.#mine.delete(listener);
    const listeners = listenersByFile.get(this.#key);
    if (listeners === undefined) return;
    listeners.delete(listener);
    if (listeners.size === 0) listenersByFile.delete(this.#key);
  }

  #prepared(): Statements {
    this.#statements ??= prepare(this.database);
    return this.#statements;
  }
}
