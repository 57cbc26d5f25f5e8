import type { LockRow } from '../../core/admin.js';
import { describeHolder } from '../database.js';
import { ExitCode, unknownName } from '../errors.js';
import type { CommandSpec } from '../command.js';
import { flag } from '../command.js';
import { ago, duration, json, table, truncate } from '../format.js';
import { collectStatus, isLive } from './status-report.js';
import type { LeaderState, NodeEntry, PartitionEntry, StatusEntry, StatusReport } from './status-report.js';

export { collectStatus } from './status-report.js';
export type { LeaderState, NodeEntry, PartitionEntry, PartitionsInfo, StatusEntry, StatusReport } from './status-report.js';

const STATE_TEXT: Record<LeaderState, string> = { leading: 'leading', 'no-leader': 'no leader', unelected: 'no election', unknown: 'unknown' };
const UNKNOWN_KIND = 'subscription or automation';
const ROLE_TEXT: Record<NodeEntry['role'], string> = {
  leader: 'leader',
  unelected: 'unelected',
  standby: 'standby',
  'denied-standby': 'denied standby',
  none: '-',
};

/** "leader, 1 denied standby, 1 stale": what the nodes' rows say, live ones by role. */
function nodesSummary(nodes: readonly NodeEntry[]): string {
  const parts: string[] = [];
  const live = nodes.filter(isLive);
  const count = (role: NodeEntry['role']): number => live.filter((node) => node.role === role).length;
  const leaders = count('leader');
  if (leaders > 0) parts.push(leaders === 1 ? 'leader' : `${leaders} leaders`);
  for (const role of ['unelected', 'standby', 'denied-standby'] as const) if (count(role) > 0) parts.push(`${count(role)} ${ROLE_TEXT[role]}`);
  const stale = nodes.filter((node) => node.stale).length;
  if (stale > 0) parts.push(`${stale} stale`);
  const failed = nodes.filter((node) => node.state === 'failed').length;
  if (failed > 0) parts.push(`${failed} failed`);
  if (parts.length === 0 && nodes.length > 0) parts.push('stopped');
  return parts.length === 0 ? '-' : parts.join(', ');
}

/** "2 pending, 1 running, 1 retrying, oldest 4.0 s"; "idle" when the list is empty. */
function workText(work: NodeEntry['work']): string {
  if (work === null) return '-';
  const parts = (['pending', 'running', 'hung', 'retrying', 'unrecorded'] as const).filter((what) => work[what] > 0).map((what) => `${work[what]} ${what}`);
  if (work.oldestPendingMs !== null) parts.push(`oldest ${duration(work.oldestPendingMs)}`);
  return parts.length === 0 ? 'idle' : parts.join(', ');
}

/** "#0-3 #6 #9-10": partition numbers, runs of consecutive ones shortened. */
export function partitionList(partitions: readonly number[]): string {
  const runs: string[] = [];
  for (let i = 0; i < partitions.length; ) {
    let j = i;
    while (j + 1 < partitions.length && (partitions[j + 1] as number) === (partitions[j] as number) + 1) j++;
    runs.push(j === i ? `#${partitions[i]}` : `#${partitions[i]}-${partitions[j]}`);
    i = j + 1;
  }
  return runs.join(' ');
}

/** A node's role; under a partitioned runner, the partitions it leads. */
function roleText(node: NodeEntry): string {
  if (node.leads && node.leads.length > 0) return `leads ${node.leads.length}: ${partitionList(node.leads)}`;
  return ROLE_TEXT[node.role];
}

function renderNodes(entries: readonly StatusEntry[]): string {
  const rows = entries.flatMap((entry) =>
    entry.nodes.map((node) => [
      entry.name,
      node.nodeId,
      node.stale ? `${node.state} (stale)` : node.state,
      roleText(node),
      node.position === null ? '-' : String(node.position),
      String(node.handled),
      node.lastEvent === null ? '-' : `#${node.lastEvent.position} ${duration(node.lastEvent.ageMs)} ago`,
      workText(node.work),
      `${duration(node.heartbeatAgeMs)} ago`,
      node.lastError === null ? '-' : truncate(node.lastError, 60),
    ]),
  );
  if (rows.length === 0) return '';
  let text = `\nNodes (their status rows; times by the database's clock):\n`;
  text += table(['NAME', 'NODE', 'STATE', 'ROLE', 'POSITION', 'HANDLED', 'LAST EVENT', 'WORK', 'HEARTBEAT', 'LAST ERROR'], rows);
  if (entries.some((entry) => entry.nodes.some((node) => node.stale))) {
    text += "stale: no heartbeat for 3 intervals (by the database's clock) while running: the process froze, died or lost the database.\n";
  }
  return text;
}

