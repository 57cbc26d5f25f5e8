// Gates that red-team tests hold shut to force an interleaving (a side effect, a claim, a write waits
// on one), and the cleanup they need: after each test every gate is opened FIRST, then what the test
// started is stopped, newest first, so that no stop() waits on a gate left shut. node:test runs each
// file in a process of its own, so the lists are per file; call `openGatesThenStopAfterEach()` once at
// the top of a file.
import { afterEach } from 'node:test';

const openers: Array<() => void> = [];
const stoppers: Array<() => Promise<void>> = [];

export function openGatesThenStopAfterEach(): void {
  afterEach(async () => {
    for (const open of openers.splice(0)) open();
    for (const stop of stoppers.splice(0).reverse()) await stop();
  });
}

/** Runs `open` after the test, before anything is stopped (to free what a gate-like promise holds). */
export function openAfterTest(open: () => void): void {
  openers.push(open);
}

/** Runs `stop` after the test, once every gate is open. */
export function stopAfterTest(stop: () => Promise<void>): void {
  stoppers.push(stop);
}

export function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((resolve) => (open = resolve));
  openers.push(open);
  return { wait, open };
}

/** Waits for `wait`, or rejects when `signal` fires (an attempt's: leadership lost, or timed out). */
export function until(wait: Promise<void>, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    signal.addEventListener('abort', () => reject(signal.reason), { once: true });
    void wait.then(resolve);
  });
}
