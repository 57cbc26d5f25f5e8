import type { CheckpointRow, CliDatabase, LeaseRow, ViewRow } from '../database.js';
import { describeHolder } from '../database.js';
import { ExitCode, unknownName } from '../errors.js';
import type { CommandSpec } from '../command.js';
import { flag } from '../command.js';
import { ago, json, table } from '../format.js';

/** Who processes a name: 'leading' (its lock is held), 'no-leader' (lock known, not held), 'unknown' (no lock row). */
export type LeaderState = 'leading' | 'no-leader' | 'unknown';

/** One subscription, automation or view, as `status --json` prints it. */
export interface StatusEntry {
  name: string;
  /**
   * Told from what the database holds, which records no kind of its own: 'view' when it has a row in
   * the view versions table; 'automation' when it has recorded to-do completions or dead letters of
   * the execute/trigger stages; 'subscription' when it has dead letters of the handler stage;
   * otherwise 'unknown': a subscription, or an automation with no dead letters and no completion
   * records right now (both are pruned), so calling it either would be a guess.
   */
  kind: 'subscription' | 'automation' | 'view' | 'unknown';
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
  view: { version: number; generation: number; rebuilding: boolean } | null;
  updatedAt: string | null;
}

export interface StatusReport {
  database: string;
  schemaVersion: number;
  head: number;
  entries: StatusEntry[];
}

/** Reads everything `status` shows, in one pass over eskit's tables. */
export async function collectStatus(db: CliDatabase): Promise<{ report: StatusReport; leases: ReadonlyMap<string, LeaseRow> }> {
  const [head, checkpoints, leases, views, counts, completions] = await Promise.all([
    db.store.headPosition(),
    db.checkpoints(),
    db.leases(),
    db.views(),
    db.deadLetterCounts(),
    db.completionSources(),
  ]);
  const byName = <T extends { name: string }>(rows: readonly T[]): Map<string, T> => new Map(rows.map((row) => [row.name, row]));
  const checkpointOf = byName<CheckpointRow>(checkpoints);
  const leaseOf = byName<LeaseRow>(leases);
  const viewOf = byName<ViewRow>(views);
  const automations = new Set(completions);
  const subscriptions = new Set<string>();
  const letters = new Map<string, { dead: number; redrive: number }>();
  for (const count of counts) {
    const entry = letters.get(count.source) ?? { dead: 0, redrive: 0 };
    if (count.status === 'redrive') entry.redrive += count.count;
    else entry.dead += count.count;
    letters.set(count.source, entry);
    if (count.stage === 'execute' || count.stage === 'trigger') automations.add(count.source);
    else subscriptions.add(count.source);
  }
  const names = [...new Set([...checkpointOf.keys(), ...leaseOf.keys(), ...viewOf.keys(), ...letters.keys()])].sort();
  const entries = names.map((name): StatusEntry => {
    const checkpoint = checkpointOf.get(name);
    const lease = leaseOf.get(name);
    const view = viewOf.get(name);
    const position = checkpoint?.position ?? null;
    return {
      name,
      kind: view ? 'view' : automations.has(name) ? 'automation' : subscriptions.has(name) ? 'subscription' : 'unknown',
      position,
      head,
      lag: position === null ? null : Math.max(0, head - position),
      state: lease === undefined ? 'unknown' : lease.held ? 'leading' : 'no-leader',
      leader: lease?.held
        ? {
            holder: lease.holder ?? null,
            pid: lease.pid ?? null,
            applicationName: lease.applicationName ?? null,
            clientAddr: lease.clientAddr ?? null,
            expiresAt: lease.expiresAt?.toISOString() ?? null,
            acquiredAt: lease.acquiredAt?.toISOString() ?? null,
          }
        : null,
      fencingToken: { lease: lease?.fencingToken ?? null, checkpoint: checkpoint?.fencingToken ?? null },
      deadLetters: letters.get(name) ?? { dead: 0, redrive: 0 },
      view: view ? { version: view.version, generation: view.generation, rebuilding: view.rebuilding } : null,
      updatedAt: checkpoint?.updatedAt.toISOString() ?? null,
    };
  });
  return { report: { database: db.target.display, schemaVersion: db.schemaVersion, head, entries }, leases: leaseOf };
}

