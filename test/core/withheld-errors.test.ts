// An error your code throws on an event with personal data may quote it. Logs, spans and runner
// status get it withheld (forget could not reach them); the dead letter keeps it, sealed.
import { recordingLogger } from '../support/recording-logger.js';
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { Automation, EventRegistry, isRedacted, Subscription } from '../../src/index.js';
import type { Personal } from '../../src/index.js';
import { SealedDeadLetterStore } from '../../src/core/personal/sealed-dead-letters.js';
import { memory } from '../../src/memory/index.js';
import { waitUntil } from '../../src/testing/wait.js';

type E = { type: 'Registered'; data: { customerId: string; email: Personal<string> } };
const registry = new EventRegistry<E>({ Registered: { personal: { subject: (data) => data.customerId, fields: ['email'] } } });
const SENTINEL = 'carol.sentinel@example.com';
const retry = { maxAttempts: 2, initialDelayMs: 1, maxDelayMs: 1 };

const spans = new InMemorySpanExporter();
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] }));

const spanText = (): string =>
  JSON.stringify(spans.getFinishedSpans().map((span) => ({ status: span.status, attributes: span.attributes, events: span.events })));

describe('errors thrown on events with personal data', () => {
  it('a subscription: withheld in logs, spans and status; kept (sealed) in the dead letter', async () => {
    const backend = memory<E>({ registry });
    const deadLetters = new SealedDeadLetterStore(backend.deadLetters, backend.store);
    const { logger, text } = recordingLogger();
    const subscription = new Subscription<E>({
      name: 'mailer',
      store: backend.store,
      checkpoints: backend.checkpoints,
      deadLetters,
      logger,
      retry,
      pollIntervalMs: 10,
      handler: (event) => {
        throw new Error(`cannot mail ${String(event.data.email)}`);
      },
    });
    const { position } = await backend.store.append('customer-c1', [{ type: 'Registered', data: { customerId: 'c1', email: SENTINEL } }]);
    await subscription.start();
    try {
      await waitUntil(async () => (await subscription.status()).position === position, { message: 'the event dead-lettered and passed' });
      const status = JSON.stringify(await subscription.status());
      assert.doesNotMatch(text(), /sentinel/, 'logs');
      assert.match(text(), /withheld/, 'the logs say why the message is missing');
      assert.doesNotMatch(spanText(), /sentinel/, 'spans');
      assert.doesNotMatch(status, /sentinel/, 'status');
      assert.doesNotMatch(JSON.stringify(await backend.deadLetters.list()), /sentinel/, 'the stored letter');
      const [letter] = await deadLetters.list();
      assert.match(letter?.attempts[0]?.error ?? '', /cannot mail carol\.sentinel/, 'the opened letter keeps what was thrown');
    } finally {
      await subscription.stop();
    }
  });

  it('an automation: the execute error and payload are withheld or sealed, and erased by forget', async () => {
    const backend = memory<E>({ registry });
    const deadLetters = new SealedDeadLetterStore(backend.deadLetters, backend.store);
    const { logger, text } = recordingLogger();
    const automation = new Automation<E, { to: Personal<string> }>({
      name: 'welcome',
      store: backend.store,
      checkpoints: backend.checkpoints,
      completions: backend.completions,
      deadLetters,
      logger,
      retry,
      pollIntervalMs: 10,
      trigger: (event) => ({ key: event.data.customerId, payload: { to: event.data.email } }),
      execute: (item) => {
        throw new Error(`SMTP 550 for ${String(item.payload.to)}`);
      },
    });
    await backend.store.append('customer-c1', [{ type: 'Registered', data: { customerId: 'c1', email: SENTINEL } }]);
    await automation.start();
    try {
      await waitUntil(async () => (await deadLetters.count()) === 1, { message: 'the item dead-lettered' });
      assert.doesNotMatch(text(), /sentinel/, 'logs');
      assert.doesNotMatch(spanText(), /sentinel/, 'spans');
      assert.doesNotMatch(JSON.stringify(await backend.deadLetters.list()), /sentinel/, 'the stored letter');
      const [letter] = await deadLetters.list();
      assert.deepEqual(letter?.payload, { to: SENTINEL });
      await backend.store.forget('c1');
      const [erased] = await deadLetters.list();
      assert.ok(isRedacted(erased?.payload), 'the payload is erased with the subject');
    } finally {
      await automation.stop();
    }
  });
});
