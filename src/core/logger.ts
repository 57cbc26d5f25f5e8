/**
 * The logging shape eskit writes to: pino's (`logger.warn({ fields }, 'message')`), so a pino or
 * bunyan logger can be passed as it is.
 */
export interface Logger {
  debug(fields: Record<string, unknown>, message: string): void;
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
  error(fields: Record<string, unknown>, message: string): void;
}

export type LogLevel = keyof Logger;
const order: readonly LogLevel[] = ['debug', 'info', 'warn', 'error'];

/** Writes one JSON line per entry to stderr, from `level` up. The default is warnings and errors only. */
export function consoleLogger(level: LogLevel = 'warn'): Logger {
  const min = order.indexOf(level);
  const write = (at: LogLevel) => (fields: Record<string, unknown>, message: string) => {
    if (order.indexOf(at) < min) return;
    process.stderr.write(`${JSON.stringify({ level: at, time: new Date().toISOString(), msg: message, ...fields }, errorReplacer)}\n`);
  };
  return { debug: write('debug'), info: write('info'), warn: write('warn'), error: write('error') };
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

function errorReplacer(_key: string, value: unknown): unknown {
  return value instanceof Error ? { name: value.name, message: value.message, code: (value as { code?: unknown }).code } : value;
}
