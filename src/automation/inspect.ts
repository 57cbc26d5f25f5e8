// Internal sizes of an automation's to-do list, for tests that prove its memory stays bounded. Not
// exported from the package: what it shows is not a contract.
import type { Period } from './period.js';

const periods = new WeakMap<object, () => Period<unknown> | undefined>();

export function registerInspection(automation: object, period: () => Period<unknown> | undefined): void {
  periods.set(automation, period);
}

/** The automation's face shows its runner's to-do list (an unpartitioned automation has one runner). */
export function shareInspection(face: object, runner: object): void {
  const period = periods.get(runner);
  if (period) periods.set(face, period);
}

export interface AutomationInternals {
  /** Entries of the pending-positions list (pending positions plus finished ones not yet dropped). */
  positions: number;
  /** Keys with a queue. */
  queues: number;
  readyKeys: number;
  pending: number;
  /** Finished items not yet durable. */
  unrecorded: number;
  /** Completion records loaded at takeover. */
  completed: number;
}

export function automationInternals(automation: object): AutomationInternals | undefined {
  const period = periods.get(automation)?.();
  if (!period) return undefined;
  return {
    positions: period.positions.length,
    queues: period.queues.size,
    readyKeys: period.readyKeys.length,
    pending: period.pending,
    unrecorded: period.recorder?.size ?? 0,
    completed: period.completed.size,
  };
}
