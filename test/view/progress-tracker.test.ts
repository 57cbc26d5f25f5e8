// The checkpoint poll runs only while someone waits or follows: none after the last waiter got its
// answer (a view stopped and its store closed right after a waitFor must not be read again).
import assert from 'node:assert/strict';
import { describe, it, mock } from 'node:test';
import { silentLogger } from '../../src/core/logger.js';
import { ProgressTracker } from '../../src/view/progress.js';

describe('ProgressTracker', () => {
  it('no poll after the last waiter was answered; polls again for the next one', async () => {
    mock.timers.enable({ apis: ['setTimeout'] });
    try {
      let reads = 0;
      const tracker = new ProgressTracker({ view: 'v', read: async () => (reads += 1, 0), pollIntervalMs: 100, logger: silentLogger });
      const waiting = tracker.wait(5, { describe: () => 'v', timeoutMs: 10_000 });
      tracker.advance(5);
      await waiting;
      mock.timers.tick(1000);
      await Promise.resolve();
      assert.equal(reads, 0, 'answered by advance: the checkpoint is never read');
      const again = tracker.wait(6, { describe: () => 'v', timeoutMs: 10_000 });
      mock.timers.tick(100);
      await Promise.resolve();
      assert.equal(reads, 1, 'a waiter brings the poll back');
      tracker.advance(6);
      await again;
    } finally {
      mock.timers.reset();
    }
  });
});
