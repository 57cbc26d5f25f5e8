// How the CLI prints personal data it cannot or must not open. It reads events raw (no registry, no
// key lookups), so a personal field is the envelope an append stored: printing it would only show
// base64 to an operator and tempt a script to keep it, so "[personal]" says what is there instead. The
// CLI never decrypts events: an operator's terminal, shell history and whatever a pipe feeds are copies
// that `forget` could not reach. Dead letters are opened for the operator (dlq.ts); what is still
// sealed there (keys this store cannot read) prints as "[personal]" too.
import { isSealedErrorText } from '../core/personal/sealed-dead-letters.js';
import { isFieldEnvelope, isSealedValue } from '../core/personal/cipher.js';

/** What a personal field (or a sealed copy of personal data) prints as. */
export const PERSONAL_PLACEHOLDER = '[personal]';

/**
 * `value` (event data, a payload: parsed JSON) with every field envelope and sealed value replaced by
 * `[personal]`. Returns `value` itself when it holds neither, else a copy (`value` is not changed).
 */
export function printable(value: unknown): unknown {
  if (typeof value !== 'object' || value === null) return value;
  if (isFieldEnvelope(value) || isSealedValue(value)) return PERSONAL_PLACEHOLDER;
  if (Array.isArray(value)) {
    const items = value.map(printable);
    return items.some((item, index) => item !== value[index]) ? items : value;
  }
  let copy: Record<string, unknown> | undefined;
  for (const [name, field] of Object.entries(value as Record<string, unknown>)) {
    const shown = printable(field);
    if (shown !== field) (copy ??= { ...(value as Record<string, unknown>) })[name] = shown;
  }
  return copy ?? value;
}

/** A dead letter's error text, or `[personal]` for one stored sealed (it may quote personal data). */
export function printableError(text: string): string {
  return isSealedErrorText(text) ? PERSONAL_PLACEHOLDER : text;
}

/** A dead letter as the CLI shows it: payload and error texts through `printable`/`printableError`. */
export function printableLetter<L extends { payload: unknown; attempts: ReadonlyArray<{ at: Date; error: string }> }>(letter: L): L {
  return { ...letter, payload: printable(letter.payload), attempts: letter.attempts.map(({ at, error }) => ({ at, error: printableError(error) })) };
}
