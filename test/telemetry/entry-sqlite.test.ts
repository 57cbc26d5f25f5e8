// Appends through `eskit/sqlite` alone are traced: this file loads no other entry (node --test runs each
// file in its own process), so only the adapter entry can have filled core's append hook.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { trace } from '@opentelemetry/api';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { SqliteEventStore } from '../../src/sqlite/index.js';
import { removeDatabase, tempDatabasePath } from '../sqlite/helpers.js';

describe('telemetry through eskit/sqlite alone', () => {
  const spans = new InMemorySpanExporter();
  assert.ok(trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] })));
  const path = tempDatabasePath('telemetry-entry');
  after(() => removeDatabase(path));

  it('an append is an eskit.append span whose context its events carry', async () => {
    const store = new SqliteEventStore({ path });
    try {
      const { events } = await store.append('s-1', [{ type: 'Noted', data: { n: 1 } }]);
      const [span] = spans.getFinishedSpans().filter((s) => s.name === 'eskit.append');
      assert.ok(span, 'an eskit.append span');
      assert.equal(span.attributes['eskit.stream.id'], 's-1');
      assert.equal(events[0]?.metadata.traceparent, `00-${span.spanContext().traceId}-${span.spanContext().spanId}-01`);
    } finally {
      await store.close();
    }
  });
});
