// What the routes work with: the database, the sampler's state, the log tail, the live connections,
// the action log and the rebuilds of one running dashboard.
import type { CliDatabase } from '../database.js';
import type { Logger } from '../../core/logger.js';
import type { ActionLog, Rebuilds } from './actions.js';
import type { Sampler } from './sampler.js';
import type { LiveHub } from './sse.js';
import type { LogTail } from './tail.js';
import type { DashboardState } from './types.js';

export interface DashboardContext {
  db: CliDatabase;
  logger: Logger;
  sampler: Sampler;
  tail: LogTail;
  hub: LiveHub;
  log: ActionLog;
  rebuilds: Rebuilds;
  /** The whole state, as /api/state and the SSE `state` event give it. */
  state(): DashboardState;
  /** An error text with the database password (if any) replaced by ***. */
  scrub(text: string): string;
}
