// The auditor's scenario, shared by the SQLite and PostgreSQL audits: a system that touched a
// person's data every way eskit can (events in three streams, an archived and a soft-deleted one,
// snapshots, a failing automation's dead letter, a failing handler's retries in logs and spans, a SQL
// view keyed by the person), then forget(subject). The audits then search everything eskit wrote.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Automation, CommandHandler, EventRegistry, SqlView, Subscription, SUBJECT_FORGOTTEN } from '../../src/index.js';
import type { Backend, Decider, Logger, Personal, SqlViewHost, SubjectForgottenEvent } from '../../src/index.js';
import { waitUntil } from '../../src/testing/wait.js';

type Address = { street: string; city: string };
export type AuditEvent =
  | { type: 'CustomerRegistered'; data: { customerId: string; email: Personal<string>; address: Personal<Address> } }
  | { type: 'EmailChanged'; data: { customerId: string; email: Personal<string> } }
  | { type: 'OrderPlaced'; data: { customerId: string; orderId: string; total: number } }
  | SubjectForgottenEvent;

export const auditRegistry = new EventRegistry<AuditEvent>({
  CustomerRegistered: { personal: { subject: (data) => data.customerId, fields: ['email', 'address'] } },
  EmailChanged: { personal: { subject: (data) => data.customerId, fields: ['email'] } },
  OrderPlaced: {},
});

/** What no byte eskit wrote may contain after forget: unique per run, so nothing else can match. */
export function sentinels(): { email: string; newEmail: string; street: string } {
  const tag = randomUUID().slice(0, 8);
  return { email: `zed.${tag}@sentinel.example`, newEmail: `zed.new.${tag}@sentinel.example`, street: `Sentinelstraat ${tag}` };
}

type ProfileState = { email: Personal<string> | undefined; orders: number };
type ProfileCommand = { type: 'ChangeEmail'; email: string } | { type: 'PlaceOrder'; orderId: string };
const profile: Decider<ProfileState, ProfileCommand, AuditEvent> = {
  initialState: { email: undefined, orders: 0 },
  decide: (_state, command) =>
    command.type === 'ChangeEmail'
      ? [{ type: 'EmailChanged', data: { customerId: 'c1', email: command.email } }]
      : [{ type: 'OrderPlaced', data: { customerId: 'c1', orderId: command.orderId, total: 10 } }],
  evolve: (state, event) => {
    if (event.type === 'CustomerRegistered' || event.type === 'EmailChanged') return { ...state, email: event.data.email };
    if (event.type === 'OrderPlaced') return { ...state, orders: state.orders + 1 };
    return state;
  },
};

export interface ScenarioHooks {
  /** Runs once the view has cleared the person's row (SQLite: checkpoint the WAL that holds the old page). */
  afterViews?(): void;
}

/**
 * Runs everything on `backend` and forgets subject 'c1'; returns what it wrote in the clear before the
 * forget (for the audit's sanity check) and the view (stopped).
 */
export async function runScenario(backend: Backend<AuditEvent> & SqlViewHost<AuditEvent>, hooks: ScenarioHooks, logger: Logger, secret: ReturnType<typeof sentinels>): Promise<{ forgottenAt: number }> {
  const { store } = backend;
  await store.append('customer-c1', [{ type: 'CustomerRegistered', data: { customerId: 'c1', email: secret.email, address: { street: secret.street, city: 'Ghent' } } }]);
  await store.append('customer-c2', [{ type: 'CustomerRegistered', data: { customerId: 'c2', email: 'other@example.com', address: { street: 'Elsewhere 1', city: 'Bruges' } } }]);
  // A second stream of the person's, archived; a third, soft-deleted (kept in deleted_events).
  await store.append('signup-c1', [{ type: 'CustomerRegistered', data: { customerId: 'c1', email: secret.email, address: { street: secret.street, city: 'Ghent' } } }]);
  await store.archiveStream('signup-c1');
  await store.append('draft-c1', [{ type: 'EmailChanged', data: { customerId: 'c1', email: secret.email } }]);
  await store.deleteStream('draft-c1');

  // Snapshots after every command: the state holds the email.
  const handler = new CommandHandler({ backend, decider: profile, snapshots: { version: 1, every: 1 } });
  await handler.handle('customer-c1', { type: 'ChangeEmail', email: secret.newEmail });
  await handler.handle('customer-c1', { type: 'PlaceOrder', orderId: 'o-1' });
  await handler.flushSnapshots();

  const retry = { maxAttempts: 2, initialDelayMs: 1, maxDelayMs: 1 };
  // An automation whose side effect fails, quoting the address: a dead letter with the payload.
  const mailer = new Automation<AuditEvent, { to: Personal<string> }>({
    name: 'welcome-mail',
    backend,
    logger,
    retry,
    pollIntervalMs: 10,
    trigger: (event) => (event.type === 'CustomerRegistered' && event.data.customerId === 'c1' ? { key: event.data.customerId, payload: { to: event.data.email } } : undefined),
    execute: (item) => {
      throw new Error(`SMTP 550: mailbox ${String(item.payload.to)} refused`);
    },
  });
  // A handler that fails once per event, quoting it: retries in logs and spans.
  const failedOnce = new Set<string>();
  const auditTrail = new Subscription<AuditEvent>({
    name: 'audit-trail',
    backend,
    logger,
    retry,
    pollIntervalMs: 10,
    handler: (event) => {
      if (event.type !== SUBJECT_FORGOTTEN && 'email' in event.data && !failedOnce.has(event.id)) {
        failedOnce.add(event.id);
        throw new Error(`cannot index ${JSON.stringify(event.data)}`);
      }
    },
  });
  // A view keyed by the person, holding their email, clearing it on $subject.forgotten.
  const contacts = new SqlView<AuditEvent>({
    name: 'contacts',
    backend,
    types: ['CustomerRegistered', 'EmailChanged', SUBJECT_FORGOTTEN],
    setup: { version: 1, statements: (t) => [`CREATE TABLE ${t('contacts')} (customer_id TEXT PRIMARY KEY, email TEXT NOT NULL)`] },
    evolve: (event, { upsert }) => {
      if (event.type === SUBJECT_FORGOTTEN) upsert('contacts', { customer_id: event.data.subject, email: '' }, { key: ['customer_id'] });
      else if (event.type !== 'OrderPlaced' && typeof event.data.email === 'string') {
        upsert('contacts', { customer_id: event.data.customerId, email: event.data.email }, { key: ['customer_id'] });
      }
    },
  });
  await mailer.start();
  await auditTrail.start();
  await contacts.start();
  try {
    await waitUntil(async () => (await backend.deadLetters.count({ source: 'welcome-mail' })) === 1, { message: 'the automation to dead-letter the mail' });
    const head = await store.headPosition();
    await waitUntil(async () => (await auditTrail.status()).position === head, { message: 'the audit trail to pass every event' });
    await contacts.waitFor(head);
    assert.ok(failedOnce.size >= 3, 'the handler failed on the person\'s events');
    const { position } = await store.forget('c1');
    await contacts.waitFor(position);
    hooks.afterViews?.();
    // The runners get to see the erased data too: nothing they do afterwards may bring it back.
    await waitUntil(async () => (await auditTrail.status()).position === position, { message: 'the audit trail to pass the forget' });
    return { forgottenAt: position };
  } finally {
    await Promise.all([mailer.stop(), auditTrail.stop(), contacts.stop()]);
  }
}
