// The public names of eskit's spans, metrics and attributes; the helpers stay internal.
export { eventSpanContext, MetricName, SpanName, TELEMETRY_SCOPE, TelemetryAttribute, TRACE_METADATA } from './telemetry.js';
