import { InvalidArgumentError } from './errors.js';
import { MAX_TIMER_MS } from './validate.js';

/** How often and how patiently to retry. Delays grow exponentially, with full jitter. */
export interface RetryPolicy {
  /** Attempts in all, the first included. */
  maxAttempts: number;
  initialDelayMs: number;
  maxDelayMs: number;
}

export function retryPolicy(overrides: Partial<RetryPolicy> | undefined, defaults: RetryPolicy): RetryPolicy {
  const policy = { ...defaults, ...overrides };
  if (!Number.isInteger(policy.maxAttempts) || policy.maxAttempts < 1) {
    throw new InvalidArgumentError(`retry.maxAttempts must be a positive integer, got ${String(policy.maxAttempts)}`);
  }
  for (const key of ['initialDelayMs', 'maxDelayMs'] as const) {
    const value = policy[key];
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > MAX_TIMER_MS) {
      throw new InvalidArgumentError(`retry.${key} must be a number of milliseconds from 0 to ${MAX_TIMER_MS} (a Node.js timer's limit), got ${String(value)}`);
    }
  }
  return policy;
}

/** The wait before attempt `attempt + 1`, after `attempt` failures (1-based): full jitter. */
export function backoffDelay(policy: RetryPolicy, attempt: number): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** (attempt - 1));
  return Math.random() * ceiling;
}

/** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
