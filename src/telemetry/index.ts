// The public names of eskit's spans, metrics and attributes; the helpers stay internal.
export { MetricName, SpanName, TELEMETRY_SCOPE, TelemetryAttribute } from './telemetry.js';
