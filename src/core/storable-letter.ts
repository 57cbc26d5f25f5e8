import type { FencedWriteOptions } from './checkpoint.js';
import type { DeadLetter, DeadLetterStore, NewDeadLetter } from './dead-letter.js';
import { ErrorCode, isEskitError } from './errors.js';

/**
 * Adds a dead letter; when the store refuses its text (a NUL or a lone surrogate, which PostgreSQL
 * cannot hold: ESKIT_SERIALIZATION), adds `storableLetter(letter)` instead. A refusal is permanent, so
 * retrying the same letter would stall whatever waits for it to be stored.
 */
export async function addDeadLetter(store: DeadLetterStore, letter: NewDeadLetter, options?: FencedWriteOptions): Promise<DeadLetter> {
  try {
    return await store.add(letter, options);
  } catch (error) {
    if (!isEskitError(error, ErrorCode.Serialization)) throw error;
    return store.add(storableLetter(letter), options);
  }
}

/**
 * A letter every backend can take: error texts lose NUL and lone surrogates, and a payload that is not
 * JSON, or holds one of them, is replaced by null (the reason is added as an attempt).
 */
export function storableLetter(letter: NewDeadLetter): NewDeadLetter {
  const attempts = letter.attempts.map((a) => ({ at: a.at, error: storableText(a.error) }));
  let json: string | undefined;
  try {
    json = JSON.stringify(letter.payload);
  } catch {
    json = undefined;
  }
  if (json !== undefined && !UNSTORABLE_ESCAPE.test(json)) return { ...letter, attempts };
  return {
    ...letter,
    payload: null,
    attempts: [...attempts, { at: new Date(), error: 'the payload could not be stored in the dead-letter queue; it was replaced by null' }],
  };
}

/** An escaped NUL or lone surrogate in JSON text (not preceded by an escaping backslash). */
const UNSTORABLE_ESCAPE = /(?<!\\)(?:\\\\)*\\u(?:0000|d[89a-f][0-9a-f]{2})/i;

/** Text every backend can store: NUL written as `\0`, lone surrogates as U+FFFD. */
export function storableText(text: string): string {
  return text.replaceAll('\u0000', '\\0').toWellFormed();
}
