// An error thrown by your code on an event with personal data may quote that data ("cannot mail
// ann@example.com"). eskit writes such errors to logs, spans and runner status, none of which forget
// can reach: so there the message is withheld, and only the dead letter keeps it, sealed with the
// subject's keys.
import { ErrorCode } from '../error-codes.js';
import { personalKidsOf } from './personal-data.js';

const ORIGINAL = new WeakMap<object, unknown>();

/** Stands in for an error thrown on an event with personal data, in every place but the dead letter. */
export class PersonalDataWithheldError extends Error {
  /** The original's code, when it had one (so `isEskitError(error, ErrorCode.PermanentFailure)` still holds). */
  readonly code: string | undefined;
  /** `on`: what it was thrown on, e.g. "the event at position 7" (whose personal data it may quote). */
  constructor(original: unknown, on: string, whereKept = 'The dead letter keeps it, sealed with the subject\'s keys (eskit dlq show).') {
    const name = original instanceof Error ? original.name : typeof original;
    super(
      `${name} thrown on ${on}, which holds personal data: its message is withheld from logs, spans and ` +
        `status, where a later forget could not erase it. ${whereKept}`,
    );
    this.name = 'PersonalDataWithheldError';
    const code = typeof original === 'object' && original !== null ? (original as { code?: unknown }).code : undefined;
    this.code = typeof code === 'string' ? code : undefined;
  }
}

/**
 * `error` as logs, spans and status may show it: itself, or (when one of `events` holds personal data)
 * a PersonalDataWithheldError. eskit's fencing and timeout errors pass as they are: they quote no data.
 */
export function withheldIfPersonal(error: unknown, events: readonly object[], position: number): unknown {
  if (!events.some((event) => personalKidsOf(event) !== undefined)) return error;
  return withheld(error, `the event at position ${position}`);
}

/** `error` withheld (see withheldIfPersonal), thrown on `on`; `whereKept` tells where the original went, if anywhere. */
export function withheld(error: unknown, on: string, whereKept?: string): unknown {
  const code = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
  if (code === ErrorCode.Fenced || code === ErrorCode.Timeout) return error;
  const stand = new PersonalDataWithheldError(error, on, whereKept);
  ORIGINAL.set(stand, error);
  return stand;
}

/** What was thrown, for the dead letter (which seals it): the original of a withheld error. */
export function originalError(error: unknown): unknown {
  return typeof error === 'object' && error !== null && ORIGINAL.has(error) ? ORIGINAL.get(error) : error;
}

/** Errors that may quote personal data but go back to the caller as they are (see markPersonalError). */
const PERSONAL = new WeakSet<object>();

/**
 * Marks an error the caller gets as thrown (it is about their own input or state) that may quote
 * personal data: a `validate` refusing a personal value on append, a `decide` failing on a state
 * folded from personal fields. eskit's spans record it withheld (see `forSpans`).
 */
export function markPersonalError(error: unknown): void {
  if (typeof error === 'object' && error !== null) PERSONAL.add(error);
}

/** What a span may record of `error`: itself, or a withheld stand-in when it was marked personal. */
export function forSpans(error: unknown): unknown {
  if (typeof error !== 'object' || error === null || !PERSONAL.has(error)) return error;
  return withheld(error, 'personal data', 'The caller got the original.');
}
