import type { DeadLetterCount, LockRow, SubscriptionRow, ViewRow } from '../../core/admin.js';
import type { RunnerKind, RunnerRole, RunnerState, RunnerStatusRow } from '../../core/runner-status.js';
import type { CliDatabase } from '../database.js';
import { groupPartitions, isLive } from './status-partitions.js';

export { isLive };

/**
 * Who processes a name: 'leading' (its lock is held), 'no-leader' (lock known, not held), 'unelected'
 * (no lock, and a node's status row says it runs without leader election), 'unknown' (neither).
 */
export type LeaderState = 'leading' | 'no-leader' | 'unelected' | 'unknown';

/** One node's status row, as `status --json` prints it (times by the database's clock). */
export interface NodeEntry {
  nodeId: string;
  kind: RunnerKind;
  state: RunnerState;
  role: RunnerRole;
  /** Running, but no heartbeat for 3 intervals: the process froze, died or lost the database. */
  stale: boolean;
  heartbeatAt: string;
  heartbeatAgeMs: number;
  heartbeatMs: number;
  fencingToken: number | null;
  position: number | null;
  handled: number;
  lastEvent: { position: number; at: string; ageMs: number } | null;
  /** An automation's to-do list on that node. */
  work: { pending: number; running: number; hung: number; retrying: number; unrecorded: number; oldestPendingMs: number | null } | null;
  lastError: string | null;
  /**
   * Under a partitioned runner (one line per node over all its partitions): the partitions this node
   * leads now, by its live rows. Null for an unpartitioned runner's rows and for each partition's own.
   */
  leads: number[] | null;
}

/** One subscription, automation or view, as `status --json` prints it. */
export interface StatusEntry {
  name: string;
  /**
   * What its runners declared in their status rows, when there are any; otherwise told from what the
   * database holds: 'view' when it has a row in the view versions table; 'automation' when it has
   * completion records or dead letters of the execute/trigger stages; 'subscription' when it has dead
   * letters of the handler stage; otherwise 'unknown' (a guess either way: both traces are pruned).
   */
  kind: RunnerKind | 'unknown';
  /** The checkpoint; null when none was saved yet (claimed by a leader, or only dead letters exist). */
  position: number | null;
  head: number;
  /** head - position (events of every type, also those the subscription filters out). */
  lag: number | null;
  state: LeaderState;
  leader: {
    holder: string | null;
    pid: number | null;
    applicationName: string | null;
    clientAddr: string | null;
    expiresAt: string | null;
    acquiredAt: string | null;
  } | null;
  fencingToken: {
    /** The last token the lock handed out (the leader's, while one leads). */
    lease: number | null;
    /** The newest token that claimed or saved the checkpoint. */
    checkpoint: number | null;
  };
  deadLetters: { dead: number; redrive: number };
  /**
   * A view's versions row. `shadow`: while a rebuild owns shadow tables, their checkpoint and when it
   * last moved (by the database's clock); one whose updatedAt stops moving has died, and the next
   * rebuild resumes from its position. Null when no rebuild runs, or it keeps no such checkpoint.
   */
  view: { version: number; generation: number; rebuilding: boolean; shadow: { position: number; updatedAt: string } | null } | null;
  updatedAt: string | null;
  /**
   * The status rows of the nodes that run (or ran) it, a denied standby too. A partitioned runner's:
   * one per node over all its partitions (counters summed, `leads` says which partitions it leads).
   */
  nodes: NodeEntry[];
  /**
   * Another layout of the same runner (unpartitioned, or another partition count) saved its
   * checkpoints later: these were left by the count used before (nothing runs them any more).
   */
  superseded: boolean;
  /** A partitioned runner (one partition count): its partitions, each with its own entry. Null otherwise. */
  partitions: PartitionsInfo | null;
}

/** A partitioned runner's partitions (entries named `<name>#<partition>/<count>`). */
export interface PartitionsInfo {
  count: number;
  /** Who leads which partitions now (by the locks, else the nodes' status rows), by node id. */
  owners: Array<{ nodeId: string; partitions: number[] }>;
  /** Partitions no node leads now (a handover, nodes too few or stopped, or never run). */
  unowned: number[];
  /** Each partition the database knows, in partition order: its checkpoint, lock, token, lag, dead letters and rows. */
  entries: PartitionEntry[];
}

/** One partition: its entry (named `<name>#<partition>/<count>`), its number and the node that leads it. */
export interface PartitionEntry extends StatusEntry {
  partition: number;
  /** The node leading it now: the lock's holder id, else the live status row that says it leads. */
  owner: string | null;
}

export interface StatusReport {
  database: string;
  schemaVersion: number;
  head: number;
  entries: StatusEntry[];
}

