import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { NewDeadLetter } from '../../src/core/dead-letter.js';
import { ErrorCode, isEskitError } from '../../src/core/errors.js';
import { MemoryCheckpointStore, MemoryCompletionStore, MemoryDeadLetterStore } from '../../src/memory/index.js';
import { deadLetterStoreConformance } from '../../src/testing/dead-letter-conformance.js';

deadLetterStoreConformance({
  name: 'memory',
  create: async () => {
    const checkpoints = new MemoryCheckpointStore();
    return { deadLetters: new MemoryDeadLetterStore({ checkpoints }), checkpoints, close: async () => {} };
  },
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

describe('Memory dead-letter and completion stores: fences', () => {
  const letter: NewDeadLetter = {
    source: 'mailer',
    stage: 'handler',
    key: '',
    payload: null,
    eventId: 'e',
    eventType: 'T',
    eventPosition: 1,
    streamId: 's',
    attempts: [],
  };

  it('check a fence against the MemoryCheckpointStore they were given, not another one', async () => {
    const checkpoints = new MemoryCheckpointStore();
    const elsewhere = new MemoryCheckpointStore();
    await elsewhere.claim('cp', 9);
    const deadLetters = new MemoryDeadLetterStore({ checkpoints });
    const completions = new MemoryCompletionStore({ checkpoints });
    await deadLetters.add(letter, { fence: { checkpoint: 'cp', fencingToken: 1 } });
    await completions.markCompleted('mailer', [{ position: 1, itemId: 'x' }], { fence: { checkpoint: 'cp', fencingToken: 1 } });
    await checkpoints.claim('cp', 2);
    await assert.rejects(deadLetters.add(letter, { fence: { checkpoint: 'cp', fencingToken: 1 } }), (e: unknown) => isEskitError(e, ErrorCode.Fenced));
    await assert.rejects(
      completions.markCompleted('mailer', [{ position: 2, itemId: 'x' }], { fence: { checkpoint: 'cp', fencingToken: 1 } }),
      (e: unknown) => isEskitError(e, ErrorCode.Fenced),
    );
    assert.equal(await deadLetters.count(), 1);
    assert.deepEqual(await completions.completedAfter('mailer', 0), new Set(['1/x']));
  });

  it('without checkpoints a fence cannot be checked: the write is applied, but a malformed fence is still refused', async () => {
    const deadLetters = new MemoryDeadLetterStore();
    const completions = new MemoryCompletionStore();
    const added = await deadLetters.add(letter, { fence: { checkpoint: 'cp', fencingToken: 1 } });
    await deadLetters.redrive({ id: added.id });
    await deadLetters.settleRedrive(added.id, { ok: true }, { fence: { checkpoint: 'cp', fencingToken: 1 } });
    await completions.markCompleted('mailer', [{ position: 1, itemId: 'x' }], { fence: { checkpoint: 'cp', fencingToken: 1 } });
    assert.equal(await deadLetters.count(), 0);
    assert.deepEqual(await completions.completedAfter('mailer', 0), new Set(['1/x']));
    const invalid = (e: unknown): boolean => isEskitError(e, ErrorCode.InvalidArgument);
    await assert.rejects(deadLetters.add(letter, { fence: { checkpoint: '', fencingToken: 1 } }), invalid);
    await assert.rejects(completions.markCompleted('mailer', [{ position: 2, itemId: 'x' }], { fence: { checkpoint: 'cp', fencingToken: -1 } }), invalid);
    assert.equal(await deadLetters.count(), 0);
    assert.deepEqual(await completions.completedAfter('mailer', 0), new Set(['1/x']));
  });

  it('refuse a checkpoints option that is not a MemoryCheckpointStore', () => {
    const invalid = (e: unknown): boolean => isEskitError(e, ErrorCode.InvalidArgument) && /MemoryCheckpointStore/.test((e as Error).message);
    assert.throws(() => new MemoryDeadLetterStore({ checkpoints: {} as MemoryCheckpointStore }), invalid);
    assert.throws(() => new MemoryCompletionStore({ checkpoints: 'cp' as unknown as MemoryCheckpointStore }), invalid);
  });
});