/**
 * ", rebuilding (shadow at 1,234, 3.0 s ago)": a rebuild owns shadow tables, and where their checkpoint
 * is and when it last moved (one that stops moving died: the next rebuild resumes there). Without that
 * checkpoint (a rebuilder that keeps none), ", rebuilding" alone; "" when no rebuild runs.
 */
export function rebuildingText(view: StatusEntry['view'], now: Date): string {
  if (!view?.rebuilding) return '';
  const shadow = view.shadow;
  if (shadow === null) return ', rebuilding';
  return `, rebuilding (shadow at ${shadow.position.toLocaleString('en-US')}, ${ago(new Date(shadow.updatedAt), now)})`;
}

/** The columns of one entry of the main table: a runner, one of its partitions, or a partitioned runner as a whole. */
function entryRow(entry: StatusEntry, locks: ReadonlyMap<string, LockRow>, now: Date): string[] {
  const kind = entry.view ? `view (setup v${entry.view.version}, gen ${entry.view.generation})` : entry.kind === 'unknown' ? UNKNOWN_KIND : entry.kind;
  const token = entry.fencingToken.lease ?? entry.fencingToken.checkpoint;
  const { dead, redrive } = entry.deadLetters;
  const row = [
    entry.name,
    kind,
    entry.position === null ? '-' : String(entry.position),
    entry.lag === null ? '-' : String(entry.lag),
    entry.superseded ? 'superseded' : STATE_TEXT[entry.state] + rebuildingText(entry.view, now),
    nodesSummary(entry.nodes),
    token === null || token === 0 ? '-' : String(token),
    redrive > 0 ? `${dead} (+${redrive} redrive)` : String(dead),
    entry.updatedAt === null ? '-' : ago(new Date(entry.updatedAt), now),
    '-',
  ];
  const lock = locks.get(entry.name);
  if (entry.state === 'leading' && lock) row[9] = describeHolder(lock, now);
  const partitions = entry.partitions;
  if (partitions) {
    const led = partitions.count - partitions.unowned.length;
    row[1] = `${kind}, ${partitions.count} partitions`;
    if (!entry.superseded) row[4] = led === partitions.count ? 'leading' : led === 0 ? STATE_TEXT[entry.state] : `${led} of ${partitions.count} led`;
    row[9] = partitions.owners.map((owner) => `${owner.nodeId}: ${owner.partitions.length}`).join(', ') || '-';
  }
  return row;
}

/** A partition's line, under its runner's: indented, its owner by id alone (the runner's line counts them up). */
function partitionRow(lane: PartitionEntry, locks: ReadonlyMap<string, LockRow>, now: Date): string[] {
  const row = entryRow(lane, locks, now);
  row[0] = `  ${lane.name}`;
  row[1] = '';
  row[9] = lane.owner ?? '-';
  return row;
}

function renderStatus(report: StatusReport, locks: ReadonlyMap<string, LockRow>): string {
  const now = new Date();
  let text = `${report.database}  schema version ${report.schemaVersion}  head ${report.head}\n\n`;
  if (report.entries.length === 0) {
    return `${text}No subscription, automation or view has run against this database yet.\n`;
  }
  // A superseded layout's partitions stay in --json: listed, they would only repeat its line.
  const shown = report.entries.flatMap((entry) => [entry, ...(entry.superseded ? [] : (entry.partitions?.entries ?? []))]);
  const rows = shown.map((entry) => ('partition' in entry ? partitionRow(entry as PartitionEntry, locks, now) : entryRow(entry, locks, now)));
  text += table(['NAME', 'KIND', 'POSITION', 'LAG', 'STATE', 'NODES', 'TOKEN', 'DEAD LETTERS', 'UPDATED', 'LEADER'], rows);
  if (shown.some((entry) => entry.kind === 'unknown')) {
    text +=
      `\n${UNKNOWN_KIND}: no node published a status row for it, and the database holds none of the traces that tell\n` +
      'them apart right now: completion records or execute/trigger dead letters (an automation), handler dead letters (a subscription).\n';
  }
  if (shown.some((entry) => entry.state === 'unknown' && !entry.superseded)) {
    text +=
      '\nunknown: no sign of leader election (no lock held or recorded, no fenced checkpoint) and no live status row: the database\n' +
      'cannot tell whether a node runs it, and without leader election every node that starts it processes it.\n';
  }
  if (report.entries.some((entry) => entry.superseded)) {
    text +=
      '\nsuperseded: checkpoints left by a partition count used before (or by running it unpartitioned): another count saved\n' +
      'its checkpoints since, and nothing runs these any more (see docs/scaling.md, "Changing the partition count").\n';
  }
  return text + renderNodes(report.entries);
}

