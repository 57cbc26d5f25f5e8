import { it } from 'node:test';

/** What every store suite's harness gives: fresh storage per test, and how long a test may take. */
export interface StoreHarness<S extends { close(): Promise<void> }> {
  create(): Promise<S>;
  /** Fails a test that runs longer than this (a hung query must fail, not stall CI). Default 60 000. */
  testTimeoutMs?: number;
}

/** `it`, with fresh stores from the harness for each test, closed when it ends whatever happened. */
export function storeTest<S extends { close(): Promise<void> }>(harness: StoreHarness<S>): (name: string, fn: (stores: S) => Promise<void>) => void {
  return (name, fn) => {
    it(name, { timeout: harness.testTimeoutMs ?? 60_000 }, async () => {
      const stores = await harness.create();
      try {
        await fn(stores);
      } finally {
        await stores.close();
      }
    });
  };
}
