import type { ProgressReader } from './progress.js';

/**
 * Waits until the view's checkpoint reached the head of the log and the mailer's the last order
 * (its checkpoint never passes a mail that was not sent or dead-lettered). Rejects if `failure` does,
 * or after `timeoutMs`, saying what was left.
 */
export async function waitForWork(reader: ProgressReader, lastBought: number, failure: Promise<never>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const progress = await Promise.race([reader.read(), failure]);
    if (progress.viewAt >= progress.head && progress.mailerAt >= lastBought) return;
    if (Date.now() > deadline) {
      throw new Error(
        `the background work did not finish within ${timeoutMs / 1000} s: the view is at event ${progress.viewAt} of ${progress.head}, ` +
          `the mailer at ${progress.mailerAt} of ${lastBought}`,
      );
    }
    await Promise.race([new Promise((resolve) => setTimeout(resolve, 50)), failure]);
  }
}
