import { InvalidArgumentError } from './errors.js';

/** Checks a numeric option: a safe integer of at least `minimum` (default 1). */
export function positiveInteger(name: string, value: unknown, minimum = 1): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < minimum) {
    throw new InvalidArgumentError(`${name} must be an integer of at least ${minimum}, got ${String(value)}`);
  }
  return value;
}
