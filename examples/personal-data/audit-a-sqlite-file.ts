// An auditor's check on SQLite: write personal data (in the events, encrypted, and in a SQL view, in
// the clear), forget the customer, and search the database file and its -wal byte by byte for the
// plaintext and for the customer's key. Before the forget both are found; after it, neither is.
// Runs on a temporary file and finishes by itself: npx tsx examples/personal-data/audit-a-sqlite-file.ts
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EventRegistry, isRedacted, SqlView, SUBJECT_FORGOTTEN } from '../../src/index.js';
import type { Personal, SubjectForgottenEvent } from '../../src/index.js';
import { sqlite } from '../../src/sqlite/index.js';

type CustomerEvent = { type: 'CustomerRegistered'; data: { customerId: string; email: Personal<string> } };
type ViewEvent = CustomerEvent | SubjectForgottenEvent;

const registry = new EventRegistry<ViewEvent>({
  CustomerRegistered: { personal: { subject: (data) => data.customerId, fields: ['email'] } },
});

const dir = mkdtempSync(join(tmpdir(), 'eskit-audit-'));
const path = join(dir, 'shop.db');
const backend = sqlite<ViewEvent>({ path, registry });

// A view that keeps the address in the clear, keyed by the customer: forget must reach it too.
const contacts = new SqlView({
  backend,
  name: 'contacts',
  types: ['CustomerRegistered', SUBJECT_FORGOTTEN],
  setup: { version: 1, statements: (t) => [`CREATE TABLE ${t('contacts')} (customer_id TEXT PRIMARY KEY, email TEXT NOT NULL)`] },
  evolve: (event, { prepare, table }) => {
    if (event.type === SUBJECT_FORGOTTEN) prepare(`DELETE FROM ${table('contacts')} WHERE customer_id = ?`).run(event.data.subject);
    else if (!isRedacted(event.data.email)) prepare(`INSERT INTO ${table('contacts')} (customer_id, email) VALUES (?, ?)`).run(event.data.customerId, event.data.email);
  },
});

/** Whether `needle` is anywhere in the database file or its -wal (free pages included: the raw bytes). */
function inFiles(needle: Buffer): boolean {
  return [path, `${path}-wal`].some((file) => existsSync(file) && readFileSync(file).includes(needle));
}

try {
  await contacts.start();
  const email = 'ada.lovelace@example.com';
  const { position } = await backend.store.append('customer-c-1', [{ type: 'CustomerRegistered', data: { customerId: 'c-1', email } }]);
  await contacts.waitFor(position);
  // The key the append used (the auditor's copy, to search for it afterwards).
  const { key } = await backend.subjectKeys.keyFor('c-1');
  assert.ok(inFiles(Buffer.from(email)), 'before the forget, the view holds the plaintext');
  assert.ok(inFiles(Buffer.from(key)), 'before the forget, the file holds the key');

  const forgotten = await backend.store.forget('c-1');
  await contacts.waitFor(forgotten.position);
  // The view's DELETE wrote a new page to the WAL: move it into the file and empty the WAL.
  backend.database.pragma('wal_checkpoint(TRUNCATE)');

  assert.ok(!inFiles(Buffer.from(email)), 'after the forget, the plaintext is nowhere in the files');
  assert.ok(!inFiles(Buffer.from(key)), 'after the forget, the key is nowhere in the files');
  for await (const event of backend.store.readStream('customer-c-1')) assert.ok(event.type === 'CustomerRegistered' && isRedacted(event.data.email));
  assert.deepEqual(backend.database.prepare('SELECT count(*) FROM contacts').pluck().get(), 0);
  console.log('audit-a-sqlite-file: ok');
} finally {
  await contacts.stop();
  await backend.close();
  rmSync(dir, { recursive: true, force: true });
}
