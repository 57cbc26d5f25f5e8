// Dead letters copy what a handler or automation had in hand: the to-do item's payload and the
// errors thrown (which can quote the data). For an event with personal data those copies are sealed
// with its subjects' keys before they are stored, so `forget` erases them with the event's fields.
import type { FencedWriteOptions } from '../checkpoint.js';
import type { DeadLetter, DeadLetterQuery, DeadLetterSelector, DeadLetterStore, FailedAttempt, NewDeadLetter } from '../dead-letter.js';
import type { EventStore } from '../store.js';
import { isSealedValue } from './cipher.js';
import type { SealedValue } from './cipher.js';
import { envelopeKids } from './fields.js';
import { personalDataOf, personalKidsOf } from './personal-data.js';
import { REDACTED } from './types.js';

/** The key ids of the event a letter was made from, as the runner had it (see `letterFrom`). */
const LETTER_KIDS = new WeakMap<object, readonly string[]>();

/**
 * Marks a letter with the keys that opened its event's fields (none: no plaintext in it), so that it
 * is sealed with them even when the event has left the log by the time the letter is stored
 * (archived, deleted or truncated while the handler was retried).
 */
export function letterFrom<L extends NewDeadLetter>(letter: L, event: object): L {
  LETTER_KIDS.set(letter, personalKidsOf(event) ?? []);
  return letter;
}

/** How a sealed error text is stored: this prefix, then the sealed value as JSON. */
const SEALED_ERROR = '$sealed:';

/** True for a dead letter's error text stored sealed (see SealedDeadLetterStore). */
export function isSealedErrorText(text: string): boolean {
  return text.startsWith(SEALED_ERROR);
}
/** What an error reads as once a subject of its event was forgotten. */
export const ERASED_ERROR = '[erased: a subject of this letter\'s event was forgotten]';

/**
 * A dead-letter store whose letters about events with personal data are sealed in the wrapped store
 * (payload and error texts) and opened on the way out; once a subject is forgotten, the payload reads
 * as the redaction marker and the errors as `ERASED_ERROR`. Letters of other events pass through.
 */
export class SealedDeadLetterStore implements DeadLetterStore {
  constructor(
    readonly inner: DeadLetterStore,
    readonly store: EventStore,
  ) {}

  async add(letter: NewDeadLetter, options?: FencedWriteOptions): Promise<DeadLetter> {
    const kids = LETTER_KIDS.get(letter) ?? (await this.#eventKids(letter.eventPosition));
    const stored = await this.inner.add(await this.#seal(letter, kids), options);
    return this.#open(stored);
  }

  async list(query?: DeadLetterQuery): Promise<DeadLetter[]> {
    return Promise.all((await this.inner.list(query)).map((letter) => this.#open(letter)));
  }

  count(query?: Omit<DeadLetterQuery, 'limit' | 'afterId'>): Promise<number> {
    return this.inner.count(query);
  }

  async get(id: string): Promise<DeadLetter | undefined> {
    const letter = await this.inner.get(id);
    return letter === undefined ? undefined : this.#open(letter);
  }

  redrive(selector: DeadLetterSelector): Promise<number> {
    return this.inner.redrive(selector);
  }

  async settleRedrive(id: string, outcome: { ok: true } | { ok: false; attempts: FailedAttempt[] }, options?: FencedWriteOptions): Promise<void> {
    if (outcome.ok || personalDataOf(this.store) === undefined) return this.inner.settleRedrive(id, outcome, options);
    const stored = await this.inner.get(id);
    const kids = stored === undefined ? [] : (sealedKids(stored) ?? (await this.#eventKids(stored.eventPosition)));
    const attempts = await this.#sealAttempts(outcome.attempts, kids, stored?.eventId ?? id);
    return this.inner.settleRedrive(id, { ok: false, attempts }, options);
  }

  discard(selector: DeadLetterSelector): Promise<number> {
    return this.inner.discard(selector);
  }

  async #seal(letter: NewDeadLetter, kids: readonly string[]): Promise<NewDeadLetter> {
    const personal = personalDataOf(this.store);
    if (personal === undefined || kids.length === 0) return letter;
    const context = letterContext(letter.eventId);
    // Forgotten already: nothing of the event's personal data may be kept, so nothing is.
    const payload = (await personal.seal(letter.payload, kids, context)) ?? null;
    return { ...letter, payload, attempts: await this.#sealAttempts(letter.attempts, kids, letter.eventId) };
  }

  async #sealAttempts(attempts: readonly FailedAttempt[], kids: readonly string[], eventId: string): Promise<FailedAttempt[]> {
    const personal = personalDataOf(this.store);
    if (personal === undefined || kids.length === 0) return [...attempts];
    return Promise.all(
      attempts.map(async ({ at, error }) => {
        const sealed = await personal.seal(error, kids, letterContext(eventId));
        return { at, error: sealed === undefined ? ERASED_ERROR : SEALED_ERROR + JSON.stringify(sealed) };
      }),
    );
  }

  async #open(letter: DeadLetter): Promise<DeadLetter> {
    const personal = personalDataOf(this.store);
    if (personal === undefined || sealedKids(letter) === undefined) return letter;
    const context = letterContext(letter.eventId);
    let payload: unknown = letter.payload;
    if (isSealedValue(payload)) {
      const opened = await personal.open(payload, context);
      payload = opened.erased === true ? REDACTED : opened.value;
    }
    const attempts = await Promise.all(
      letter.attempts.map(async ({ at, error }) => {
        const sealed = sealedError(error);
        if (sealed === undefined) return { at, error };
        const opened = await personal.open(sealed, context);
        return { at, error: opened.erased === true ? ERASED_ERROR : String(opened.value) };
      }),
    );
    return { ...letter, payload, attempts };
  }

  /** The key ids of the event's personal fields, read as stored (undefined position or a gone event: none). */
  async #eventKids(position: number): Promise<string[]> {
    if (personalDataOf(this.store) === undefined) return [];
    for await (const event of this.store.readAll({ after: position - 1, limit: 1, raw: true })) {
      return event.position === position ? [...envelopeKids(event.data, new Set())] : [];
    }
    return [];
  }
}

function letterContext(eventId: string): string {
  return `dead-letter:${eventId}`;
}

function sealedError(error: string): SealedValue | undefined {
  if (!error.startsWith(SEALED_ERROR)) return undefined;
  try {
    const value: unknown = JSON.parse(error.slice(SEALED_ERROR.length));
    return isSealedValue(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

/** The key ids a stored letter was sealed with (undefined: it was not sealed). */
function sealedKids(letter: NewDeadLetter): readonly string[] | undefined {
  if (isSealedValue(letter.payload)) return letter.payload.kids;
  for (const { error } of letter.attempts) {
    const sealed = sealedError(error);
    if (sealed !== undefined) return sealed.kids;
  }
  return undefined;
}