function nodeEntry(row: RunnerStatusRow): NodeEntry {
  const work = row.work;
  return {
    nodeId: row.nodeId,
    kind: row.kind,
    state: row.state,
    role: row.role,
    stale: row.stale,
    heartbeatAt: row.heartbeatAt.toISOString(),
    heartbeatAgeMs: row.heartbeatAgeMs,
    heartbeatMs: row.heartbeatMs,
    fencingToken: row.fencingToken ?? null,
    position: row.position ?? null,
    handled: row.handled,
    // The age by the database's clock alone: the heartbeat's age plus how long before it the event was.
    lastEvent: row.lastEvent
      ? { position: row.lastEvent.position, at: row.lastEvent.at.toISOString(), ageMs: row.heartbeatAgeMs + row.heartbeatAt.getTime() - row.lastEvent.at.getTime() }
      : null,
    work: work ? { ...work, oldestPendingMs: work.oldestPendingMs ?? null } : null,
    lastError: row.lastError ?? null,
    leads: null,
  };
}

function group<T extends { name: string }>(rows: readonly T[]): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const row of rows) groups.set(row.name, [...(groups.get(row.name) ?? []), row]);
  return groups;
}

/**
 * Reads everything `status` shows, through the admin surface. `counts`: the dead-letter counts the
 * entries were made from (by source, stage and status), for a caller that shows them otherwise too.
 */
export async function collectStatus(db: CliDatabase): Promise<{ report: StatusReport; locks: ReadonlyMap<string, LockRow>; counts: readonly DeadLetterCount[] }> {
  const [subscriptions, views, counts, completions, runners] = await Promise.all([
    db.admin.subscriptions(),
    db.admin.views(),
    db.admin.deadLetterCounts(),
    db.admin.completionSources(),
    db.admin.runners.list(),
  ]);
  const head = subscriptions[0]?.head ?? (await db.store.headPosition());
  const subscriptionOf = new Map<string, SubscriptionRow>(subscriptions.map((row) => [row.name, row]));
  const viewOf = new Map<string, ViewRow>(views.map((row) => [row.name, row]));
  const nodesOf = group(runners);
  const automations = new Set(completions);
  const subscribers = new Set<string>();
  const letters = new Map<string, { dead: number; redrive: number }>();
  for (const count of counts) {
    const entry = letters.get(count.source) ?? { dead: 0, redrive: 0 };
    if (count.status === 'redrive') entry.redrive += count.count;
    else entry.dead += count.count;
    letters.set(count.source, entry);
    if (count.stage === 'execute' || count.stage === 'trigger') automations.add(count.source);
    else subscribers.add(count.source);
  }
  const locks = new Map<string, LockRow>();
  const names = [...new Set([...subscriptionOf.keys(), ...viewOf.keys(), ...letters.keys(), ...nodesOf.keys()])].sort();
  const entries = names.map((name): StatusEntry => {
    const subscription = subscriptionOf.get(name);
    const lock = subscription?.lock;
    if (lock) locks.set(name, lock);
    const view = viewOf.get(name);
    const rows = nodesOf.get(name) ?? [];
    const nodes = rows.map(nodeEntry);
    // The freshest row's word; a runner knows what it is.
    const declared = [...rows].sort((a, b) => a.heartbeatAgeMs - b.heartbeatAgeMs)[0]?.kind;
    const traced = automations.has(name) ? 'automation' : subscribers.has(name) ? 'subscription' : 'unknown';
    const position = subscription?.position ?? null;
    const unelected = nodes.some((node) => isLive(node) && node.role === 'unelected');
    return {
      name,
      kind: view ? 'view' : (declared ?? traced),
      position,
      head,
      lag: position === null ? null : Math.max(0, head - position),
      state: lock === undefined ? (unelected ? 'unelected' : 'unknown') : lock.held ? 'leading' : 'no-leader',
      leader: lock?.held
        ? {
            holder: lock.holder ?? null,
            pid: lock.pid ?? null,
            applicationName: lock.applicationName ?? null,
            clientAddr: lock.clientAddr ?? null,
            expiresAt: lock.expiresAt?.toISOString() ?? null,
            acquiredAt: lock.acquiredAt?.toISOString() ?? null,
          }
        : null,
      fencingToken: { lease: lock?.fencingToken ?? null, checkpoint: subscription?.checkpointToken ?? null },
      deadLetters: letters.get(name) ?? { dead: 0, redrive: 0 },
      view: view
        ? {
            version: view.version,
            generation: view.generation,
            rebuilding: view.rebuilding,
            shadow: view.shadow ? { position: view.shadow.position, updatedAt: view.shadow.updatedAt.toISOString() } : null,
          }
        : null,
      updatedAt: subscription?.updatedAt?.toISOString() ?? null,
      nodes,
      superseded: false,
      partitions: null,
    };
  });
  return { report: { database: db.target.display, schemaVersion: db.schema.version, head, entries: groupPartitions(entries) }, locks, counts };
}
