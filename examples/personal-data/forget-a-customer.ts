// Forgetting a customer (the right to erasure): personal fields are encrypted with the customer's key,
// forget destroys it, and from then on the fields read as the redaction marker, appends of personal
// data for the customer are refused until a new key is allowed, and a view keyed by the customer clears
// its row. Runs on the memory backend, then on SQLite in a temporary file, and finishes by itself:
// npx tsx examples/personal-data/forget-a-customer.ts
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, EventRegistry, isEskitError, isRedacted, memory, MemoryView, SUBJECT_FORGOTTEN } from '../../src/index.js';
import type { Backend, Personal, Recorded, SubjectForgottenEvent } from '../../src/index.js';
import { sqlite } from '../../src/sqlite/index.js';

type CustomerEvent =
  | { type: 'CustomerRegistered'; data: { customerId: string; name: Personal<string>; email: Personal<string>; country: string } }
  | { type: 'OrderPlaced'; data: { customerId: string; orderId: string; total: number; shipTo: Personal<{ street: string; city: string }> } };
// The view names eskit's $subject.forgotten, so its union includes it.
type ViewEvent = CustomerEvent | SubjectForgottenEvent;

// The customer's id is the subject: stored in the clear, so it is an id and never an email address.
const registry = new EventRegistry<ViewEvent>({
  CustomerRegistered: { personal: { subject: (data) => data.customerId, fields: ['name', 'email'] } },
  OrderPlaced: { personal: { subject: (data) => data.customerId, fields: ['shipTo'] } },
});

const ada = { customerId: 'c-1', name: 'Ada Lovelace', email: 'ada@example.com', country: 'UK' };
const grace = { customerId: 'c-2', name: 'Grace Hopper', email: 'grace@example.com', country: 'US' };

async function collect<T>(events: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const event of events) out.push(event);
  return out;
}

/** The whole story on one backend. */
async function forgetACustomer(backend: Backend<ViewEvent>): Promise<void> {
  const { store } = backend;
  // Each customer's contact details, keyed by the subject, cleared when the customer is forgotten.
  const contacts = new MemoryView<ReadonlyMap<string, { name: string; email: string }>, ViewEvent>({
    backend,
    name: 'contacts',
    types: ['CustomerRegistered', SUBJECT_FORGOTTEN],
    initialState: new Map(),
    evolve: (state, event: Recorded<ViewEvent>) => {
      const next = new Map(state);
      if (event.type === SUBJECT_FORGOTTEN) next.delete(event.data.subject);
      else if (event.type === 'CustomerRegistered' && !isRedacted(event.data.name) && !isRedacted(event.data.email)) {
        next.set(event.data.customerId, { name: event.data.name, email: event.data.email });
      }
      return next;
    },
  });
  await contacts.start();

  await store.append('customer-c-1', [{ type: 'CustomerRegistered', data: ada }]);
  await store.append('customer-c-2', [{ type: 'CustomerRegistered', data: grace }]);
  const { position: ordered } = await store.append('order-o-1', [
    { type: 'OrderPlaced', data: { customerId: 'c-1', orderId: 'o-1', total: 42, shipTo: { street: '12 Analytical Row', city: 'London' } } },
  ]);

  // Typed reads decrypt; raw reads show envelopes and never the plaintext.
  const [registered] = await collect(store.readStream('customer-c-1'));
  assert.deepEqual(registered?.data, ada);
  const [stored] = await collect(store.readStream('customer-c-1', { raw: true }));
  const storedText = JSON.stringify(stored?.data);
  assert.ok(!storedText.includes('Ada') && !storedText.includes('ada@example.com'), storedText);
  assert.match(storedText, /"email":\{"\$enc":1,"kid":"[^"]+","iv":"[^"]+","ct":"[^"]+"\}/);
  assert.match(storedText, /"country":"UK"/); // not personal: stored as it is
  await contacts.waitFor(ordered);
  assert.deepEqual([...contacts.state.keys()], ['c-1', 'c-2']);

  // Ada asks to be erased.
  const forgotten = await store.forget('c-1');
  assert.equal(forgotten.keysDestroyed, 1);
  assert.equal(forgotten.alreadyForgotten, false);

  // Every personal field of hers reads as the marker, in every stream; the rest reads as before.
  const [customer] = await collect(store.readStream('customer-c-1'));
  assert.deepEqual(customer?.data, { customerId: 'c-1', name: { $redacted: true }, email: { $redacted: true }, country: 'UK' });
  const [order] = await collect(store.readStream('order-o-1'));
  assert.ok(order?.type === 'OrderPlaced' && isRedacted(order.data.shipTo));
  assert.equal(order.data.total, 42);
  // Grace is not touched.
  const [other] = await collect(store.readStream('customer-c-2'));
  assert.deepEqual(other?.data, grace);

  // The view heard $subject.forgotten and dropped her row.
  await contacts.waitFor(forgotten.position);
  assert.deepEqual([...contacts.state.keys()], ['c-2']);
  // The erasure is on record, in the stream $subject-c-1.
  const [record] = await collect(store.readStream('$subject-c-1'));
  assert.deepEqual(record?.data, { subject: 'c-1', keysDestroyed: 1 });

  // Personal data for her is refused, and nothing is written...
  const refused = await store.append('customer-c-1', [{ type: 'CustomerRegistered', data: ada }]).then(
    () => undefined,
    (error: unknown) => error,
  );
  assert.ok(isEskitError(refused, ErrorCode.SubjectForgotten), String(refused));
  assert.equal(await store.streamVersion('customer-c-1'), 1);
  // ...forgetting again destroys nothing (and records it again)...
  const again = await store.forget('c-1');
  assert.deepEqual([again.keysDestroyed, again.alreadyForgotten], [0, true]);

  // ...until she comes back and a new key is allowed. Her old data stays erased.
  await store.allowNewKey('c-1');
  await store.append('customer-c-1', [{ type: 'CustomerRegistered', data: { ...ada, email: 'ada@new.example' } }]);
  const emails = (await collect(store.readStream('customer-c-1'))).map((event) => (event.type === 'CustomerRegistered' ? event.data.email : undefined));
  assert.deepEqual(emails, [{ $redacted: true }, 'ada@new.example']);
  const { position: back } = await store.append('customer-c-3', [{ type: 'CustomerRegistered', data: { ...grace, customerId: 'c-3' } }]);
  await contacts.waitFor(back);
  assert.deepEqual([...contacts.state.keys()].sort(), ['c-1', 'c-2', 'c-3']);

  await contacts.stop();
  await backend.close();
}

await forgetACustomer(memory<ViewEvent>({ registry }));
// SQLite keeps the keys in the same file, in eskit_subject_keys.
const dir = mkdtempSync(join(tmpdir(), 'eskit-forget-'));
try {
  await forgetACustomer(sqlite<ViewEvent>({ path: join(dir, 'shop.db'), registry }));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.log('forget-a-customer: ok on memory and SQLite');
