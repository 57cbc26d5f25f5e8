import { originalError } from './personal/withheld.js';
import { letterFrom } from './personal/sealed-dead-letters.js';
import type { WriteFence } from './checkpoint.js';
import { FencedError, InvalidArgumentError, SerializationError, describeError } from './errors.js';
import type { DeadLetter, DeadLetterQuery, DeadLetterStage, DeadLetterStatus, FailedAttempt, NewDeadLetter } from './dead-letter.js';
import type { Recorded } from './event.js';

/*
 * Argument checks and encodings shared by every DeadLetterStore / CompletionStore adapter, so that
 * they all accept and reject exactly the same input (the conformance suite checks this).
 */

export const DEAD_LETTER_STAGES: readonly DeadLetterStage[] = ['execute', 'trigger', 'handler'];
export const DEAD_LETTER_STATUSES: readonly DeadLetterStatus[] = ['dead', 'redrive'];
export const DEFAULT_DEAD_LETTER_LIMIT = 100;

/** An attempt as stored: `at` in milliseconds since the epoch. */
export interface StoredAttempt {
  at: number;
  error: string;
}

/** A `NewDeadLetter` that passed the checks: payload as JSON text, attempts as stored. */
export interface CheckedDeadLetter {
  source: string;
  stage: DeadLetterStage;
  key: string;
  payload: string;
  eventId: string;
  eventType: string;
  eventPosition: number;
  streamId: string;
  attempts: StoredAttempt[];
}

export interface CheckedDeadLetterQuery {
  source: string | undefined;
  status: DeadLetterStatus | undefined;
  limit: number;
  afterId: string | undefined;
  newestFirst: boolean;
}

export type CheckedSelector = { id: string; source?: undefined } | { source: string; id?: undefined };

