// What the rest of eskit and its users see of personal data: the redaction marker a forgotten field
// reads as, the registry's definition of a type's personal fields, and the key store contract.
import type { Metadata } from '../event.js';

/**
 * What a personal field reads as once its subject was forgotten (its key destroyed): the value is gone
 * for good, and this marker says so. The event's other fields read as before.
 */
export interface Redacted {
  readonly $redacted: true;
}

/**
 * A personal field's type: the value as appended, or `Redacted` once its subject was forgotten. Declare
 * personal fields with it, so that deciders and views must handle the redacted case:
 * `{ customerId: string; email: Personal<string> }`. Appends take the plain value.
 */
export type Personal<T> = T | Redacted;

/** True for a personal field whose subject was forgotten (see `Personal`). */
export function isRedacted(value: unknown): value is Redacted {
  return typeof value === 'object' && value !== null && (value as { $redacted?: unknown }).$redacted === true;
}

/** The one marker object (frozen, so no reader can change what another reads). */
export const REDACTED: Redacted = Object.freeze({ $redacted: true as const });

/**
 * Which fields of an event type are personal, and whose: `{ subject: (data) => data.customerId,
 * fields: ['email', 'address'] }`. Each field is encrypted on append with the subject's key, so that
 * `forget(subject)` erases it by destroying the key.
 */
export interface PersonalDataDefinition<D> {
  /**
   * The data subject (the person) the fields belong to: a stable identifier, never personal data
   * itself (it is stored in the clear, as stream ids are). Must return a non-empty string.
   */
  subject: (data: D, metadata: Metadata) => string;
  /**
   * Paths of the personal fields in the data: top-level names (`'email'`) or dotted paths into nested
   * objects (`'address.street'`). A field that is absent, undefined or null is left as it is; any other
   * JSON value (a string, an object, an array) is encrypted whole.
   */
  fields: readonly PersonalField<D>[];
}

/**
 * The paths a personal field can have in data of type `D`: its keys, and dotted paths into nested
 * objects (not into arrays), three levels deep. So a typo (`'emial'`) does not compile; for untyped
 * data (`unknown`) any string.
 */
export type PersonalField<D> = unknown extends D ? string : FieldPath<D, []>;

type Unwrapped<T> = Exclude<NonNullable<T>, Redacted>;
type FieldPath<D, Depth extends unknown[]> = Depth['length'] extends 3
  ? never
  : Unwrapped<D> extends infer O
    ? O extends readonly unknown[]
      ? never
      : O extends object
        ? { [K in keyof O & string]: K | (Unwrapped<O[K]> extends readonly unknown[] ? never : Unwrapped<O[K]> extends object ? `${K}.${FieldPath<O[K], [...Depth, 0]>}` : never) }[keyof O & string]
        : never
    : never;

/** A subject's data key: 32 bytes for AES-256-GCM, and its id (written into every field it encrypts). */
export interface SubjectKey {
  kid: string;
  key: Uint8Array;
}

/** What `forget` did. */
export interface ForgetResult {
  subject: string;
  /** Keys destroyed by this call (0 when the subject had none, or was forgotten before). */
  keysDestroyed: number;
  /** The subject was forgotten before this call (and had no key allowed since). */
  alreadyForgotten: boolean;
}

/** What `store.forget` did: the key store's part, and the position of the `$subject.forgotten` it appended. */
export interface ForgetReport extends ForgetResult {
  position: number;
}

/**
 * Where subjects' keys live: each adapter has one (a table next to the events), or plug in your own
 * (a KMS). The rules every implementation keeps (`subjectKeyConformance` in eskit/testing checks them):
 * - a subject has at most one live key; `keyFor` creates it on first use;
 * - `forget` records the erasure (a fence that outlives the key) before, or atomically with,
 *   destroying every key of the subject; a destroyed key never comes back and never looks like one
 *   that was never created;
 * - after `forget`, `keyFor` fails with `SubjectForgottenError` until `allowNewKey` makes a new key
 *   (data written under the old keys stays unreadable).
 */
export interface SubjectKeyStore {
  /** The subject's live key, created if the subject never had one. */
  keyFor(subject: string): Promise<SubjectKey>;
  /**
   * The keys with these ids: the key, or `null` for a destroyed one. An id the store never had is left
   * out of the map (a reader then fails loudly: a lost key must not read as a forgotten subject).
   */
  keysById(kids: readonly string[]): Promise<Map<string, Uint8Array | null>>;
  /** Records the erasure, then destroys every key of the subject. Idempotent. */
  forget(subject: string): Promise<ForgetResult>;
  /** Lets a forgotten subject have personal data again, under a new key; returns it (or the live one). */
  allowNewKey(subject: string): Promise<SubjectKey>;
  /** True when the subject was forgotten and has no live key. */
  isForgotten(subject: string): Promise<boolean>;
}
