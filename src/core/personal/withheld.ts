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
  constructor(original: unknown, position: number) {
    const name = original instanceof Error ? original.name : typeof original;
    super(
      `${name} thrown on the event at position ${position}, which holds personal data: its message is withheld from logs, spans and ` +
        'status, where a later forget could not erase it. The dead letter keeps it, sealed with the subject\'s keys (eskit dlq show).',
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
  const code = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
  if (code === ErrorCode.Fenced || code === ErrorCode.Timeout) return error;
  const withheld = new PersonalDataWithheldError(error, position);
  ORIGINAL.set(withheld, error);
  return withheld;
}

/** What was thrown, for the dead letter (which seals it): the original of a withheld error. */
export function originalError(error: unknown): unknown {
  return typeof error === 'object' && error !== null && ORIGINAL.has(error) ? ORIGINAL.get(error) : error;
}
