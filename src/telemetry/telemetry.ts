import { forSpans } from '../core/personal/withheld.js';
import { createRequire } from 'node:module';
import { ProxyTracerProvider, ROOT_CONTEXT, SpanStatusCode, ValueType, context, createTraceState, isSpanContextValid, metrics, trace } from '@opentelemetry/api';
import type { Attributes, Context, Counter, Histogram, Link, Meter, MeterProvider, Span, SpanContext, SpanOptions, Tracer, TracerProvider } from '@opentelemetry/api';
import type { Metadata, Recorded } from '../core/event.js';

/**
 * eskit's OpenTelemetry instrumentation, through `@opentelemetry/api` only: without an SDK installed
 * by the application every call below is a no-op, and the hot paths (append, per-event handling)
 * skip span work altogether after one cheap check (`activeTracer()`).
 *
 * Providers are looked up lazily, on use, never once at import:
 * - Traces: the API hands out a ProxyTracerProvider that forwards to the SDK once one is registered,
 *   but a span started through it while no SDK is registered is a non-recording span that still
 *   costs allocations. `activeTracer()` asks the proxy whether it has a delegate yet and returns
 *   undefined while it has none, so callers build no attributes, closures or spans.
 * - Metrics: the API has no proxy meter provider. A meter (and its instruments) obtained before
 *   `metrics.setGlobalMeterProvider()` stays a no-op forever. `instruments()` therefore compares the
 *   global meter provider with the one its instruments were made from and makes them again when it
 *   changed, so a library loaded (and subscriptions started) before the SDK still reports to it.
 *   Callers ask for the instruments per batch or per rare event (a retry, a lock change), never per
 *   event, so the lookup costs nothing measurable.
 */

/** The instrumentation scope: the tracer's and the meter's name. */
export const TELEMETRY_SCOPE = 'eskit';

/** Names of the spans eskit starts. */
export const SpanName = {
  /** CommandHandler.handle: load, decide, append, with its conflict retries. */
  Command: 'eskit.command',
  /** EventStore.append (every adapter built on EventStoreBase). */
  Append: 'eskit.append',
  /** A subscription handling one batch of events (a root span). */
  Handle: 'eskit.handle',
  /** One attempt of an automation's execute for one to-do item (a root span). */
  Execute: 'eskit.execute',
} as const;
export type SpanName = (typeof SpanName)[keyof typeof SpanName];

/** Names of the metric instruments eskit records. */
export const MetricName = {
  /** Counter, `{event}`: events whose handler succeeded, per subscription (for an automation: events triggered). */
  EventsHandled: 'eskit.events.handled',
  /** Observable gauge, `{event}`: head position minus the checkpoint, reported by the leading node only. */
  SubscriptionLag: 'eskit.subscription.lag',
  /** Counter, `{retry}`: failed handler, trigger or execute attempts that are tried again. */
  HandlerRetries: 'eskit.handler.retries',
  /** Counter, `{letter}`: events or to-do items stored in the dead-letter queue. */
  DeadLetters: 'eskit.dead_letters',
  /** Counter, `{change}`: leadership acquired, lost or released (with leader election only). */
  LeadershipChanges: 'eskit.leadership.changes',
  /** Counter, `{denial}`: times this node found the leader lock held by another node and stood by. */
  LockDenied: 'eskit.lock.denied',
  /**
   * Histogram, `ms`: how long this node went without leading before it acquired the lock, counted from
   * the first refusal of the lock, or from when it saw its own lease lost, until the lock was granted.
   */
  HandoffDuration: 'eskit.leadership.handoff_duration',
  /**
   * Counter, `{timeout}`: automation executes that passed their timeout (their signal fired). Each
   * keeps its key busy until it settles; the status's `hung` says how many still run.
   */
  ExecuteTimeouts: 'eskit.execute.timeouts',
  /** Counter, `{abandonment}`: work still running when stop()'s drain timeout passed, given up (delivered again later). */
  WorkAbandoned: 'eskit.work.abandoned',
  /**
   * Counter, `{check}`: rebalance checks at which this node had held fewer partitions than its share
   * (about partitions / live nodes) for a while: their holders do not let them go (see docs/scaling.md).
   */
  PartitionShareShort: 'eskit.partitions.share_short',
} as const;
export type MetricName = (typeof MetricName)[keyof typeof MetricName];