export type CheckedOutcome = { ok: true } | { ok: false; attempts: StoredAttempt[] };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function show(value: unknown): string {
  try {
    return typeof value === 'bigint' ? `${value}n` : (JSON.stringify(value) ?? String(value));
  } catch {
    return String(value);
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function checkSource(source: unknown, what = 'source'): string {
  if (typeof source !== 'string' || source.length === 0) {
    throw new InvalidArgumentError(`${what} must be the non-empty name of an automation or subscription, got ${show(source)}`);
  }
  return source;
}

/** Dead-letter ids are UUIDs; returned lower-cased, as adapters store them. */
export function checkDeadLetterId(id: unknown, what = 'id'): string {
  if (typeof id !== 'string' || !UUID.test(id)) {
    throw new InvalidArgumentError(`${what} must be a dead letter's id (a UUID, as returned by add() or list()), got ${show(id)}`);
  }
  return id.toLowerCase();
}

/** A global position: a non-negative integer (0 = before the first event). */
export function checkPosition(position: unknown, what = 'position'): number {
  if (typeof position !== 'number' || !Number.isSafeInteger(position) || position < 0) {
    throw new InvalidArgumentError(`${what} must be a non-negative integer (a global position), got ${show(position)}`);
  }
  return position;
}

function checkString(value: unknown, what: string): string {
  if (typeof value !== 'string') throw new InvalidArgumentError(`${what} must be a string, got ${show(value)}`);
  return value;
}

export function checkAttempts(attempts: unknown, what = 'attempts'): StoredAttempt[] {
  if (!Array.isArray(attempts)) throw new InvalidArgumentError(`${what} must be an array of { at: Date, error: string }, got ${show(attempts)}`);
  return attempts.map((attempt: unknown, index): StoredAttempt => {
    if (!isRecord(attempt) || !(attempt.at instanceof Date) || Number.isNaN(attempt.at.getTime()) || typeof attempt.error !== 'string') {
      throw new InvalidArgumentError(`${what}[${index}] must be { at: Date (valid), error: string }, got ${show(attempt)}`);
    }
    return { at: attempt.at.getTime(), error: attempt.error };
  });
}

/** Throws `SerializationError` for what JSON cannot represent (undefined included), as events do. */
export function payloadToJson(payload: unknown): string {
  let json: string | undefined;
  try {
    json = JSON.stringify(payload);
  } catch (cause) {
    throw new SerializationError('The dead letter payload', { cause });
  }
  if (json === undefined) throw new SerializationError('The dead letter payload (use null for "no payload")');
  return json;
}

export function checkNewDeadLetter(letter: unknown): CheckedDeadLetter {
  if (!isRecord(letter)) throw new InvalidArgumentError(`A dead letter must be an object (NewDeadLetter), got ${show(letter)}`);
  const stage = letter.stage;
  if (!DEAD_LETTER_STAGES.includes(stage as DeadLetterStage)) {
    throw new InvalidArgumentError(`stage must be one of ${DEAD_LETTER_STAGES.map((s) => `'${s}'`).join(', ')}, got ${show(stage)}`);
  }
  // Checked before the payload is serialised, so a bad field is reported even with a bad payload too.
  const checked = {
    source: checkSource(letter.source),
    stage: stage as DeadLetterStage,
    key: checkString(letter.key, 'key'),
    eventId: checkString(letter.eventId, 'eventId'),
    eventType: checkString(letter.eventType, 'eventType'),
    eventPosition: checkPosition(letter.eventPosition, 'eventPosition'),
    streamId: checkString(letter.streamId, 'streamId'),
    attempts: checkAttempts(letter.attempts),
  };
  return { ...checked, payload: payloadToJson(letter.payload) };
}

export function checkDeadLetterQuery(query: unknown): CheckedDeadLetterQuery {
  if (query === undefined) return { source: undefined, status: undefined, limit: DEFAULT_DEAD_LETTER_LIMIT, afterId: undefined, newestFirst: false };
  if (!isRecord(query)) throw new InvalidArgumentError(`A dead-letter query must be an object, got ${show(query)}`);
  const { source, status, limit, afterId, newestFirst } = query as DeadLetterQuery;
  if (newestFirst !== undefined && typeof newestFirst !== 'boolean') throw new InvalidArgumentError(`newestFirst must be true or false, got ${show(newestFirst)}`);
  if (status !== undefined && !DEAD_LETTER_STATUSES.includes(status)) {
    throw new InvalidArgumentError(`status must be 'dead' or 'redrive', got ${show(status)}`);
  }
  if (limit !== undefined && (typeof limit !== 'number' || !Number.isSafeInteger(limit) || limit < 1)) {
    throw new InvalidArgumentError(`limit must be a positive integer, got ${show(limit)}`);
  }
  return {
    source: source === undefined ? undefined : checkSource(source),
    status,
    limit: limit ?? DEFAULT_DEAD_LETTER_LIMIT,
    afterId: afterId === undefined ? undefined : checkDeadLetterId(afterId, 'afterId'),
    newestFirst: newestFirst ?? false,
  };
}

/** `count`'s filters (a `limit` or `afterId` given anyway is ignored, as the type says). */
export function checkDeadLetterCountQuery(query: unknown): Pick<CheckedDeadLetterQuery, 'source' | 'status'> {
  if (query === undefined) return { source: undefined, status: undefined };
  if (!isRecord(query)) throw new InvalidArgumentError(`A dead-letter query must be an object, got ${show(query)}`);
  const { source, status } = checkDeadLetterQuery({ source: query.source, status: query.status });
  return { source, status };
}

export function checkSelector(selector: unknown): CheckedSelector {
  if (isRecord(selector)) {
    const hasId = selector.id !== undefined;
    const hasSource = selector.source !== undefined;
    if (hasId && !hasSource) return { id: checkDeadLetterId(selector.id) };
    if (hasSource && !hasId) return { source: checkSource(selector.source) };
  }
  throw new InvalidArgumentError(`Select dead letters with exactly one of { id } or { source }, got ${show(selector)}`);
}

export function checkOutcome(outcome: unknown): CheckedOutcome {
  if (isRecord(outcome)) {
    if (outcome.ok === true) return { ok: true };
    if (outcome.ok === false) return { ok: false, attempts: checkAttempts(outcome.attempts, 'outcome.attempts') };
  }
  throw new InvalidArgumentError(`A redrive outcome must be { ok: true } or { ok: false, attempts: FailedAttempt[] }, got ${show(outcome)}`);
}

export function checkCompletedItems(items: unknown): Array<{ position: number; itemId: string }> {
  if (!Array.isArray(items)) throw new InvalidArgumentError(`items must be an array of { position, itemId }, got ${show(items)}`);
  return items.map((item: unknown, index) => {
    if (!isRecord(item)) throw new InvalidArgumentError(`items[${index}] must be { position, itemId }, got ${show(item)}`);
    return { position: checkPosition(item.position, `items[${index}].position`), itemId: checkString(item.itemId, `items[${index}].itemId`) };
  });
}

/**
 * The fence of a leader's write (`FencedWriteOptions`), checked before anything is written; undefined
 * when there is none (the write is unconditional).
 */
export function checkFence(options: unknown): WriteFence | undefined {
  if (options === undefined) return undefined;
  if (!isRecord(options)) {
    throw new InvalidArgumentError(`The options of a fenced write must be an object such as { fence: { checkpoint, fencingToken } }, got ${show(options)}`);
  }
  const fence = options.fence;
  if (fence === undefined) return undefined;
  if (!isRecord(fence)) {
    throw new InvalidArgumentError(
      `fence must be { checkpoint, fencingToken }: the checkpoint the leader claimed and the token of its lease (leave it out for no fence), got ${show(fence)}`,
    );
  }
  const { checkpoint, fencingToken } = fence;
  if (typeof checkpoint !== 'string' || checkpoint.length === 0) {
    throw new InvalidArgumentError(`fence.checkpoint must be the non-empty name of the checkpoint the leader claimed, got ${show(checkpoint)}`);
  }
  if (typeof fencingToken !== 'number' || !Number.isSafeInteger(fencingToken) || fencingToken < 0) {
    throw new InvalidArgumentError(`fence.fencingToken must be a non-negative integer (the fencing token of the leader's lease), got ${String(fencingToken)}`);
  }
  return { checkpoint, fencingToken };
}

/**
 * Throws `FencedError` unless `fence` holds: `current` is the token on its checkpoint row, undefined
 * when there is no row (nobody claimed it, so nobody newer did either).
 */
export function assertFenceHolds(fence: WriteFence, current: number | undefined): void {
  if (current !== undefined && current > fence.fencingToken) throw new FencedError(fence.checkpoint, fence.fencingToken, current);
}

/** How `CompletionStore.completedAfter` names an item. */
export function completionId(position: number, itemId: string): string {
  return `${position}/${itemId}`;
}

/** A stored row, as adapters read it back (JSON columns still text). */
export interface StoredDeadLetterRow {
  id: string;
  source: string;
  stage: string;
  key: string;
  payload: string;
  eventId: string;
  eventType: string;
  eventPosition: number;
  streamId: string;
  /** JSON text: an array of `StoredAttempt`. */
  attempts: string;
  status: string;
  createdAt: number;
  updatedAt: number;
}

function corrupt(id: string, reason: string, cause?: unknown): SerializationError {
  return new SerializationError('A stored dead letter', {
    cause,
    reason: `The stored dead letter ${id} cannot be read: ${reason}. The row was changed outside eskit; repair it or discard the letter.`,
  });
}

/** Attempts as stored (JSON text) back into `FailedAttempt`s, with fresh Dates. */
export function decodeAttempts(json: string, id: string): FailedAttempt[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (cause) {
    throw corrupt(id, 'its attempts are not valid JSON', cause);
  }
  if (!Array.isArray(parsed)) throw corrupt(id, 'its attempts are not a JSON array');
  return parsed.map((attempt: unknown) => {
    if (!isRecord(attempt) || typeof attempt.at !== 'number' || typeof attempt.error !== 'string') {
      throw corrupt(id, 'an attempt is not { at: milliseconds, error: text }');
    }
    return { at: new Date(attempt.at), error: attempt.error };
  });
}

/** A stored row back into the `DeadLetter` a caller gets (its own copy of everything). */
export function decodeDeadLetter(row: StoredDeadLetterRow): DeadLetter {
  let payload: unknown;
  try {
    payload = JSON.parse(row.payload);
  } catch (cause) {
    throw corrupt(row.id, 'its payload is not valid JSON', cause);
  }
  return {
    id: row.id,
    source: row.source,
    stage: row.stage as DeadLetterStage,
    key: row.key,
    payload,
    eventId: row.eventId,
    eventType: row.eventType,
    eventPosition: row.eventPosition,
    streamId: row.streamId,
    attempts: decodeAttempts(row.attempts, row.id),
    status: row.status as DeadLetterStatus,
    createdAt: new Date(row.createdAt),
    updatedAt: new Date(row.updatedAt),
  };
}

/**
 * The letter for an event that failed `attempts` times with `error` (what each attempt threw is not
 * kept separately there, so every attempt records the last error). `item` for an automation's to-do item.
 */
export function deadLetterFor(
  source: string,
  stage: DeadLetterStage,
  event: Recorded,
  attempts: number,
  error: unknown,
  item: { key: string; payload: unknown } = { key: '', payload: null },
): NewDeadLetter {
  const at = new Date();
  // What was thrown, also when logs got it withheld: the letter is sealed when the event holds personal data.
  const text = describeError(originalError(error));
  return letterFrom({
    source,
    stage,
    key: item.key,
    payload: item.payload,
    eventId: event.id,
    eventType: event.type,
    eventPosition: event.position,
    streamId: event.streamId,
    attempts: Array.from({ length: Math.max(1, attempts) }, () => ({ at, error: text })),
  }, event);
}
