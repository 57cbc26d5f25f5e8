import { TimeoutError } from './errors.js';

/**
 * Waits for `promise` for at most `ms`, then rejects with a TimeoutError naming `what`. The promise
 * itself is not cancelled (a query on a black-holed connection cannot be): its outcome is ignored.
 * Used where giving up beats waiting for the OS to notice a dead peer (minutes), e.g. while stopping.
 */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(what, ms)), ms);
  });
  // Its rejection, if it comes after the race was decided, must not be reported as unhandled.
  promise.catch(() => undefined);
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/**
 * Waits for `promise` until `signal` fires; then resolves with `abandoned` instead, leaving the promise
 * to settle unobserved (its rejection is swallowed). For work that is given up on, not cancelled.
 */
export function unlessAborted<T, A>(promise: Promise<T>, signal: AbortSignal, abandoned: A): Promise<T | A> {
  if (signal.aborted) {
    promise.catch(() => undefined);
    return Promise.resolve(abandoned);
  }
  return new Promise<T | A>((resolve, reject) => {
    const onAbort = (): void => {
      promise.catch(() => undefined);
      resolve(abandoned);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}
