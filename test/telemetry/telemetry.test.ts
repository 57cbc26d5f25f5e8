// Spans and metrics, observed through the OpenTelemetry SDK's in-memory exporters. The SDK is
// registered globally, which can happen once per process: this file is the only one that does it
// (node's test runner gives each file its own process).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { afterEach, before, beforeEach, describe, it } from 'node:test';
import { ROOT_CONTEXT, SpanStatusCode, context, metrics, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { DataPointType, MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import type { MetricData } from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import {
  Automation,
  CommandHandler,
  MetricName,
  PermanentFailure,
  SpanName,
  Subscription,
  TelemetryAttribute,
  memory,
  silentLogger,
} from '../../src/index.js';
import type { CheckpointStore } from '../../src/adapter/index.js';
import { TELEMETRY_SCOPE, TRACE_METADATA } from '../../src/telemetry/index.js';
import { eventSpanContext } from '../../src/telemetry/index.js';
import { MemoryCheckpointStore, MemoryEventStore, MemoryLockRegistry } from '../../src/memory/index.js';
import type { DeadLetterStore, EventStore, Recorded, SubscriptionOptions } from '../../src/index.js';
import { sqlite } from '../../src/sqlite/index.js';
import { activeTracer } from '../../src/telemetry/telemetry.js';
import { waitUntil } from '../../src/testing/wait.js';
import { account } from '../decider/account.js';
import { removeDatabase, tempDatabasePath } from '../sqlite/helpers.js';

const packageVersion = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

// ---- the SDK -------------------------------------------------------------------------------------

/** A reader whose collect() the tests call: no export timer. */
class TestReader extends MetricReader {
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

const spans = new InMemorySpanExporter();
const reader = new TestReader();
let installed = false;

function installSdk(): void {
  if (installed) return;
  installed = true;
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  assert.ok(trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] })));
  assert.ok(metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] })));
}

async function collectMetric(name: string): Promise<MetricData | undefined> {
  const { resourceMetrics, errors } = await reader.collect();
  assert.deepEqual(errors, []);
  const scope = resourceMetrics.scopeMetrics.find((s) => s.scope.name === TELEMETRY_SCOPE);
  return scope?.metrics.find((m) => m.descriptor.name === name);
}

function matches(attributes: Record<string, unknown>, wanted: Record<string, unknown>): boolean {
  return Object.entries(wanted).every(([key, value]) => attributes[key] === value);
}

/** The sum of a counter's points whose attributes include `wanted` (0 when there are none). */
async function counter(name: string, wanted: Record<string, unknown>): Promise<number> {
  const metric = await collectMetric(name);
  if (!metric) return 0;
  assert.equal(metric.dataPointType, DataPointType.SUM);
  let total = 0;
  for (const point of metric.dataPoints) if (matches(point.attributes, wanted)) total += point.value;
  return total;
}

async function gauge(name: string, wanted: Record<string, unknown>): Promise<number | undefined> {
  const metric = await collectMetric(name);
  if (!metric) return undefined;
  assert.equal(metric.dataPointType, DataPointType.GAUGE);
  return metric.dataPoints.find((point) => matches(point.attributes, wanted))?.value;
}

async function histogram(name: string, wanted: Record<string, unknown>): Promise<{ count: number; sum: number | undefined }> {
  const metric = await collectMetric(name);
  if (!metric) return { count: 0, sum: undefined };
  assert.equal(metric.dataPointType, DataPointType.HISTOGRAM);
  const point = metric.dataPoints.find((p) => matches(p.attributes, wanted));
  return { count: point?.value.count ?? 0, sum: point?.value.sum };
}

function finished(name: string, wanted: Record<string, unknown> = {}): ReadableSpan[] {
  return spans.getFinishedSpans().filter((span) => span.name === name && matches(span.attributes, wanted));
}

function exceptionEvents(span: ReadableSpan): Array<Record<string, unknown>> {
  return span.events.filter((e) => e.name === 'exception').map((e) => ({ ...e.attributes }));
}

// ---- backends ------------------------------------------------------------------------------------

interface Backend {
  store: EventStore;
  checkpoints: CheckpointStore;
  deadLetters: DeadLetterStore;
  close(): Promise<void>;
}

