// The personal data of one event store: encrypting personal fields on append, opening them on read
// (a page at a time, one key lookup per page), sealing copies of personal data (snapshots, dead
// letters), forgetting subjects, and a small key cache that forgetting empties.
import type { Metadata } from '../event.js';
import { InvalidArgumentError } from '../errors.js';
import { isSealedValue, openValue, sealValue } from './cipher.js';
import type { SealedValue } from './cipher.js';
import { encryptedCopy, envelopeKids, openEnvelopes, subjectsOf } from './fields.js';
import type { CompiledPersonal, Opened } from './fields.js';
import type { ForgetResult, SubjectKey, SubjectKeyStore } from './types.js';

/** The key ids an event's personal fields were encrypted with (for events read or appended here). */
const KIDS = new WeakMap<object, readonly string[]>();

/**
 * The key ids of the personal fields of an event this process read or appended (undefined: it has
 * none). A copy of anything derived from the event must be sealed with them (see `PersonalData.seal`).
 */
export function personalKidsOf(event: object): readonly string[] | undefined {
  return KIDS.get(event);
}

export function markPersonal(event: object, kids: readonly string[]): void {
  if (kids.length > 0) KIDS.set(event, kids);
}

/** A store's personal data (EventStoreBase's), when it has any: for the parts of eskit that copy event data. */
export function personalDataOf(store: object): PersonalData | undefined {
  const personal = (store as { personalData?: unknown }).personalData;
  // By shape, not instanceof: two copies of the package in one process must still see each other's.
  return typeof (personal as PersonalData | undefined)?.seal === 'function' ? (personal as PersonalData) : undefined;
}

export interface PersonalDataOptions {
  keys: SubjectKeyStore;
  /**
   * How long a live key found in the key store is used without asking again (ms). 0 (the default)
   * asks every time: right for a key store in the same process or file. A key store behind a network
   * (PostgreSQL, a KMS) sets it, and evicts on forget (see `evict`).
   */
  cacheMs?: number;
}

interface Cached<T> {
  value: T;
  until: number;
}

const CACHE_LIMIT = 10_000;
/** How an envelope shows in JSON text: a page (or an append) with none costs one substring test per row. */
export const ENVELOPE_MARK = '"$enc"';

export class PersonalData {
  readonly keys: SubjectKeyStore;
  readonly #cacheMs: number;
  readonly #live = new Map<string, Cached<SubjectKey>>();
  readonly #byKid = new Map<string, Cached<Uint8Array | null>>();
  /** Counts evictions: a key fetched across one is not cached. */
  #generation = 0;

  constructor(options: PersonalDataOptions) {
    this.keys = options.keys;
    this.#cacheMs = options.cacheMs ?? 0;
  }

