import { InvalidArgumentError } from './errors.js';

/**
 * What each running subscription, automation and view tells other processes about itself: a row per
 * runner and node, rewritten on every change of state and on a heartbeat. Some of it lives nowhere
 * else: a standby that was denied its lock does not show in pg_locks, and an automation's pending
 * and retrying items are only in its memory.
 */
export type RunnerKind = 'subscription' | 'automation' | 'view';

/** 'running' while started (leading or standing by), 'stopping' while it drains, then 'stopped' or 'failed'. */
export type RunnerState = 'running' | 'stopping' | 'stopped' | 'failed';

/**
 * - 'leader': holds the lock and processes.
 * - 'unelected': processes without leader election (every node that runs it processes it).
 * - 'standby': asking for the lock.
 * - 'denied-standby': waiting for the lock, which another node holds. Worth seeing: a node that stands
 *   by for good looks like a healthy idle one otherwise.
 * - 'none': processes nothing (stopped or failed).
 */
export type RunnerRole = 'leader' | 'unelected' | 'standby' | 'denied-standby' | 'none';

export const RUNNER_KINDS: readonly RunnerKind[] = ['subscription', 'automation', 'view'];
export const RUNNER_STATES: readonly RunnerState[] = ['running', 'stopping', 'stopped', 'failed'];
export const RUNNER_ROLES: readonly RunnerRole[] = ['leader', 'unelected', 'standby', 'denied-standby', 'none'];

/** An automation's to-do list on this node (kept in memory only). */
export interface RunnerWork {
  /** Items triggered and not finished. */
  pending: number;
  /** Items executing now. */
  running: number;
  /** Attempts past their timeout that have not settled. */
  hung: number;
  /** Items waiting for their next attempt after a failure. */
  retrying: number;
  /** Finished items not yet durable. */
  unrecorded: number;
  /** How long the oldest pending item has waited, in ms; undefined when none is pending. */
  oldestPendingMs: number | undefined;
}

/** What a runner publishes. Times are ages in ms measured on the runner; the store turns them into the database's time. */
export interface RunnerStatusUpdate {
  name: string;
  kind: RunnerKind;
  /** Which process: one row per (name, nodeId). */
  nodeId: string;
  state: RunnerState;
  role: RunnerRole;
  fencingToken: number | undefined;
  /** The checkpoint this node last saved or claimed. */
  position: number | undefined;
  /** Events handled by this node since it started. */
  handled: number;
  /** The last event this node handled, and how long ago (ms, at the time of this write). */
  lastEvent: { position: number; ageMs: number } | undefined;
  /** Automations only. */
  work: RunnerWork | undefined;
  /** The error that failed it, or the last one it logged. */
  lastError: string | undefined;
  /**
   * How often the runner writes its row when nothing changes, in ms. A row that is not rewritten
   * within STALE_HEARTBEATS of these (by the database's clock) is stale: the process froze or died.
   */
  heartbeatMs: number;
}

/** A row as listed: times by the database's clock. */
export interface RunnerStatusRow extends Omit<RunnerStatusUpdate, 'lastEvent'> {
  lastEvent: { position: number; at: Date } | undefined;
  /** When the row was last written, by the database's clock. */
  heartbeatAt: Date;
  /** How long ago that was, by the database's clock when listed (never the reader's clock). */
  heartbeatAgeMs: number;
  /**
   * No heartbeat within STALE_HEARTBEATS × heartbeatMs while it claims to run: the process froze,
   * died or lost the database. Never true for a stopped or failed row.
   */
  stale: boolean;
}

/** Heartbeats a running row may miss before it is stale. */
export const STALE_HEARTBEATS = 3;

/**
 * Where runners publish their status rows, in the same database as the checkpoints. Every backend has
 * one (`backend.admin.runners`).
 */
export interface RunnerStatusStore {
  /** Writes the row of (name, nodeId), replacing the last one; the heartbeat is the database's clock now. */
  publish(update: RunnerStatusUpdate): Promise<void>;
  /** Every row, ordered by name, then node id. */
  list(): Promise<RunnerStatusRow[]>;
  /** Removes rows not written for `olderThanMs` (by the database's clock); returns how many. */
  prune(olderThanMs: number): Promise<number>;
}

/** Longest lastError kept: a status row is a summary, the logs have the rest. */
export const MAX_STATUS_ERROR_LENGTH = 2000;

