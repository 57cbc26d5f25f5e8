import type { Tracer } from '@opentelemetry/api';
import { setAppendHook } from '../core/hooks.js';
import type { AppendCall, AppendObserver, AppendOutcome, MetadataStamp } from '../core/hooks.js';
import type { Metadata } from '../core/event.js';
import { activeTracer, inSpan, SpanName, TelemetryAttribute, TRACE_METADATA, traceMetadata } from './telemetry.js';

/**
 * Loading this module instruments what core does (core cannot import telemetry, DESIGN.md §1): every
 * append on an EventStoreBase becomes an `eskit.append` span, and its events carry the span's trace
 * context. The package's entry files import it for this effect, so an application gets the spans
 * whichever entry (`eskit`, `eskit/postgres`, `eskit/sqlite`) it loads.
 */

function traceAppend<R extends AppendOutcome>(tracer: Tracer, call: AppendCall, append: (stamp: MetadataStamp | undefined) => Promise<R>): Promise<R> {
  const { streamId, events, expectedVersion } = call;
  const attributes = {
    [TelemetryAttribute.StreamId]: String(streamId),
    [TelemetryAttribute.EventCount]: Array.isArray(events) ? events.length : 0,
    [TelemetryAttribute.ExpectedVersion]: typeof expectedVersion === 'number' ? expectedVersion : String(expectedVersion),
  };
  return inSpan(tracer, SpanName.Append, { attributes }, async (span) => {
    const result = await append(stampWith(traceMetadata(span)));
    span.setAttribute(TelemetryAttribute.Position, result.position);
    span.setAttribute(TelemetryAttribute.StreamVersion, result.nextExpectedVersion);
    return result;
  });
}

function stampWith(trace: Metadata | undefined): MetadataStamp | undefined {
  if (trace === undefined) return undefined;
  return (metadata) => {
    // A caller's trace context wins (an event forwarded from elsewhere keeps its origin), and a lone
    // `tracestate` of theirs is not paired with our `traceparent`.
    if (metadata[TRACE_METADATA.traceparent] === undefined && metadata[TRACE_METADATA.tracestate] === undefined) {
      Object.assign(metadata, trace);
    }
  };
}

setAppendHook((): AppendObserver | undefined => {
  // Without a tracer provider this is one check: no span, attributes or closure per append.
  const tracer = activeTracer();
  return tracer === undefined ? undefined : (call, append) => traceAppend(tracer, call, append);
});
