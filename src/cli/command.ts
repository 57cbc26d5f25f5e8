import type { EventRegistry } from '../core/registry.js';
import type { EventShape } from '../core/event.js';
import type { Logger } from '../core/logger.js';
import type { CliDatabase } from './database.js';
import { UsageError } from './errors.js';
import type { ExitCode } from './errors.js';
import type { CliIO } from './io.js';

/** A parseArgs option, as every command declares its own. */
export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
}

export type OptionValues = Record<string, string | boolean | (string | boolean)[] | undefined>;

/** What a command gets to do its work. */
export interface CommandContext {
  io: CliIO;
  values: OptionValues;
  /** The positional arguments after the command words. */
  args: string[];
  verbose: boolean;
  /** For library internals (the event store's LISTEN connection, views): warnings on stderr. */
  logger: Logger;
  cwd: string;
  /** Aborted by SIGINT (real CLI) or the test. */
  signal: AbortSignal;
  out(text: string): void;
  err(text: string): void;
  /** Opens the database from --db/DATABASE_URL and --schema; closed by the runner when the command ends. */
  open(options?: { create?: boolean; requireMigrated?: boolean; registry?: EventRegistry<EventShape> }): Promise<CliDatabase>;
}

export interface CommandSpec {
  /** The command words: 'status', 'dlq list'. */
  name: string;
  /** One line for the command list. */
  summary: string;
  /** The full help text, usage first. */
  help: string;
  options: Record<string, OptionSpec>;
  /** Positional arguments: how many at least and at most. */
  positionals: { min: number; max: number; names: string };
  run(context: CommandContext): Promise<ExitCode>;
}

export function stringOption(values: OptionValues, name: string): string | undefined {
  const value = values[name];
  return typeof value === 'string' ? value : undefined;
}

export function stringsOption(values: OptionValues, name: string): string[] {
  const value = values[name];
  if (value === undefined) return [];
  return (Array.isArray(value) ? value : [value]).filter((v): v is string => typeof v === 'string');
}

export function flag(values: OptionValues, name: string): boolean {
  return values[name] === true;
}

/** A non-negative (or, with min 1, positive) integer option; a usage error otherwise. */
export function integerOption(values: OptionValues, name: string, options: { min?: number; default?: number } = {}): number | undefined {
  const text = stringOption(values, name);
  if (text === undefined) return options.default;
  return parseInteger(text, `--${name}`, options.min ?? 0);
}

export function parseInteger(text: string, what: string, min = 0): number {
  const value = /^\d+$/.test(text.trim()) ? Number(text.trim()) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < min) {
    throw new UsageError(`${what} must be ${min >= 1 ? 'a positive' : 'a non-negative'} integer, got "${text}"`);
  }
  return value;
}
