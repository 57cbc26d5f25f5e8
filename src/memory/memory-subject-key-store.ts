import { randomUUID } from 'node:crypto';
import { newDataKey } from '../core/personal/cipher.js';
import { SubjectForgottenError } from '../core/personal/errors.js';
import { checkSubject } from '../core/personal/personal-data.js';
import type { ForgetResult, SubjectKey, SubjectKeyStore } from '../core/personal/types.js';

interface KeyRow {
  subject: string;
  /** null once destroyed: the row (the fence) stays. */
  key: Uint8Array | null;
}

/**
 * Subjects' keys in this process's memory (the memory backend's): gone with the process, as its
 * events are. Every call runs synchronously once started, so forget and keyFor never interleave.
 */
export class MemorySubjectKeyStore implements SubjectKeyStore {
  readonly #byKid = new Map<string, KeyRow>();
  /** Each subject's key ids, oldest first; the last is live unless the subject was forgotten since. */
  readonly #bySubject = new Map<string, { kids: string[]; forgotten: boolean }>();

  async keyFor(subject: string): Promise<SubjectKey> {
    checkSubject(subject);
    const entry = this.#bySubject.get(subject);
    if (entry?.forgotten) throw new SubjectForgottenError(subject);
    const live = entry?.kids[entry.kids.length - 1];
    if (live !== undefined) return { kid: live, key: new Uint8Array((this.#byKid.get(live) as KeyRow).key as Uint8Array) };
    return this.#create(subject);
  }

  async keysById(kids: readonly string[]): Promise<Map<string, Uint8Array | null>> {
    const found = new Map<string, Uint8Array | null>();
    for (const kid of kids) {
      const row = this.#byKid.get(kid);
      // Copies: the store zeroes its own when the subject is forgotten, under whoever still holds them.
      if (row !== undefined) found.set(kid, row.key === null ? null : new Uint8Array(row.key));
    }
    return found;
  }

  async forget(subject: string): Promise<ForgetResult> {
    checkSubject(subject);
    const entry = this.#bySubject.get(subject);
    if (entry === undefined) {
      // Never had a key: the fence alone, so a later keyFor cannot make one.
      this.#bySubject.set(subject, { kids: [], forgotten: true });
      return { subject, keysDestroyed: 0, alreadyForgotten: false };
    }
    const alreadyForgotten = entry.forgotten;
    entry.forgotten = true;
    let keysDestroyed = 0;
    for (const kid of entry.kids) {
      const row = this.#byKid.get(kid) as KeyRow;
      if (row.key === null) continue;
      row.key.fill(0);
      row.key = null;
      keysDestroyed += 1;
    }
    return { subject, keysDestroyed, alreadyForgotten };
  }

  async allowNewKey(subject: string): Promise<SubjectKey> {
    checkSubject(subject);
    const entry = this.#bySubject.get(subject);
    if (entry !== undefined && !entry.forgotten) return this.keyFor(subject);
    if (entry !== undefined) entry.forgotten = false;
    return this.#create(subject);
  }

  async isForgotten(subject: string): Promise<boolean> {
    checkSubject(subject);
    return this.#bySubject.get(subject)?.forgotten === true;
  }

  #create(subject: string): SubjectKey {
    const kid = randomUUID();
    const key = newDataKey();
    this.#byKid.set(kid, { subject, key });
    const entry = this.#bySubject.get(subject);
    if (entry === undefined) this.#bySubject.set(subject, { kids: [kid], forgotten: false });
    else entry.kids.push(kid);
    return { kid, key: new Uint8Array(key) };
  }
}