function assertCount(what: string, value: unknown, optional = false): void {
  if (optional && value === undefined) return;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new InvalidArgumentError(`runner status: ${what} must be a non-negative integer${optional ? ' or undefined' : ''}, got ${String(value)}`);
  }
}

// Text some databases cannot hold: NUL, and lone surrogates.
// eslint-disable-next-line no-control-regex -- NUL is exactly what this looks for
const UNSTORABLE = /\u0000|\p{Cs}/u;
const UNSTORABLE_ALL = new RegExp(UNSTORABLE.source, 'gu');

function assertText(what: string, value: unknown): asserts value is string {
  if (typeof value !== 'string' || value.length === 0) throw new InvalidArgumentError(`runner status: ${what} must be a non-empty string`);
  if (UNSTORABLE.test(value)) throw new InvalidArgumentError(`runner status: ${what} cannot contain NUL or a lone surrogate`);
}

function assertOneOf<T extends string>(what: string, value: unknown, allowed: readonly T[]): void {
  if (!allowed.includes(value as T)) throw new InvalidArgumentError(`runner status: ${what} must be one of ${allowed.join(', ')}, got ${String(value)}`);
}

/** Checks an update (every store does, so that all refuse the same) and returns it with ages rounded and the error cut. */
export function checkRunnerStatus(update: RunnerStatusUpdate): RunnerStatusUpdate {
  if (typeof update !== 'object' || update === null) throw new InvalidArgumentError('runner status: expected an object');
  assertText('name', update.name);
  assertText('nodeId', update.nodeId);
  assertOneOf('kind', update.kind, RUNNER_KINDS);
  assertOneOf('state', update.state, RUNNER_STATES);
  assertOneOf('role', update.role, RUNNER_ROLES);
  assertCount('fencingToken', update.fencingToken, true);
  assertCount('position', update.position, true);
  assertCount('handled', update.handled);
  if (typeof update.heartbeatMs !== 'number' || !Number.isSafeInteger(update.heartbeatMs) || update.heartbeatMs < 1) {
    throw new InvalidArgumentError(`runner status: heartbeatMs must be a positive integer, got ${String(update.heartbeatMs)}`);
  }
  let lastEvent: RunnerStatusUpdate['lastEvent'];
  if (update.lastEvent !== undefined) {
    assertCount('lastEvent.position', update.lastEvent.position);
    lastEvent = { position: update.lastEvent.position, ageMs: age('lastEvent.ageMs', update.lastEvent.ageMs) };
  }
  let work: RunnerWork | undefined;
  if (update.work !== undefined) {
    const { pending, running, hung, retrying, unrecorded, oldestPendingMs } = update.work;
    for (const [what, value] of Object.entries({ pending, running, hung, retrying, unrecorded })) assertCount(`work.${what}`, value);
    work = { pending, running, hung, retrying, unrecorded, oldestPendingMs: oldestPendingMs === undefined ? undefined : age('work.oldestPendingMs', oldestPendingMs) };
  }
  if (update.lastError !== undefined && typeof update.lastError !== 'string') throw new InvalidArgumentError('runner status: lastError must be a string or undefined');
  // An error message is free text: what no database can hold is replaced rather than refused.
  const lastError = update.lastError === undefined ? undefined : update.lastError.slice(0, MAX_STATUS_ERROR_LENGTH).replace(UNSTORABLE_ALL, '\ufffd');
  return { ...update, lastEvent, work, lastError };
}

/** A duration measured on the runner (performance.now() differences are fractional). */
function age(what: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) throw new InvalidArgumentError(`runner status: ${what} must be a non-negative number of ms`);
  return Math.round(value);
}

/** Whether a row that was written `heartbeatAgeMs` ago is stale (see RunnerStatusRow.stale). */
export function isStale(state: RunnerState, heartbeatMs: number, heartbeatAgeMs: number): boolean {
  return (state === 'running' || state === 'stopping') && heartbeatAgeMs > STALE_HEARTBEATS * heartbeatMs;
}

/** Checks prune's argument. */
export function checkPruneAge(olderThanMs: unknown): number {
  if (typeof olderThanMs !== 'number' || !Number.isSafeInteger(olderThanMs) || olderThanMs < 0) {
    throw new InvalidArgumentError(`prune: olderThanMs must be a non-negative integer, got ${String(olderThanMs)}`);
  }
  return olderThanMs;
}
