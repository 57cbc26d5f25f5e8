import { describe } from 'node:test';
import type { PersonalDataConformanceHarness } from './personal/context.js';
import { personalTest } from './personal/context.js';
import { evolutionTests } from './personal/evolution.js';
import { forgetTests } from './personal/forget.js';
import { raceTests } from './personal/races.js';
import { readTests } from './personal/reads.js';

export type { PersonalDataConformanceHarness, PersonalDataStores } from './personal/context.js';

/**
 * Registers the personal data conformance tests (node:test `describe`/`it`) for one adapter's event
 * store and key store together: personal fields stored as envelopes (raw reads never hold the
 * plaintext), opened by typed reads; `forget` turning them into the redaction marker everywhere (old
 * names, split types, batched reads) while every other field reads as before; appends of a forgotten
 * subject's personal data refused until `allowNewKey`; forget racing appends. The suite defines its own
 * event types, so the harness builds a store for the registry it is given. Every adapter in eskit runs it:
 *
 * ```ts
 * personalDataConformance({
 *   name: 'my-adapter',
 *   create: async (registry) => {
 *     const db = await freshDatabase();
 *     const backend = myBackend({ db, registry });
 *     return { store: backend.store, close: async () => { await backend.close(); await db.drop(); } };
 *   },
 *   // Optional: a second store on the same database (another process), and a raw write of event data.
 *   openAnother: async (store, registry) => { ... },
 *   tamper: (store, position, data) => db.query('UPDATE events SET data = $1 WHERE position = $2', [data, position]),
 * });
 * ```
 */
export function personalDataConformance(harness: PersonalDataConformanceHarness): void {
  const test = personalTest(harness);
  describe(`Personal data conformance: ${harness.name}`, () => {
    readTests(test);
    forgetTests(test);
    evolutionTests(test);
    raceTests(test, harness);
  });
}
