import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryCompletionStore, MemoryDeadLetterStore } from '../../src/memory/index.js';
import { deadLetterStoreConformance } from '../../src/testing/dead-letter-conformance.js';

deadLetterStoreConformance({
  name: 'memory',
  create: async () => ({ deadLetters: new MemoryDeadLetterStore(), completions: new MemoryCompletionStore(), close: async () => {} }),
});

describe('MemoryDeadLetterStore', () => {
  it('keeps each instance separate', async () => {
    const a = new MemoryDeadLetterStore();
    const b = new MemoryDeadLetterStore();
    await a.add({
      source: 'mailer',
      stage: 'handler',
      key: '',
      payload: null,
      eventId: 'e',
      eventType: 'T',
      eventPosition: 1,
      streamId: 's',
      attempts: [],
    });
    assert.equal(await a.count(), 1);
    assert.equal(await b.count(), 0);
    const c = new MemoryCompletionStore();
    await c.markCompleted('mailer', [{ position: 1, itemId: 'x' }]);
    assert.equal((await new MemoryCompletionStore().completedAfter('mailer', 0)).size, 0);
    assert.equal((await c.completedAfter('mailer', 0)).size, 1);
  });
});
