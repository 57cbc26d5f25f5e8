import { describeError, EskitError, isEskitError } from '../core/errors.js';

/** What `eskit` exits with. Scripts can rely on these three. */
export const ExitCode = {
  /** The command did what it was asked. */
  Ok: 0,
  /** The operation failed or was refused (database unreachable or not migrated, unknown name, a leader holds the lock, ...). */
  Failed: 1,
  /** The command line was wrong: unknown command or option, a missing or malformed argument. */
  Usage: 2,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/**
 * A failure the CLI reports as one line (`eskit: <message>`), with what to do next, and no stack
 * trace unless `--verbose`.
 */
export class CliError extends EskitError {
  readonly exitCode: ExitCode;
  /** What to do next, printed after the message. */
  readonly hint: string | undefined;

  constructor(message: string, options: { hint?: string; cause?: unknown; exitCode?: ExitCode; code?: string } = {}) {
    super(options.code ?? 'ESKIT_CLI_FAILED', message, { cause: options.cause });
    this.exitCode = options.exitCode ?? ExitCode.Failed;
    this.hint = options.hint;
  }
}

/** The command line itself is wrong (exit code 2). */
export class UsageError extends CliError {
  constructor(message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(message, { ...options, exitCode: ExitCode.Usage, code: 'ESKIT_CLI_USAGE' });
  }
}

/** The one line printed for `error` (without the `eskit: ` prefix). */
export function errorLine(error: unknown): string {
  if (error instanceof CliError) {
    const message = error.message.replace(/[.\s]+$/, '');
    return error.hint === undefined ? `${message}.` : `${message}. ${error.hint}`;
  }
  if (isEskitError(error)) return `${oneLine(error.message)} (${error.code})`;
  return oneLine(describeError(error));
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}

/** "no subscription "x"", listing the names there are. */
export function unknownName(what: string, name: string, known: readonly string[], hint?: string): CliError {
  const list = known.length === 0 ? 'there are none' : `known: ${known.map((n) => `"${n}"`).join(', ')}`;
  return new CliError(`no ${what} "${name}" (${list})`, { hint: hint ?? 'Check the name; `eskit status` lists them all.' });
}

/** What went wrong, without the class name describeError puts in front (for messages that say where already). */
export function messageOf(error: unknown): string {
  if (error instanceof Error && error.message !== '') return error.message;
  return describeError(error);
}
