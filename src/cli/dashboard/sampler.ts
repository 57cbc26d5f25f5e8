// The per-interval sample: the database is read once per interval (never per page), whatever number
// of pages are connected. A tick is skipped while the previous one still runs; an error is kept in
// the state (the last good sample stays) and sampling goes on.
import { collectStatus, isLive } from '../commands/status-report.js';
import type { NodeEntry, StatusEntry } from '../commands/status-report.js';
import type { CliDatabase } from '../database.js';
import { messageOf } from '../errors.js';
import type { Logger } from '../../core/logger.js';
import type { LogTail } from './tail.js';
import type { DashboardEntry, DashboardState, DashboardWork, EventView, ViewTable } from './types.js';

/** What a sample holds; the dashboard adds what it keeps itself (rebuilds, the action log). */
export type SampledState = Pick<DashboardState, 'at' | 'database' | 'backend' | 'schemaVersion' | 'head' | 'entries' | 'deadLetters' | 'error'>;

/** Every how many samples the views' row counts are read again. */
const VIEW_TABLES_EVERY = 10;

export interface SamplerOptions {
  intervalMs: number;
  historySamples: number;
  logger: Logger;
  tail: LogTail;
  /** Hides secrets (the database password) in error texts. */
  scrub: (text: string) => string;
  /** After each sample: the state, and the events appended since the last one. */
  onSample: (state: SampledState, events: EventView[]) => void;
}

interface Previous {
  position: number;
  at: number;
  /** When this sampler last saw the position move (performance.now()); undefined until it has. */
  movedAt: number | undefined;
}

function lastHandledAgeMs(nodes: readonly NodeEntry[]): number | null {
  const ages = nodes.filter(isLive).flatMap((node) => (node.lastEvent === null ? [] : [node.lastEvent.ageMs]));
  return ages.length === 0 ? null : Math.min(...ages);
}

function summedWork(nodes: readonly NodeEntry[]): DashboardWork | null {
  const works = nodes.filter(isLive).flatMap((node) => (node.work === null ? [] : [node.work]));
  if (works.length === 0) return null;
  const sum = (key: 'pending' | 'running' | 'retrying' | 'hung'): number => works.reduce((total, work) => total + work[key], 0);
  const oldest = works.flatMap((work) => (work.oldestPendingMs === null ? [] : [work.oldestPendingMs]));
  return { pending: sum('pending'), running: sum('running'), retrying: sum('retrying'), hung: sum('hung'), oldestPendingMs: oldest.length === 0 ? null : Math.max(...oldest) };
}

export class Sampler {
  readonly #db: CliDatabase;
  readonly #options: SamplerOptions;
  #state: SampledState;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #again = false;
  #stopped = false;
  #count = 0;
  #failing = false;
  readonly #previous = new Map<string, Previous>();
  readonly #history = new Map<string, number[]>();
  #viewTables = new Map<string, ViewTable[]>();
  /** The views' row counts are read at the next sample (every VIEW_TABLES_EVERY, and again after a failure). */
  #viewTablesDue = true;