/** Attribute keys on eskit's spans and metric points. */
export const TelemetryAttribute = {
  Subscription: 'eskit.subscription',
  Automation: 'eskit.automation',
  StreamId: 'eskit.stream.id',
  /** The stream's version after an append (or after a command). */
  StreamVersion: 'eskit.stream.version',
  /** As passed to append: a number, or "any", "no_stream", "stream_exists". */
  ExpectedVersion: 'eskit.expected_version',
  /** Global position: of the last event appended, or of the event an item came from. */
  Position: 'eskit.position',
  EventCount: 'eskit.event.count',
  EventType: 'eskit.event.type',
  FirstPosition: 'eskit.batch.first_position',
  LastPosition: 'eskit.batch.last_position',
  FencingToken: 'eskit.fencing_token',
  CommandType: 'eskit.command.type',
  /** Load-decide-append rounds a command took (1 + conflict retries). */
  CommandAttempts: 'eskit.command.attempts',
  ItemKey: 'eskit.item.key',
  Attempt: 'eskit.attempt',
  Redrive: 'eskit.redrive',
  /** Dead letters: 'handler', 'trigger' or 'execute'. */
  Stage: 'eskit.stage',
  /** Leadership changes: 'acquired', 'lost' or 'released'. */
  LeadershipChange: 'eskit.leadership.change',
  /** The eskit error code of a failed span, when the error has one. */
  ErrorCode: 'eskit.error.code',
} as const;
export type TelemetryAttribute = (typeof TelemetryAttribute)[keyof typeof TelemetryAttribute];

const VERSION = packageVersion();

// ---- traces --------------------------------------------------------------------------------------

/** What `ProxyTracerProvider.getDelegate()` returns while no SDK is registered (a module singleton). */
const NOOP_TRACER_PROVIDER: TracerProvider = new ProxyTracerProvider().getDelegate();
let tracerProvider: TracerProvider | undefined;
let tracer: Tracer | undefined;

/**
 * The tracer, or undefined while no tracer provider is registered: call sites then skip span work.
 * A provider that is not this API copy's proxy is assumed to be real.
 */
export function activeTracer(): Tracer | undefined {
  const provider = trace.getTracerProvider();
  if (provider instanceof ProxyTracerProvider && provider.getDelegate() === NOOP_TRACER_PROVIDER) return undefined;
  if (provider !== tracerProvider || tracer === undefined) {
    tracerProvider = provider;
    tracer = provider.getTracer(TELEMETRY_SCOPE, VERSION);
  }
  return tracer;
}

/**
 * Runs `fn` in a new active span (a child of the active one unless `options.root`); a rejection is
 * recorded on the span (exception event, status ERROR) and rethrown. The span always ends.
 */
export function inSpan<T>(tracer: Tracer, name: SpanName, options: SpanOptions, fn: (span: Span) => Promise<T>): Promise<T> {
  return tracer.startActiveSpan(name, options, async (span) => {
    try {
      return await fn(span);
    } catch (error) {
      failSpan(span, error);
      throw error;
    } finally {
      span.end();
    }
  });
}

/** A context in which `span` is the active span, with no other parent (for background work). */
export function rootContextWith(span: Span): Context {
  return trace.setSpan(ROOT_CONTEXT, span);
}

/** Calls `fn` with `span` active, so spans the application starts inside become its children. */
export function callInSpan<A extends unknown[], R>(span: Span, fn: (...args: A) => R, thisArg: unknown, ...args: A): R {
  return context.with(rootContextWith(span), fn, thisArg, ...args);
}

