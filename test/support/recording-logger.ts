// A logger that keeps every line as text, errors with their message, stack and cause: what the
// personal-data tests search for plaintext that must not be logged.
import type { Logger } from '../../src/core/logger.js';

export function recordingLogger(): { logger: Logger; text: () => string } {
  const lines: string[] = [];
  const describe = (value: unknown): unknown =>
    value instanceof Error ? { name: value.name, message: value.message, stack: value.stack, cause: describe(value.cause) } : value;
  const log = (fields: Record<string, unknown>, message: string): void => {
    lines.push(JSON.stringify(Object.fromEntries(Object.entries(fields).map(([key, value]) => [key, describe(value)]))), message);
  };
  return { logger: { debug: log, info: log, warn: log, error: log }, text: () => lines.join('\n') };
}