const backends: Array<{ name: string; create(): Backend }> = [
  { name: 'memory', create: () => memory() },
  {
    name: 'sqlite',
    create: () => {
      const path = tempDatabasePath('telemetry');
      const backend = sqlite({ path });
      return {
        ...backend,
        close: async () => {
          await backend.close();
          removeDatabase(path);
        },
      };
    },
  },
];

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});
function track<T extends { stop(): Promise<void> }>(runner: T): T {
  cleanups.push(() => runner.stop());
  return runner;
}

const fastRetry = { maxAttempts: 3, initialDelayMs: 1, maxDelayMs: 2 };

async function appendTicks(store: EventStore, count: number, type = 'Tick'): Promise<void> {
  for (let i = 0; i < count; i++) await store.append(`tick-${i % 4}`, [{ type, data: { i } }]);
}

// ---- before an SDK -------------------------------------------------------------------------------

describe('telemetry before an SDK is installed', () => {
  it('starts no spans, and a subscription started before the SDK reports to it once installed', async () => {
    assert.equal(activeTracer(), undefined, 'no tracer provider: call sites skip span work');
    const store = new MemoryEventStore();
    cleanups.push(() => store.close());
    let handled = 0;
    const subscription = track(new Subscription({
      name: 'early',
      store,
      checkpoints: new MemoryCheckpointStore(),
      logger: silentLogger,
      pollIntervalMs: 20,
      handler: () => {
        handled += 1;
      },
    }));
    await subscription.start();
    await appendTicks(store, 3);
    await waitUntil(() => handled === 3);
    for await (const event of store.readAll()) assert.deepEqual(event.metadata, {}, 'no SDK: nothing is added to the metadata');

    installSdk();
    assert.notEqual(activeTracer(), undefined);
    await appendTicks(store, 2);
    await waitUntil(() => handled === 5);
    // The meter is looked up on use, so the 2 events handled after installation are counted (the
    // 3 before went to the no-op meter).
    await waitUntil(async () => (await counter(MetricName.EventsHandled, { [TelemetryAttribute.Subscription]: 'early' })) === 2);
    assert.equal(finished(SpanName.Append).length, 2, 'appends after installation are traced');
  });
});

// ---- with the SDK, per backend -------------------------------------------------------------------

