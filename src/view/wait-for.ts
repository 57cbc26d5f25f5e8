import type { WaitForOptions } from './progress.js';
import type { Waitable } from './types.js';

/**
 * Read your own writes: resolves once `view` reflects every event up to `position` (the `position` an
 * append or `CommandHandler.handle` returned). Wakes on the view's own progress when this process runs
 * it, and reads its checkpoint every `checkpointPollMs` otherwise. Rejects with `TimeoutError`
 * (`ESKIT_TIMEOUT`) after `timeoutMs` (default 5000).
 *
 * ```ts
 * const { position } = await handler.handle(command);
 * await waitFor(cartsView, position, { timeoutMs: 2000 });
 * ```
 */
export function waitFor(view: Waitable, position: number, options?: WaitForOptions): Promise<void> {
  return view.waitFor(position, options);
}
