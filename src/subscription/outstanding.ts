import type { Attributes } from '@opentelemetry/api';
import { unlessAborted, within } from '../core/deadline.js';
import type { Logger } from '../core/logger.js';
import { instruments } from '../telemetry/telemetry.js';
import type { OutstandingWork } from './types.js';

/** What ending outstanding work at a stop needs of its subscription. */
export interface StoppingWork {
  name: string;
  /** Fires `drainTimeoutMs` after stop(). */
  drainExpired: AbortSignal;
  drainTimeoutMs: number;
  stopCallTimeoutMs: number;
  attributes: Attributes;
  logger: Logger;
}

/**
 * Lets outstanding work settle before the final save, for up to the drain timeout. A lease lost
 * meanwhile, or the timeout passing, turns the wait into an abandonment: what still runs must not go
 * on without the lease, and stop() must end.
 */
export async function drainWork(work: OutstandingWork, ended: AbortSignal, o: StoppingWork): Promise<void> {
  const abandon = (): void => {
    work.end('lost').catch((error: unknown) => {
      o.logger.warn({ subscription: o.name, err: error }, `Subscription "${o.name}": abandoning outstanding work failed`);
    });
  };
  ended.addEventListener('abort', abandon, { once: true });
  try {
    const drained = await unlessAborted(work.end('stopped'), o.drainExpired, 'expired' as const);
    if (drained === 'expired') {
      o.logger.warn(
        { subscription: o.name, drainTimeoutMs: o.drainTimeoutMs },
        `Subscription "${o.name}": work still running ${o.drainTimeoutMs} ms after stop() was abandoned (its signal fired); ` +
          'the checkpoint stays before it, so it runs again under the next leadership',
      );
      instruments().workAbandoned.add(1, o.attributes);
      await work.end('lost');
    }
  } finally {
    ended.removeEventListener('abort', abandon);
  }
}

/** The work's last step after the final save (records what it did not cover); bounded, like every call made while stopping. */
export async function finishWork(work: OutstandingWork, o: StoppingWork): Promise<void> {
  if (!work.finished) return;
  try {
    await within(work.finished(), o.stopCallTimeoutMs, `Subscription "${o.name}": recording finished work while stopping`);
  } catch (error) {
    o.logger.warn({ subscription: o.name, err: error }, `Subscription "${o.name}": recording finished work while stopping failed; it may run again`);
  }
}
