import assert from 'node:assert/strict';
import { v7 as uuidv7 } from 'uuid';
import type { CheckpointStore, FencedWriteOptions } from '../../core/checkpoint.js';
import type { DeadLetter, DeadLetterStore, NewDeadLetter } from '../../core/dead-letter.js';
import { isEskitError } from '../../core/errors.js';

/** The stores under test, on fresh, empty storage. */
export interface DeadLetterStores {
  deadLetters: DeadLetterStore;
  /**
   * A checkpoint store on the same storage, whose checkpoints the dead-letter store's fences name: the
   * tests claim a checkpoint with a newer token through it and expect a stale write to be refused.
   */
  checkpoints: CheckpointStore;
  /** Releases what `create` opened (connections, files, schemas). */
  close(): Promise<void>;
}

/** What an adapter hands `deadLetterStoreConformance`. */
export interface DeadLetterConformanceHarness {
  /** Shown in test names, e.g. 'memory', 'sqlite', 'postgres'. */
  name: string;
  /** Fresh, empty stores for one test; called once per test and closed when it ends. */
  create(): Promise<DeadLetterStores>;
  /** Fails a test that runs longer than this (a hung query must fail, not stall CI). Default 60 000. */
  testTimeoutMs?: number;
}

export const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
/** Adapters may take times from the database's clock: allow for a little skew and rounding. */
const CLOCK_SLACK_MS = 1000;

let sequence = 0;

/** A valid letter; `overrides` replace fields (also with invalid values, for the bad-input tests). */
export function letter(overrides: Partial<Record<keyof NewDeadLetter, unknown>> = {}): NewDeadLetter {
  sequence += 1;
  return {
    source: 'mailer',
    stage: 'execute',
    key: `customer-${sequence}`,
    payload: { to: `user${sequence}@example.com`, n: sequence },
    eventId: uuidv7(),
    eventType: 'OrderPlaced',
    eventPosition: sequence,
    streamId: `order-${sequence}`,
    attempts: [{ at: new Date(1_700_000_000_000 + sequence), error: `Error: boom ${sequence}` }],
    ...overrides,
  } as NewDeadLetter;
}

export async function rejectsWith(promise: () => Promise<unknown>, code: string, message?: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isEskitError(error, code), `expected ${code}, got ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`);
    return true;
  }, message);
}

export const ids = (letters: DeadLetter[]): string[] => letters.map((l) => l.id);

export const fence = (checkpoint: string, fencingToken: number): FencedWriteOptions => ({ fence: { checkpoint, fencingToken } });

/** Waits (for the clock, not a guessed time) until a change made now is stamped later than `time`. */
export async function clockPast(time: Date): Promise<void> {
  while (Date.now() <= time.getTime() + 2) await new Promise((resolve) => setTimeout(resolve, 1));
}

export function assertTimeBetween(date: unknown, before: number, after: number, what: string): void {
  assert.ok(date instanceof Date, `${what} is a Date`);
  const time = date.getTime();
  assert.ok(time >= before - CLOCK_SLACK_MS && time <= after + CLOCK_SLACK_MS, `${what} ${date.toISOString()} is the time of the call`);
}

/** Registers one test: fresh stores from the harness, closed when it ends. */
export type DeadLetterTest = (name: string, fn: (stores: DeadLetterStores) => Promise<void>) => void;