for (const backendCase of backends) {
  const label = backendCase.name;
  describe(`telemetry (${label})`, () => {
    let backend: Backend;
    before(() => installSdk());
    beforeEach(() => {
      spans.reset();
      backend = backendCase.create();
      cleanups.push(() => backend.close());
    });

    it('a command is a span with one child append span per attempt', async () => {
      const handler = new CommandHandler({ store: backend.store, decider: account });
      const stream = `account-${label}`;
      await handler.handle(stream, { type: 'Open', owner: 'ann' });

      const [command] = finished(SpanName.Command, { [TelemetryAttribute.StreamId]: stream });
      assert.ok(command, 'a command span');
      assert.deepEqual({ ...command.instrumentationScope }, { name: TELEMETRY_SCOPE, version: packageVersion, schemaUrl: undefined });
      assert.equal(command.attributes[TelemetryAttribute.CommandType], 'Open');
      assert.equal(command.attributes[TelemetryAttribute.CommandAttempts], 1);
      assert.equal(command.attributes[TelemetryAttribute.EventCount], 1);
      assert.equal(command.status.code, SpanStatusCode.UNSET);
      const appends = finished(SpanName.Append, { [TelemetryAttribute.StreamId]: stream });
      assert.equal(appends.length, 1);
      const append = appends[0] as ReadableSpan;
      assert.equal(append.parentSpanContext?.spanId, command.spanContext().spanId, 'append is a child of the command');
      assert.equal(append.spanContext().traceId, command.spanContext().traceId);
      assert.equal(append.attributes[TelemetryAttribute.EventCount], 1);
      assert.equal(append.attributes[TelemetryAttribute.ExpectedVersion], 0);
      assert.equal(append.attributes[TelemetryAttribute.StreamVersion], 1);
      assert.equal(append.attributes[TelemetryAttribute.Position], await backend.store.headPosition());
    });

    it('events carry the trace context of their append; the batch that handles them and the items they trigger link to it', async () => {
      const handler = new CommandHandler({ store: backend.store, decider: account });
      const stream = `traced-${label}`;
      await handler.handle(stream, { type: 'Open', owner: 'ann' });
      await handler.handle(stream, { type: 'Deposit', amount: 5 });
      const appends = finished(SpanName.Append, { [TelemetryAttribute.StreamId]: stream });
      assert.equal(appends.length, 2);
      const events: Recorded[] = [];
      for await (const event of backend.store.readStream(stream)) events.push(event);
      assert.deepEqual(
        events.map((event) => event.metadata[TRACE_METADATA.traceparent]),
        appends.map((append) => `00-${append.spanContext().traceId}-${append.spanContext().spanId}-01`),
        'each event names the append span that wrote it',
      );
      assert.equal(eventSpanContext(events[0]?.metadata ?? {})?.spanId, appends[0]?.spanContext().spanId);

      const subscription = track(new Subscription({ name: `linked-${label}`, store: backend.store, checkpoints: backend.checkpoints, logger: silentLogger, handler: () => {} }));
      await subscription.start();
      await waitUntil(async () => (await subscription.status()).position === events[1]?.position);
      const links = finished(SpanName.Handle, { [TelemetryAttribute.Subscription]: `linked-${label}` }).flatMap((span) => span.links);
      assert.deepEqual(
        links.map((link) => link.context.spanId).sort(),
        appends.map((append) => append.spanContext().spanId).sort(),
        'one link per append, not per event',
      );
      assert.ok(links.every((link) => link.context.isRemote));

      const executed: string[] = [];
      const automation = track(new Automation({
        name: `linked-auto-${label}`,
        store: backend.store,
        checkpoints: backend.checkpoints,
        deadLetters: backend.deadLetters,
        logger: silentLogger,
        trigger: (event) => (event.streamId === stream ? { key: event.id, payload: null } : undefined),
        execute: (item) => {
          executed.push(item.key);
        },
      }));
      await automation.start();
      await waitUntil(() => executed.length === 2);
      const executes = finished(SpanName.Execute, { [TelemetryAttribute.Automation]: `linked-auto-${label}` });
      assert.deepEqual(
        executes.map((span) => span.links.map((link) => link.context.spanId)).sort(),
        appends.map((append) => [append.spanContext().spanId]).sort(),
        'each item links to the append of its event',
      );
    });

    it('a trace context the caller put in the metadata is kept; a malformed one links nowhere', async () => {
      const forwarded = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
      await backend.store.append(`kept-${label}`, [
        { type: 'Tick', data: {}, metadata: { traceparent: forwarded, tracestate: 'vendor=1' } },
        { type: 'Tick', data: {}, metadata: { traceparent: '00-not-a-context-01' } },
        { type: 'Tick', data: {}, metadata: { traceparent: 42 } },
        // Their tracestate alone: ours is not added beside it (the pair would name two traces).
        { type: 'Tick', data: {}, metadata: { tracestate: 'mine=1' } },
      ]);
      const events: Recorded[] = [];
      for await (const event of backend.store.readStream(`kept-${label}`)) events.push(event);
      assert.deepEqual(events.map((event) => event.metadata[TRACE_METADATA.traceparent]), [forwarded, '00-not-a-context-01', 42, undefined]);
      assert.deepEqual(events[3]?.metadata, { tracestate: 'mine=1' });
      assert.equal(eventSpanContext(events[0]?.metadata ?? {})?.traceState?.get('vendor'), '1');
      assert.equal(eventSpanContext(events[1]?.metadata ?? {}), undefined);

      const subscription = track(new Subscription({ name: `kept-${label}`, store: backend.store, checkpoints: backend.checkpoints, logger: silentLogger, handler: () => {} }));
      await subscription.start();
      await waitUntil(async () => (await subscription.status()).position === events[3]?.position);
      const links = finished(SpanName.Handle, { [TelemetryAttribute.Subscription]: `kept-${label}` }).flatMap((span) => span.links);
      assert.deepEqual(links.map((link) => `${link.context.traceId}/${link.context.spanId}`), ['0af7651916cd43dd8448eb211c80319c/b7ad6b7169203331']);
    });

    it('a conflict shows as a failed child append and a second attempt', async () => {
      const stream = `racy-${label}`;
      const real = backend.store;
      await real.append(stream, [{ type: 'AccountOpened', data: { owner: 'ann' } }]);
      let interfere = true;
      // A store whose first stream read is followed by another writer's append (outside the trace).
      const racing = {
        append: real.append.bind(real),
        readStream: (id: string) => ({
          async *[Symbol.asyncIterator]() {
            yield* real.readStream(id);
            if (interfere) {
              interfere = false;
              await context.with(ROOT_CONTEXT, () => real.append(id, [{ type: 'MoneyDeposited', data: { amount: 1 } }]));
            }
          },
        }),
      } as unknown as EventStore;
      const handler = new CommandHandler({ store: racing, decider: account, retry: { initialDelayMs: 1, maxDelayMs: 1 } });
      await handler.handle(stream, { type: 'Deposit', amount: 5 });

      const [command] = finished(SpanName.Command, { [TelemetryAttribute.StreamId]: stream });
      assert.ok(command);
      assert.equal(command.attributes[TelemetryAttribute.CommandAttempts], 2);
      const children = finished(SpanName.Append).filter((s) => s.parentSpanContext?.spanId === command.spanContext().spanId);
      assert.equal(children.length, 2);
      const [conflicted, succeeded] = children.sort((a, b) => Number(a.attributes[TelemetryAttribute.ExpectedVersion]) - Number(b.attributes[TelemetryAttribute.ExpectedVersion]));
      assert.equal(conflicted?.status.code, SpanStatusCode.ERROR);
      assert.equal(conflicted?.attributes[TelemetryAttribute.ErrorCode], 'ESKIT_CONCURRENCY');
      assert.equal(exceptionEvents(conflicted as ReadableSpan).length, 1);
      assert.equal(succeeded?.status.code, SpanStatusCode.UNSET);
      assert.equal(succeeded?.attributes[TelemetryAttribute.ExpectedVersion], 2);
    });

    it('a failed command (domain rejection) ends its span with status ERROR', async () => {
      const handler = new CommandHandler({ store: backend.store, decider: account });
      await assert.rejects(handler.handle(`closed-${label}`, { type: 'Deposit', amount: 5 }), /the account is new/);
      const [command] = finished(SpanName.Command, { [TelemetryAttribute.StreamId]: `closed-${label}` });
      assert.equal(command?.status.code, SpanStatusCode.ERROR);
      assert.match(String(exceptionEvents(command as ReadableSpan)[0]?.['exception.message']), /the account is new/);
    });

    it('a subscription counts the events it handled, traces each batch, and reports its lag', async () => {
      const name = `counted-${label}`;
      const tracer = trace.getTracer('test');
      let release!: () => void;
      const released = new Promise<void>((resolve) => (release = resolve));
      let reached = false;
      await appendTicks(backend.store, 25);
      const subscription = track(new Subscription({
        name,
        store: backend.store,
        checkpoints: backend.checkpoints,
        logger: silentLogger,
        pollIntervalMs: 20,
        batchSize: 10,
        handler: async (event) => {
          // The application's own span: a child of the batch's span.
          tracer.startSpan('app.work').end();
          if (event.position === 25) {
            reached = true;
            await released;
          }
        },
      }));
      await subscription.start();
      await waitUntil(() => reached);
      // Blocked in the last batch: the checkpoint has not moved past the first batches' saves.
      const status = await subscription.status();
      assert.equal(await gauge(MetricName.SubscriptionLag, { [TelemetryAttribute.Subscription]: name }), status.lag);
      assert.ok(status.lag > 0);
      release();
      await waitUntil(async () => (await subscription.status()).lag === 0);
      assert.equal(await gauge(MetricName.SubscriptionLag, { [TelemetryAttribute.Subscription]: name }), 0);
      assert.equal(await counter(MetricName.EventsHandled, { [TelemetryAttribute.Subscription]: name }), 25);

      const batches = finished(SpanName.Handle, { [TelemetryAttribute.Subscription]: name });
      assert.equal(batches.length, 3);
      assert.deepEqual(batches.map((s) => s.attributes[TelemetryAttribute.EventCount]).sort(), [10, 10, 5]);
      assert.deepEqual(batches.map((s) => s.attributes[TelemetryAttribute.FirstPosition]).sort((a, b) => Number(a) - Number(b)), [1, 11, 21]);
      for (const batch of batches) {
        assert.equal(batch.parentSpanContext, undefined, 'a batch span is a root span');
        assert.equal(batch.status.code, SpanStatusCode.UNSET);
      }
      const work = finished('app.work');
      assert.equal(work.length, 25);
      const batchIds = new Set(batches.map((s) => s.spanContext().spanId));
      assert.ok(work.every((s) => batchIds.has(s.parentSpanContext?.spanId ?? '')), 'handler spans are children of the batch span');
    });

    it('a failing handler: retries counted, the exception recorded, the batch span ERROR, the event dead-lettered', async () => {
      const name = `failing-${label}`;
      let handled = 0;
      const subscription = track(new Subscription({
        name,
        store: backend.store,
        checkpoints: backend.checkpoints,
        deadLetters: backend.deadLetters,
        logger: silentLogger,
        pollIntervalMs: 20,
        retry: fastRetry,
        handler: (event) => {
          if (event.type === 'Bad') throw new Error(`cannot handle ${event.position}`);
          handled += 1;
        },
      }));
      await appendTicks(backend.store, 2);
      await backend.store.append('bad', [{ type: 'Bad', data: {} }]);
      await appendTicks(backend.store, 1);
      await subscription.start();
      await waitUntil(async () => (await subscription.status()).lag === 0);
      assert.equal(handled, 3);
      const attributes = { [TelemetryAttribute.Subscription]: name };
      assert.equal(await counter(MetricName.HandlerRetries, attributes), 2);
      assert.equal(await counter(MetricName.DeadLetters, { ...attributes, [TelemetryAttribute.Stage]: 'handler' }), 1);
      assert.equal(await counter(MetricName.EventsHandled, attributes), 3);

      const failed = finished(SpanName.Handle, attributes).filter((s) => s.status.code === SpanStatusCode.ERROR);
      assert.equal(failed.length, 1);
      const exceptions = exceptionEvents(failed[0] as ReadableSpan);
      assert.equal(exceptions.length, 3, 'two retried attempts and the last one');
      assert.deepEqual(exceptions.map((e) => e[TelemetryAttribute.Attempt]), [1, 2, 3]);
      assert.ok(exceptions.every((e) => e['exception.message'] === 'cannot handle 3' && e[TelemetryAttribute.Position] === 3));
    });

    it('an automation: a span per execute attempt, retries and dead letters counted', async () => {
      const name = `mailer-${label}`;
      const attempts = new Map<string, number>();
      const automation = track(new Automation<{ type: string; data: { key: string } }, null>({
        name,
        store: backend.store as EventStore<{ type: string; data: { key: string } }>,
        checkpoints: backend.checkpoints,
        deadLetters: backend.deadLetters,
        logger: silentLogger,
        pollIntervalMs: 20,
        retry: fastRetry,
        trigger: (event) => ({ key: event.data.key, payload: null }),
        execute: async (item, ctx) => {
          attempts.set(item.key, ctx.attempt);
          trace.getTracer('test').startSpan('app.send').end();
          if (item.key === 'flaky' && ctx.attempt === 1) throw new Error('smtp timeout');
          if (item.key === 'broken') throw new PermanentFailure('no such mailbox');
        },
      }));
      await backend.store.append('m-1', [{ type: 'Requested', data: { key: 'flaky' } }]);
      await backend.store.append('m-2', [{ type: 'Requested', data: { key: 'broken' } }]);
      await automation.start();
      await waitUntil(async () => (await automation.status()).lag === 0 && (await backend.deadLetters.list({ source: name })).length === 1);

      const flaky = finished(SpanName.Execute, { [TelemetryAttribute.Automation]: name, [TelemetryAttribute.ItemKey]: 'flaky' })
        .sort((a, b) => Number(a.attributes[TelemetryAttribute.Attempt]) - Number(b.attributes[TelemetryAttribute.Attempt]));
      assert.equal(flaky.length, 2);
      assert.equal(flaky[0]?.attributes[TelemetryAttribute.Attempt], 1);
      assert.equal(flaky[0]?.status.code, SpanStatusCode.ERROR);
      assert.equal(exceptionEvents(flaky[0] as ReadableSpan)[0]?.['exception.message'], 'smtp timeout');
      assert.equal(flaky[1]?.attributes[TelemetryAttribute.Attempt], 2);
      assert.equal(flaky[1]?.status.code, SpanStatusCode.UNSET);
      assert.equal(flaky[1]?.attributes[TelemetryAttribute.Position], 1);
      assert.equal(flaky[1]?.attributes[TelemetryAttribute.EventType], 'Requested');
      assert.equal(flaky[1]?.parentSpanContext, undefined, 'an execute span is a root span');
      const sends = finished('app.send');
      const executeIds = new Set(finished(SpanName.Execute).map((s) => s.spanContext().spanId));
      assert.ok(sends.length >= 3 && sends.every((s) => executeIds.has(s.parentSpanContext?.spanId ?? '')), 'side-effect spans are children of execute spans');

      const [broken] = finished(SpanName.Execute, { [TelemetryAttribute.ItemKey]: 'broken', [TelemetryAttribute.Automation]: name });
      assert.equal(broken?.attributes[TelemetryAttribute.ErrorCode], 'ESKIT_PERMANENT_FAILURE');
      const attributes = { [TelemetryAttribute.Automation]: name };
      assert.equal(await counter(MetricName.HandlerRetries, attributes), 1);
      assert.equal(await counter(MetricName.DeadLetters, { ...attributes, [TelemetryAttribute.Stage]: 'execute' }), 1);
    });

    it('leader election: lock denied, leadership changes and the handoff duration', async () => {
      const name = `leader-${label}`;
      const locks = new MemoryLockRegistry();
      const seen: Array<{ node: string; event: Recorded }> = [];
      const options = (node: string): SubscriptionOptions<{ type: string; data: unknown }> => ({
        name,
        store: backend.store,
        checkpoints: backend.checkpoints,
        leaderLock: locks,
        logger: silentLogger,
        pollIntervalMs: 20,
        handler: (event) => {
          seen.push({ node, event });
        },
      });
      const a = track(new Subscription(options('a')));
      const b = track(new Subscription(options('b')));
      const attributes = { [TelemetryAttribute.Subscription]: name };
      const change = (kind: string) => counter(MetricName.LeadershipChanges, { ...attributes, [TelemetryAttribute.LeadershipChange]: kind });

      await a.start();
      await waitUntil(async () => (await a.status()).state === 'leading');
      await b.start();
      await waitUntil(async () => (await b.status()).lockDenied);
      assert.equal(await counter(MetricName.LockDenied, attributes), 1);
      assert.equal(await change('acquired'), 1);
      assert.equal((await histogram(MetricName.HandoffDuration, attributes)).count, 0, 'a node that got the lock at once has no handoff');

      // The leader's lease expires: it counts a loss, the standby takes over (one handoff).
      locks.revoke(name);
      await waitUntil(async () => (await b.status()).state === 'leading');
      await waitUntil(async () => (await a.status()).lockDenied);
      assert.equal(await change('lost'), 1);
      assert.equal(await change('acquired'), 2);
      assert.equal(await counter(MetricName.LockDenied, attributes), 2);
      const first = await histogram(MetricName.HandoffDuration, attributes);
      assert.equal(first.count, 1);
      assert.ok(first.sum !== undefined && first.sum >= 0);

      // The new leader stops: it releases the lock, and the old one (waiting since its loss) takes over.
      await b.stop();
      await waitUntil(async () => (await a.status()).state === 'leading');
      assert.equal(await change('released'), 1);
      assert.equal(await change('acquired'), 3);
      assert.equal((await histogram(MetricName.HandoffDuration, attributes)).count, 2);
      // Only the leader reports lag: one point for the name.
      await backend.store.append('x', [{ type: 'Tick', data: {} }]);
      await waitUntil(() => seen.length === 1);
      assert.equal(seen[0]?.node, 'a');
      await waitUntil(async () => (await gauge(MetricName.SubscriptionLag, attributes)) === 0);
    });
  });
}
