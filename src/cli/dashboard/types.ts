// The dashboard's HTTP API types (the contract with the page, assets/dashboard/*.js).
import type { PartitionEntry, PartitionsInfo, StatusEntry } from '../commands/status-report.js';
import type { RebuildableView } from '../config.js';
import type { CliDatabase } from '../database.js';
import type { DeadLetter } from '../../core/dead-letter.js';
import type { Logger } from '../../core/logger.js';
import type { DashboardSettings } from './options.js';

export type { ActionLogEntry, DashboardSettings, RunningDashboard } from './options.js';

export interface DashboardOptions extends DashboardSettings {
  /** The database `eskit dashboard` opened (src/cli/database.ts); the dashboard never closes it. */
  database: CliDatabase;
  /** The views a rebuild button is shown for (a config's views). */
  views?: readonly RebuildableView[];
  logger: Logger;
}

export interface RebuildView {
  view: string;
  state: 'running' | 'done' | 'failed';
  done: number;
  total: number;
  startedAt: string;
  finishedAt: string | null;
  error: string | null;
  result: { events: number; position: number; generation: number } | null;
}

export interface DashboardWork {
  pending: number;
  running: number;
  retrying: number;
  hung: number;
  oldestPendingMs: number | null;
}

export interface ViewTable {
  table: string;
  rows: number;
  capped: boolean;
}

/** A `status` entry plus what the dashboard measures over time. */
export type DashboardEntry = Omit<StatusEntry, 'partitions'> & {
  /** A partitioned runner's partitions, each with its own rate. */
  partitions: (Omit<PartitionsInfo, 'entries'> & { entries: Array<PartitionEntry & { rate: number }> }) | null;
  /**
   * Events/s through its checkpoint over the last interval. A partitioned runner's checkpoint is its
   * slowest partition's (each partition passes every event of the log, so their rates are not summed).
   */
  rate: number;
  /** The last `historySamples` rates, oldest first. */
  history: number[];
  /** Min over live nodes of lastEvent.ageMs. */
  lastHandledAgeMs: number | null;
  /** Summed over live nodes (automations); null when no node reports any. */
  work: DashboardWork | null;
  /** Views only: their tables and row counts, refreshed every 10th sample. */
  viewTables: ViewTable[] | null;
};

export interface DashboardState {
  at: string;
  database: string;
  backend: 'sqlite' | 'postgres';
  schemaVersion: number;
  head: number;
  readOnly: boolean;
  intervalMs: number;
  entries: DashboardEntry[];
  deadLetters: { total: number; bySource: Array<{ source: string; dead: number; redrive: number }> };
  rebuilds: RebuildView[];
  rebuildable: string[];
  actionsLog: number;
  error: string | null;
}

export interface EventView {
  position: number;
  id: string;
  type: string;
  streamId: string;
  streamVersion: number;
  recordedAt: string;
  data: unknown;
  metadata: Record<string, unknown>;
}

/** A dead letter through printableLetter, dates as ISO strings. */
export type LetterView = Omit<DeadLetter, 'createdAt' | 'updatedAt' | 'attempts'> & {
  createdAt: string;
  updatedAt: string;
  attempts: Array<{ at: string; error: string }>;
};
