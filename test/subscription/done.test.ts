// Issue 15: an application learns that a runner failed for good from one promise, `done`, and a
// failure nobody handles ends the process with a non-zero exit code instead of leaving it running idle.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { afterEach, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Automation, MemoryView, Subscription, isEskitError, memory, silentLogger } from '../../src/index.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const failing = { retry: { maxAttempts: 1 }, logger: silentLogger };

describe('done', () => {
  it('rejects with the failure of a subscription, an automation and a view; resolves on stop()', async () => {
    const backend = memory();
    await backend.store.append('s', [{ type: 'Happened', data: {} }]);
    const subscription = new Subscription({ ...failing, backend, name: 'sub', handler: () => Promise.reject(new Error('handler')) });
    const view = new MemoryView({
      ...failing,
      store: backend.store,
      name: 'view',
      initialState: 0,
      evolve: () => {
        throw new Error('evolve');
      },
    });
    for (const runner of [subscription, view]) {
      cleanups.push(() => runner.stop());
      await runner.start();
      await assert.rejects(runner.done, (error: unknown) => isEskitError(error, 'ESKIT_HANDLER_FAILED'));
    }
    // An automation fails for good when its store is gone.
    const closed = memory();
    await closed.close();
    const automation = new Automation({ ...failing, backend: closed, name: 'auto', trigger: () => undefined, execute: () => undefined });
    cleanups.push(() => automation.stop());
    await automation.start();
    await assert.rejects(automation.done, (error: unknown) => isEskitError(error, 'ESKIT_STORE_CLOSED'));

    const fine = new Subscription({ backend, name: 'fine', logger: silentLogger, handler: () => undefined });
    await fine.start();
    await fine.stop();
    await fine.done;
  });

  it('a failure nobody handles ends the process with a non-zero exit code', async () => {
    const script = fileURLToPath(new URL('./fixtures/failing-app.ts', import.meta.url));
    const child = spawn(process.execPath, ['--import', 'tsx', script], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const code = await new Promise<number | null>((resolve) => child.once('close', (exit) => resolve(exit)));
    assert.notEqual(code, 0, 'the process ended with a failure code');
    assert.match(stderr, /ESKIT_HANDLER_FAILED|this handler always fails/);
  });
});