  constructor(db: CliDatabase, options: SamplerOptions) {
    this.#db = db;
    this.#options = options;
    this.#state = {
      at: new Date().toISOString(),
      database: db.target.display,
      backend: db.target.kind,
      schemaVersion: db.schema.version,
      head: 0,
      entries: [],
      deadLetters: { total: 0, bySource: [] },
      error: null,
    };
  }

  get state(): SampledState {
    return this.#state;
  }

  /** Samples now, then every intervalMs. */
  start(): void {
    this.kick();
    this.#timer = setInterval(() => {
      if (this.#running === undefined) this.kick();
    }, this.#options.intervalMs);
  }

  /** Samples as soon as possible: now, or once more when the running sample ends (after an action). */
  kick(): void {
    if (this.#stopped) return;
    if (this.#running !== undefined) {
      this.#again = true;
      return;
    }
    this.#running = this.#sample().finally(() => {
      this.#running = undefined;
      if (this.#again) {
        this.#again = false;
        this.kick();
      }
    });
  }

  /** Stops the timer and waits for a sample that runs, for `waitMs` at most (a database that hangs must not hold up a close). */
  async stop(waitMs = 2000): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    this.#again = false;
    if (this.#running === undefined) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.#running, new Promise<void>((resolve) => (timer = setTimeout(resolve, waitMs).unref()))]);
    clearTimeout(timer);
  }

  async #sample(): Promise<void> {
    const errors: string[] = [];
    try {
      await this.#status(errors);
    } catch (error) {
      errors.push(messageOf(error));
    }
    let events: EventView[] = [];
    try {
      events = await this.#options.tail.poll();
    } catch (error) {
      errors.push(`reading the log: ${messageOf(error)}`);
    }
    if (this.#stopped) return;
    const error = errors.length === 0 ? null : this.#options.scrub(errors.join('; '));
    if (error !== null && !this.#failing) this.#options.logger.warn({ error }, `dashboard: sampling the database failed: ${error}`);
    if (error === null && this.#failing) this.#options.logger.info({}, 'dashboard: sampling the database works again');
    this.#failing = error !== null;
    this.#state = { ...this.#state, at: new Date().toISOString(), error };
    try {
      this.#options.onSample(this.#state, events);
    } catch (listenerError) {
      this.#options.logger.error({ err: listenerError }, 'dashboard: sending a sample failed');
    }
  }

  /** `errors`: where what went wrong short of the whole status goes (a view's row count). */
  async #status(errors: string[]): Promise<void> {
    // The entries' dead letters and the totals come from one read: two could disagree within a state.
    const { report, counts } = await collectStatus(this.#db);
    const at = performance.now();
    this.#count += 1;
    if (this.#count % VIEW_TABLES_EVERY === 1) this.#viewTablesDue = true;
    if (this.#viewTablesDue) await this.#countViewRows(report.entries, errors);
    const bySource = new Map<string, { source: string; dead: number; redrive: number }>();
    let total = 0;
    for (const count of counts) {
      const entry = bySource.get(count.source) ?? { source: count.source, dead: 0, redrive: 0 };
      if (count.status === 'redrive') entry.redrive += count.count;
      else entry.dead += count.count;
      bySource.set(count.source, entry);
      total += count.count;
    }
    const seen = new Set<string>();
    const entries = report.entries.map((entry) => this.#extend(entry, at, seen));
    // Names gone from the database (a pruned runner) leave no history behind.
    for (const key of [...this.#previous.keys()]) if (!seen.has(key)) this.#previous.delete(key);
    for (const key of [...this.#history.keys()]) if (!seen.has(key)) this.#history.delete(key);
    this.#state = {
      ...this.#state,
      schemaVersion: report.schemaVersion,
      head: report.head,
      entries,
      deadLetters: { total, bySource: [...bySource.values()].sort((a, b) => (a.source < b.source ? -1 : a.source > b.source ? 1 : 0)) },
    };
  }

  /**
   * The views' tables and row counts. A count that fails (a table dropped by a swap between reading
   * the view's row and counting) keeps that view's last counts and is tried again next sample: it
   * must not throw away the status just read, nor leave the state a sample behind.
   */
  async #countViewRows(entries: readonly StatusEntry[], errors: string[]): Promise<void> {
    const views = entries.filter((entry) => entry.kind === 'view' && !entry.superseded).map((entry) => entry.name);
    const results = await Promise.allSettled(views.map((name) => this.#db.admin.viewTables(name)));
    const counted = new Map<string, ViewTable[]>();
    let failed = false;
    results.forEach((result, index) => {
      const name = views[index] as string;
      if (result.status === 'fulfilled') {
        counted.set(name, result.value.map(({ table, rows, capped }) => ({ table, rows, capped })));
        return;
      }
      failed = true;
      errors.push(`counting the rows of view "${name}": ${messageOf(result.reason)}`);
      const last = this.#viewTables.get(name);
      if (last !== undefined) counted.set(name, last);
    });
    this.#viewTables = counted;
    this.#viewTablesDue = failed;
  }

  /** Events/s through a checkpoint since the last sample (0 the first time, and after a reset backwards). */
  #rate(key: string, position: number | null, at: number, seen: Set<string>): number {
    seen.add(key);
    if (position === null) {
      this.#previous.delete(key);
      return 0;
    }
    const previous = this.#previous.get(key);
    const moved = previous !== undefined && position !== previous.position;
    this.#previous.set(key, { position, at, movedAt: moved ? at : previous?.movedAt });
    if (previous === undefined || at <= previous.at) return 0;
    return Math.max(0, (position - previous.position) / ((at - previous.at) / 1000));
  }

  /**
   * Since the last event handled: the nodes' status rows say it, but only as of their last heartbeat
   * (every few seconds), so a runner handling events all the time would look seconds behind; the
   * checkpoint moving between two samples says it too, fresher. The younger of the two.
   */
  #lastHandledAgeMs(key: string, entry: StatusEntry, at: number): number | null {
    const fromRows = lastHandledAgeMs(entry.nodes);
    const lanes = entry.partitions === null ? [key] : entry.partitions.entries.map((lane) => `${key}\u0000${lane.name}`);
    const moves = lanes.flatMap((lane) => {
      const movedAt = this.#previous.get(lane)?.movedAt;
      return movedAt === undefined ? [] : [Math.round(at - movedAt)];
    });
    const candidates = [...(fromRows === null ? [] : [fromRows]), ...moves];
    return candidates.length === 0 ? null : Math.min(...candidates);
  }

  #extend(entry: StatusEntry, at: number, seen: Set<string>): DashboardEntry {
    const key = `${entry.name}\u0000${entry.partitions?.count ?? ''}\u0000${entry.superseded ? 'old' : ''}`;
    // Each partition's checkpoint passes every event of the log (the others' too), so their rates are
    // not summed: a runner's rate is its own checkpoint's (a partitioned one's: its slowest partition's,
    // what its lag counts from), partitioned or not.
    const partitions: DashboardEntry['partitions'] =
      entry.partitions === null
        ? null
        : { ...entry.partitions, entries: entry.partitions.entries.map((lane) => ({ ...lane, rate: this.#rate(`${key}\u0000${lane.name}`, lane.position, at, seen) })) };
    const rate = Math.round(this.#rate(key, entry.position, at, seen) * 100) / 100;
    const history = [...(this.#history.get(key) ?? []), rate].slice(-this.#options.historySamples);
    this.#history.set(key, history);
    return {
      ...entry,
      partitions,
      rate,
      history,
      lastHandledAgeMs: this.#lastHandledAgeMs(key, entry, at),
      work: summedWork(entry.nodes),
      viewTables: entry.kind === 'view' ? (this.#viewTables.get(entry.name) ?? null) : null,
    };
  }
}
