import { after, afterEach, before, describe } from 'node:test';
import { appendTests } from './conformance/append.js';
import { archiveTests } from './conformance/archive.js';
import { categoryTests } from './conformance/categories.js';
import { concurrencyTests } from './conformance/concurrency.js';
import { concurrentWriterTests } from './conformance/concurrent-writers.js';
import { SuiteContext } from './conformance/context.js';
import type { ConformanceHarness } from './conformance/context.js';
import { expectedVersionTests } from './conformance/expected-version.js';
import { failureTests } from './conformance/failures.js';
import { groupCommitTests } from './conformance/group-commit.js';
import { lifecycleReaderTests } from './conformance/lifecycle-readers.js';
import { lifecycleTests } from './conformance/lifecycle.js';
import { payloadTests } from './conformance/payloads.js';
import { readTests } from './conformance/reads.js';
import { registryTests } from './conformance/registry.js';
import { evolutionTests } from './conformance/evolution.js';

export type { ConformanceHarness, CreateStoreOptions, LifecycleHooks } from './conformance/context.js';

/**
 * Registers the EventStore conformance tests (node:test `describe`/`it`) for one adapter. Every adapter
 * in eskit runs it, and so can third-party ones:
 *
 * ```ts
 * // test/my-adapter.test.ts, run with `node --import tsx --test`
 * eventStoreConformance({
 *   name: 'my-adapter',
 *   createStore: (options) => MyStore.open({ ...options, database: freshDatabase() }),
 *   corruptEvent: (store, position) => writeInvalidJsonAt(store, position),
 * });
 * ```
 *
 * Each test calls `createStore` once, closes every store it opened when it ends, then calls `dispose`.
 * Tests within the suite run one after another; the concurrency tests race appends inside one test.
 */
export function eventStoreConformance(harness: ConformanceHarness): void {
  describe(`EventStore conformance: ${harness.name}`, () => {
    const ctx = new SuiteContext(harness);
    if (harness.setup) before(() => harness.setup?.());
    afterEach(() => ctx.cleanup());
    if (harness.teardown) after(() => harness.teardown?.());

    appendTests(ctx);
    expectedVersionTests(ctx);
    concurrencyTests(ctx);
    groupCommitTests(ctx);
    concurrentWriterTests(ctx);
    readTests(ctx);
    categoryTests(ctx);
    payloadTests(ctx);
    registryTests(ctx);
    evolutionTests(ctx);
    failureTests(ctx);
    lifecycleTests(ctx);
    lifecycleReaderTests(ctx);
    archiveTests(ctx);
  });
}