const STATE_TEXT: Record<LeaderState, string> = { leading: 'leading', 'no-leader': 'no leader', unknown: 'unknown' };
const UNKNOWN_KIND = 'subscription or automation';

function renderStatus(report: StatusReport, leases: ReadonlyMap<string, LeaseRow>): string {
  const now = new Date();
  let text = `${report.database}  schema version ${report.schemaVersion}  head ${report.head}\n\n`;
  if (report.entries.length === 0) {
    return `${text}No subscription, automation or view has run against this database yet.\n`;
  }
  const rows = report.entries.map((entry) => {
    const lease = leases.get(entry.name);
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
      token === null || token === 0 ? '-' : String(token),
      redrive > 0 ? `${dead} (+${redrive} redrive)` : String(dead),
      entry.updatedAt === null ? '-' : ago(new Date(entry.updatedAt), now),
      entry.state === 'leading' && lease ? describeHolder(lease, now) : '-',
    ];
  });
  text += table(['NAME', 'KIND', 'POSITION', 'LAG', 'STATE', 'TOKEN', 'DEAD LETTERS', 'UPDATED', 'LEADER'], rows);
  if (report.entries.some((entry) => entry.kind === 'unknown')) {
    text +=
      `\n${UNKNOWN_KIND}: the database records no kind, and holds none of the traces that tell them apart right\n` +
      'now: completion records or execute/trigger dead letters (an automation), handler dead letters (a subscription).\n';
  }
  if (report.entries.some((entry) => entry.state === 'unknown')) {
    text +=
      '\nunknown: no sign of leader election (no lock held or recorded, no fenced checkpoint): the database cannot tell\n' +
      'whether a node runs it, and without leader election every node that starts it processes it.\n';
  }
  return text;
}

export const status: CommandSpec = {
  name: 'status',
  summary: 'subscriptions, automations and views: position, lag, leader, dead letters',
  help: `Usage: eskit status [<name>...] [--json]

One line per subscription, automation and view found in the database (its checkpoint, its lock, its
dead letters or its view tables):

  POSITION      the saved checkpoint (the last event it finished)
  LAG           head - position, counting events of every type
  STATE         leading    a node holds its lock right now (LEADER says which)
                no leader  leader election is on, but no node holds the lock (stopped, or failing over)
                unknown    no lock row: no leader election (or a registry in another database), so
                           the database cannot tell whether a node runs it
  TOKEN         the fencing token of the lock (the leader's), else of the checkpoint
  DEAD LETTERS  letters waiting for an operator (+ those marked for redrive)
  LEADER        SQLite: the lease holder and when its lease expires (by SQLite's clock).
                PostgreSQL: the holder id, and the session holding the advisory lock (pid,
                application_name, client address) from pg_locks / pg_stat_activity.

Views also show their setup version and generation (incremented by every rebuild).
The database records no kind: an automation is told by its completion records or to-do (execute,
trigger) dead letters, a subscription by its handler dead letters; with none of them right now
(both are pruned), KIND says "subscription or automation" (--json: "unknown").

Arguments:
  <name>...   only these (exit 1 when one is unknown)

Options:
  --json      the same as JSON: {database, schemaVersion, head, entries: [...]}
`,
  options: { json: { type: 'boolean' } },
  positionals: { min: 0, max: Number.POSITIVE_INFINITY, names: '[<name>...]' },
  async run(context) {
    const db = await context.open();
    const { report, leases } = await collectStatus(db);
    if (context.args.length > 0) {
      const known = report.entries.map((entry) => entry.name);
      const missing = context.args.find((name) => !known.includes(name));
      if (missing !== undefined) throw unknownName('subscription, automation or view', missing, known);
      report.entries = report.entries.filter((entry) => context.args.includes(entry.name));
    }
    if (flag(context.values, 'json')) {
      context.out(json(report));
    } else {
      context.out(renderStatus(report, leases));
    }
    return ExitCode.Ok;
  },
};
