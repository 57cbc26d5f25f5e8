import { InvalidArgumentError } from './errors.js';

/** Checks a numeric option: a safe integer of at least `minimum` (default 1). */
export function positiveInteger(name: string, value: unknown, minimum = 1): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < minimum) {
    throw new InvalidArgumentError(`${name} must be an integer of at least ${minimum}, got ${String(value)}`);
  }
  return value;
}

/** The longest delay a Node.js timer keeps (about 24.8 days); a longer one fires after 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Checks a duration option that drives a timer: an integer number of milliseconds from `minimum` to
 * MAX_TIMER_MS. Longer would not wait longer: Node.js runs such a timer after 1 ms.
 */
export function milliseconds(name: string, value: unknown, minimum = 1): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < minimum || value > MAX_TIMER_MS) {
    throw new InvalidArgumentError(`${name} must be an integer number of milliseconds from ${minimum} to ${MAX_TIMER_MS} (a Node.js timer's limit), got ${String(value)}`);
  }
  return value;
}