  /**
   * What an append stores as the data of each event: an encrypted copy for an event with personal
   * fields (`definitions[i]` defined), else undefined (the data as it is). Fetches every subject's key
   * first (SubjectForgottenError for a forgotten subject: nothing is written), and the key ids used.
   */
  async encrypt(
    events: ReadonlyArray<{ id: string; type: string; data: unknown; metadata: Metadata }>,
    definitions: ReadonlyArray<readonly CompiledPersonal[] | undefined>,
  ): Promise<Array<{ data: unknown; kids: string[] } | undefined>> {
    const subjects = events.map((event, index) => {
      const own = definitions[index];
      return own === undefined ? undefined : subjectsOf(event.type, own, event.data, event.metadata);
    });
    const keys = new Map<string, SubjectKey>();
    await Promise.all([...new Set(subjects.flatMap((list) => list ?? []))].map(async (subject) => void keys.set(subject, await this.#keyFor(subject))));
    return events.map((event, index) => {
      const own = subjects[index];
      if (own === undefined) return undefined;
      const used = own.map((subject) => keys.get(subject) as SubjectKey);
      return { data: encryptedCopy(event.type, event.data, definitions[index] as readonly CompiledPersonal[], used, event.id), kids: [...new Set(used.map((key) => key.kid))] };
    });
  }

  /**
   * The rows of a page that hold envelopes, opened (data parsed, personal fields decrypted or
   * redacted), with one key lookup for the page. Undefined when no row has one.
   */
  async openPage(rows: ReadonlyArray<{ id: string; data: string; position: number }>): Promise<Map<object, Opened> | undefined> {
    let parsed: Array<{ row: { id: string; data: string; position: number }; data: unknown }> | undefined;
    const kids = new Set<string>();
    for (const row of rows) {
      if (!row.data.includes(ENVELOPE_MARK)) continue;
      let data: unknown;
      try {
        data = JSON.parse(row.data);
      } catch {
        continue; // decodeRow reports it as corrupt, with its position
      }
      envelopeKids(data, kids);
      (parsed ??= []).push({ row, data });
    }
    if (parsed === undefined || kids.size === 0) return undefined;
    const keys = await this.keysById([...kids]);
    const opened = new Map<object, Opened>();
    for (const { row, data } of parsed) {
      try {
        opened.set(row, openEnvelopes(data, keys, row.id, row.position));
      } catch (failure) {
        // Thrown when that row's turn comes: the events before it are delivered first, as for any read failure.
        opened.set(row, { data: undefined, redacted: false, kids: [], failure });
      }
    }
    return opened;
  }

  /** The keys by id (null: destroyed); ids the key store never had are left out. */
  async keysById(kids: readonly string[]): Promise<Map<string, Uint8Array | null>> {
    const found = new Map<string, Uint8Array | null>();
    const missing: string[] = [];
    const now = performance.now();
    for (const kid of kids) {
      const cached = this.#byKid.get(kid);
      if (cached !== undefined && (cached.value === null || cached.until > now)) found.set(kid, cached.value);
      else missing.push(kid);
    }
    if (missing.length === 0) return found;
    const generation = this.#generation;
    const fetched = await this.keys.keysById(missing);
    for (const [kid, key] of fetched) {
      found.set(kid, key);
      // A destroyed key stays destroyed: that answer is kept however long the cache is. A live one
      // only if no forget ran while it was fetched (it may be that forget's key).
      if (key === null || (this.#cacheMs > 0 && generation === this.#generation)) remember(this.#byKid, kid, { value: key, until: now + this.#cacheMs });
    }
    return found;
  }

  /**
   * `value` sealed with the keys `kids` name (undefined kids or none: `value` itself). Sealed, a copy
   * of personal data is erased with the first of its subjects that is forgotten.
   */
  async seal(value: unknown, kids: readonly string[] | undefined, context: string): Promise<unknown> {
    if (kids === undefined || kids.length === 0) return value;
    const keys = await this.keysById(kids);
    const live = new Map<string, Uint8Array>();
    for (const kid of kids) {
      const key = keys.get(kid);
      // Derived from an event whose subject is already forgotten: there is nothing to keep.
      if (key === null || key === undefined) return undefined;
      live.set(kid, key);
    }
    return sealValue(value, live, context);
  }

  /**
   * A value `seal` made, opened: `{ value }`, or `{ erased: true }` when a key it was sealed with is
   * destroyed (or unknown). A value that is not sealed is returned as it is.
   */
  async open(stored: unknown, context: string): Promise<{ value: unknown; erased?: false } | { erased: true }> {
    if (!isSealedValue(stored)) return { value: stored };
    const keys = await this.keysById(stored.kids);
    const live = new Map<string, Uint8Array>();
    for (const kid of stored.kids) {
      const key = keys.get(kid);
      if (key === null || key === undefined) return { erased: true };
      live.set(kid, key);
    }
    return { value: openValue(stored as SealedValue, live, context) };
  }

  /**
   * Forgets the subject in the key store, then empties this cache of every live key: which of them
   * were the subject's is not known here (a key cached by a read has no subject), and forgets are rare.
   */
  async forget(subject: string): Promise<ForgetResult> {
    checkSubject(subject);
    try {
      return await this.keys.forget(subject);
    } finally {
      this.evict();
    }
  }

  async allowNewKey(subject: string): Promise<SubjectKey> {
    checkSubject(subject);
    try {
      return await this.keys.allowNewKey(subject);
    } finally {
      this.evict();
    }
  }

  /**
   * Another process forgot subjects whose keys had these ids (undefined: it cannot tell, or hints may
   * have been missed): drop them from the cache.
   */
  evict(kids?: readonly string[]): void {
    // A fetch that started before this must not cache what it found (see keysById, #keyFor).
    this.#generation += 1;
    if (kids === undefined) {
      this.#live.clear();
      for (const [kid, cached] of this.#byKid) if (cached.value !== null) this.#byKid.delete(kid);
      return;
    }
    const gone = new Set(kids);
    for (const [subject, cached] of this.#live) if (gone.has(cached.value.kid)) this.#live.delete(subject);
    for (const kid of kids) this.#byKid.delete(kid);
  }

  async #keyFor(subject: string): Promise<SubjectKey> {
    const now = performance.now();
    const cached = this.#live.get(subject);
    if (cached !== undefined && cached.until > now) return cached.value;
    const generation = this.#generation;
    const key = await this.keys.keyFor(subject);
    if (this.#cacheMs > 0 && generation === this.#generation) {
      remember(this.#live, subject, { value: key, until: now + this.#cacheMs });
      remember(this.#byKid, key.kid, { value: key.key, until: now + this.#cacheMs });
    }
    return key;
  }
}

function remember<K, V>(cache: Map<K, V>, key: K, value: V): void {
  cache.delete(key);
  cache.set(key, value);
  if (cache.size > CACHE_LIMIT) cache.delete(cache.keys().next().value as K);
}

export function checkSubject(subject: unknown): asserts subject is string {
  if (typeof subject !== 'string' || subject === '') {
    throw new InvalidArgumentError(`a subject is a non-empty string (the person's id), got ${JSON.stringify(subject) ?? String(subject)}`);
  }
}