/** The metadata keys an event's creation context is stored under (W3C Trace Context's header names). */
export const TRACE_METADATA = { traceparent: 'traceparent', tracestate: 'tracestate' } as const;

/**
 * The W3C Trace Context of `span`, written into the metadata of the events appended inside it, so that
 * whoever handles them later can link back to where they came from. Formatted here rather than by the
 * application's propagator: the stored form stays the same whatever propagators (B3, baggage) the
 * process runs, and nothing else (baggage) ends up stored in the log.
 */
export function traceMetadata(span: Span): Metadata | undefined {
  const spanContext = span.spanContext();
  if (!isSpanContextValid(spanContext)) return undefined;
  const traceparent = `00-${spanContext.traceId}-${spanContext.spanId}-0${(spanContext.traceFlags & 1).toString(16)}`;
  const tracestate = spanContext.traceState?.serialize();
  return tracestate ? { [TRACE_METADATA.traceparent]: traceparent, [TRACE_METADATA.tracestate]: tracestate } : { [TRACE_METADATA.traceparent]: traceparent };
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** The creation context stored in an event's metadata; undefined when absent or malformed. */
export function eventSpanContext(metadata: Metadata): SpanContext | undefined {
  const traceparent = metadata[TRACE_METADATA.traceparent];
  if (typeof traceparent !== 'string') return undefined;
  const match = TRACEPARENT.exec(traceparent);
  if (!match) return undefined;
  const tracestate = metadata[TRACE_METADATA.tracestate];
  const spanContext: SpanContext = {
    traceId: match[1] as string,
    spanId: match[2] as string,
    traceFlags: Number.parseInt(match[3] as string, 16) & 1,
    isRemote: true,
    ...(typeof tracestate === 'string' && tracestate !== '' ? { traceState: createTraceState(tracestate) } : {}),
  };
  return isSpanContextValid(spanContext) ? spanContext : undefined;
}

/** At most this many links per span (the SDK's default limit is 128): one per distinct creation context. */
export const MAX_EVENT_LINKS = 32;

/**
 * Links from a handling span to the spans that appended `events` (OpenTelemetry's messaging
 * conventions: a consumer links to the messages' creation contexts rather than joining their traces,
 * which a replay months later would stretch). Events of one append share a context: one link.
 */
export function linksToEvents(events: readonly Recorded[]): Link[] {
  const links: Link[] = [];
  let seen: Set<string> | undefined;
  for (const event of events) {
    const spanContext = eventSpanContext(event.metadata);
    if (!spanContext) continue;
    seen ??= new Set();
    if (seen.has(spanContext.spanId)) continue;
    seen.add(spanContext.spanId);
    links.push({ context: spanContext });
    if (links.length === MAX_EVENT_LINKS) break;
  }
  return links;
}

/** Adds an `exception` event (OpenTelemetry's exception conventions) without failing the span. */
export function recordFailure(span: Span, error: unknown, attributes?: Attributes): void {
  const isError = error instanceof Error;
  span.addEvent('exception', {
    'exception.type': isError ? (errorCode(error) ?? error.name) : typeof error,
    'exception.message': isError ? error.message : String(error),
    ...(isError && error.stack !== undefined ? { 'exception.stacktrace': error.stack } : {}),
    ...attributes,
  });
}

/** Records `error` on the span and sets its status to ERROR (the span is not ended). */
export function failSpan(span: Span, thrown: unknown, attributes?: Attributes): void {
  const error = forSpans(thrown);
  recordFailure(span, error, attributes);
  const code = errorCode(error);
  if (code !== undefined) span.setAttribute(TelemetryAttribute.ErrorCode, code);
  span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
}

function errorCode(error: unknown): string | undefined {
  const code = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
  return typeof code === 'string' && code.startsWith('ESKIT_') ? code : undefined;
}

// ---- metrics -------------------------------------------------------------------------------------

export interface Instruments {
  eventsHandled: Counter;
  handlerRetries: Counter;
  deadLetters: Counter;
  leadershipChanges: Counter;
  lockDenied: Counter;
  handoffDuration: Histogram;
  executeTimeouts: Counter;
  workAbandoned: Counter;
  partitionShareShort: Counter;
}

let meterProvider: MeterProvider | undefined;
let current: Instruments | undefined;

/** The instruments of the meter provider registered now (see the module comment for why not cached once). */
export function instruments(): Instruments {
  const provider = metrics.getMeterProvider();
  if (provider !== meterProvider || current === undefined) {
    meterProvider = provider;
    current = createInstruments(provider.getMeter(TELEMETRY_SCOPE, VERSION));
  }
  return current;
}

function createInstruments(meter: Meter): Instruments {
  const lag = meter.createObservableGauge(MetricName.SubscriptionLag, {
    description: 'Events between the store head and the checkpoint of a subscription, as seen by its leader',
    unit: '{event}',
    valueType: ValueType.INT,
  });
  lag.addCallback(async (result) => {
    await Promise.all(
      [...lagSources].map(async (source) => {
        const value = await source.lag().catch(() => undefined);
        if (value !== undefined) result.observe(value, source.attributes);
      }),
    );
  });
  return {
    eventsHandled: meter.createCounter(MetricName.EventsHandled, {
      description: 'Events whose subscription handler succeeded',
      unit: '{event}',
      valueType: ValueType.INT,
    }),
    handlerRetries: meter.createCounter(MetricName.HandlerRetries, {
      description: 'Failed handler, trigger or execute attempts that are retried',
      unit: '{retry}',
      valueType: ValueType.INT,
    }),
    deadLetters: meter.createCounter(MetricName.DeadLetters, {
      description: 'Events or to-do items stored in the dead-letter queue',
      unit: '{letter}',
      valueType: ValueType.INT,
    }),
    leadershipChanges: meter.createCounter(MetricName.LeadershipChanges, {
      description: 'Leadership acquired, lost or released by this node',
      unit: '{change}',
      valueType: ValueType.INT,
    }),
    lockDenied: meter.createCounter(MetricName.LockDenied, {
      description: 'Times this node found the leader lock held elsewhere and stood by',
      unit: '{denial}',
      valueType: ValueType.INT,
    }),
    handoffDuration: meter.createHistogram(MetricName.HandoffDuration, {
      description: 'Time from being refused the lock (or losing the lease) to acquiring it',
      unit: 'ms',
      advice: { explicitBucketBoundaries: [5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 3_600_000] },
    }),
    executeTimeouts: meter.createCounter(MetricName.ExecuteTimeouts, {
      description: 'Automation executes that passed their timeout; each keeps its key busy until it settles',
      unit: '{timeout}',
      valueType: ValueType.INT,
    }),
    workAbandoned: meter.createCounter(MetricName.WorkAbandoned, {
      description: "Work still running when stop()'s drain timeout passed, given up and delivered again later",
      unit: '{abandonment}',
      valueType: ValueType.INT,
    }),
    partitionShareShort: meter.createCounter(MetricName.PartitionShareShort, {
      description: 'Rebalance checks at which this node had held fewer partitions than its share for a while',
      unit: '{check}',
      valueType: ValueType.INT,
    }),
  };
}

/** Something whose lag the gauge reports: a running subscription. */
export interface LagSource {
  readonly attributes: Attributes;
  /** Undefined when there is nothing to report (not leading, store unreachable). */
  lag(): Promise<number | undefined>;
}

const lagSources = new Set<LagSource>();

/** Reports `source` on the lag gauge until the returned function is called. */
export function reportLag(source: LagSource): () => void {
  lagSources.add(source);
  instruments();
  return () => {
    lagSources.delete(source);
  };
}

function packageVersion(): string | undefined {
  try {
    // src/telemetry/ and dist/telemetry/ both sit two levels below the package root.
    const pkg = createRequire(import.meta.url)('../../package.json') as { name?: unknown; version?: unknown };
    return pkg.name === 'eskit' && typeof pkg.version === 'string' ? pkg.version : undefined;
  } catch {
    return undefined;
  }
}
