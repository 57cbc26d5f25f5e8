import type { LockRow } from '../../core/admin.js';
import { describeHolder } from '../database.js';
import { ExitCode, unknownName } from '../errors.js';
import type { CommandSpec } from '../command.js';
import { flag } from '../command.js';
import { ago, duration, json, table, truncate } from '../format.js';
import { collectStatus, isLive } from './status-report.js';
import type { LeaderState, NodeEntry, StatusEntry, StatusReport } from './status-report.js';

export { collectStatus } from './status-report.js';
export type { LeaderState, NodeEntry, StatusEntry, StatusReport } from './status-report.js';

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

function renderNodes(entries: readonly StatusEntry[]): string {
  const rows = entries.flatMap((entry) =>
    entry.nodes.map((node) => [
      entry.name,
      node.nodeId,
      node.stale ? `${node.state} (stale)` : node.state,
      ROLE_TEXT[node.role],
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

function renderStatus(report: StatusReport, locks: ReadonlyMap<string, LockRow>): string {
  const now = new Date();
  let text = `${report.database}  schema version ${report.schemaVersion}  head ${report.head}\n\n`;
  if (report.entries.length === 0) {
    return `${text}No subscription, automation or view has run against this database yet.\n`;
  }
  const rows = report.entries.map((entry) => {
    const lock = locks.get(entry.name);
    const kind = entry.view ? `view (setup v${entry.view.version}, gen ${entry.view.generation})` : entry.kind === 'unknown' ? UNKNOWN_KIND : entry.kind;
    const state = STATE_TEXT[entry.state] + (entry.view?.rebuilding ? ', rebuilding' : '');
    const token = entry.fencingToken.lease ?? entry.fencingToken.checkpoint;
    const { dead, redrive } = entry.deadLetters;
    return [
      entry.name,
      kind,
      entry.position === null ? '-' : String(entry.position),
      entry.lag === null ? '-' : String(entry.lag),
      state,
      nodesSummary(entry.nodes),
      token === null || token === 0 ? '-' : String(token),
      redrive > 0 ? `${dead} (+${redrive} redrive)` : String(dead),
      entry.updatedAt === null ? '-' : ago(new Date(entry.updatedAt), now),
      entry.state === 'leading' && lock ? describeHolder(lock, now) : '-',
    ];
  });
  text += table(['NAME', 'KIND', 'POSITION', 'LAG', 'STATE', 'NODES', 'TOKEN', 'DEAD LETTERS', 'UPDATED', 'LEADER'], rows);
  if (report.entries.some((entry) => entry.kind === 'unknown')) {
    text +=
      `\n${UNKNOWN_KIND}: no node published a status row for it, and the database holds none of the traces that tell\n` +
      'them apart right now: completion records or execute/trigger dead letters (an automation), handler dead letters (a subscription).\n';
  }
  if (report.entries.some((entry) => entry.state === 'unknown')) {
    text +=
      '\nunknown: no sign of leader election (no lock held or recorded, no fenced checkpoint) and no live status row: the database\n' +
      'cannot tell whether a node runs it, and without leader election every node that starts it processes it.\n';
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

Views also show their setup version and generation (incremented by every rebuild).
Without status rows the database records no kind: an automation is told by its completion records or
to-do (execute, trigger) dead letters, a subscription by its handler dead letters; with none of them
right now (both are pruned), KIND says "subscription or automation" (--json: "unknown").

Arguments:
  <name>...   only these (exit 1 when one is unknown)

Options:
  --json      the same as JSON: {database, schemaVersion, head, entries: [{..., nodes: [...]}]}
`,
  options: { json: { type: 'boolean' } },
  positionals: { min: 0, max: Number.POSITIVE_INFINITY, names: '[<name>...]' },
  async run(context) {
    const db = await context.open();
    const { report, locks } = await collectStatus(db);
    if (context.args.length > 0) {
      const known = report.entries.map((entry) => entry.name);
      const missing = context.args.find((name) => !known.includes(name));
      if (missing !== undefined) throw unknownName('subscription, automation or view', missing, known);
      report.entries = report.entries.filter((entry) => context.args.includes(entry.name));
    }
    if (flag(context.values, 'json')) {
      context.out(json(report));
    } else {
      context.out(renderStatus(report, locks));
    }
    return ExitCode.Ok;
  },
};