export const status: CommandSpec = {
  name: 'status',
  summary: 'subscriptions, automations and views: position, lag, leader, dead letters',
  help: `Usage: eskit status [<name>...] [--json]

One line per subscription, automation and view found in the database (its checkpoint, its lock, its
dead letters, its view tables, or the status rows its nodes publish):

  KIND          what its nodes declared in their status rows; without rows, told from traces (see below)
  POSITION      the saved checkpoint (the last event it finished)
  LAG           head - position, counting events of every type
  STATE         leading      a node holds its lock right now (LEADER says which)
                no leader    leader election is on, but no node holds the lock (stopped, or failing over)
                no election  no lock, and a live node says it runs without leader election
                unknown      no lock row and no live status row: the database cannot tell whether a
                             node runs it
  NODES         the live nodes by role (leader, unelected, standby, denied standby), and those that
                went stale or failed; a denied standby waits for a lock another node holds
  TOKEN         the fencing token of the lock (the leader's), else of the checkpoint
  DEAD LETTERS  letters waiting for an operator (+ those marked for redrive)
  LEADER        SQLite: the lease holder and when its lease expires (by SQLite's clock).
                PostgreSQL: the holder id, and the session holding the advisory lock (pid,
                application_name, client address) from pg_locks / pg_stat_activity.

Then one line per node's status row: its state (stale: running, but no heartbeat for 3 intervals by
the database's clock), role, checkpoint, events handled, the last one and when, an automation's to-do
list (pending, running, hung, retrying, unrecorded, the oldest pending item's age), the last
heartbeat and the last error. Rows not written for an hour are removed when a runner starts.

A partitioned runner (partitions: N) keeps a checkpoint, lock and status row per partition, named
<name>#<partition>/<N>. It gets one line, KIND saying how many partitions, POSITION its lowest
checkpoint, STATE "leading" when every partition is led ("5 of 8 led" while some are not), LEADER how
many partitions each node leads; then one line per partition, indented: its checkpoint, lag, state,
token and dead letters, and its owner (the node leading it). In the node lines, one per node over
all its partitions: which partitions it leads (ROLE), its counters summed. Checkpoints left by a
partition count used before are "superseded" (docs/scaling.md, "Changing the partition count").

Views also show their setup version and generation (incremented by every rebuild). While a rebuild
owns shadow tables, STATE adds "rebuilding (shadow at <position>, <when> ago)": their checkpoint and
when it last moved. A rebuild whose checkpoint stops moving has died: the next rebuild resumes there.
Without status rows the database records no kind: an automation is told by its completion records or
to-do (execute, trigger) dead letters, a subscription by its handler dead letters; with none of them
right now (both are pruned), KIND says "subscription or automation" (--json: "unknown").

Arguments:
  <name>...   only these (exit 1 when one is unknown); a partition's name shows its runner

Options:
  --json      the same as JSON: {database, schemaVersion, head, entries: [{..., nodes: [...], partitions}]},
              partitions: null, or {count, owners: [{nodeId, partitions}], unowned, entries: [...]};
              a view's entry has view: {version, generation, rebuilding, shadow: {position, updatedAt} | null}
`,
  options: { json: { type: 'boolean' } },
  positionals: { min: 0, max: Number.POSITIVE_INFINITY, names: '[<name>...]' },
  async run(context) {
    const db = await context.open();
    const { report, locks } = await collectStatus(db);
    if (context.args.length > 0) {
      const known = [...new Set(report.entries.map((entry) => entry.name))];
      // A partition's name (from a log line or a dead letter's source) picks its runner.
      const picked = (entry: StatusEntry): boolean =>
        context.args.includes(entry.name) || (entry.partitions?.entries.some((lane) => context.args.includes(lane.name)) ?? false);
      const missing = context.args.find((name) => !known.includes(name) && !report.entries.some((entry) => entry.partitions?.entries.some((lane) => lane.name === name)));
      if (missing !== undefined) throw unknownName('subscription, automation or view', missing, known);
      report.entries = report.entries.filter(picked);
    }
    if (flag(context.values, 'json')) {
      context.out(json(report));
    } else {
      context.out(renderStatus(report, locks));
    }
    return ExitCode.Ok;
  },
};
