import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { Logger } from '../core/logger.js';
import type { CommandContext, CommandSpec, OptionSpec, OptionValues } from './command.js';
import { stringOption } from './command.js';
import { dashboard } from './commands/dashboard.js';
import { dlqCommands } from './commands/dlq.js';
import { eventCommands } from './commands/events.js';
import { migrate } from './commands/migrate.js';
import { status } from './commands/status.js';
import { streamCommands } from './commands/streams.js';
import { subjectCommands } from './commands/subjects.js';
import { subscriptionCommands } from './commands/subscription.js';
import { viewCommands } from './commands/view.js';
import type { CliDatabase } from './database.js';
import { openDatabase } from './open.js';
import { CliError, errorLine, ExitCode, UsageError } from './errors.js';
import type { CliIO } from './io.js';
import { parseTarget } from './target.js';
import { OPERATIONS_GUIDE } from './docs.js';

export type { CliIO, CliOutput } from './io.js';
export { ExitCode } from './errors.js';

/** Every command, in the order `eskit --help` lists them. */
export const COMMANDS: readonly CommandSpec[] = [migrate, status, dashboard, ...dlqCommands, ...eventCommands, ...streamCommands, ...subjectCommands, ...subscriptionCommands, ...viewCommands];

const GROUPS = [...new Set(COMMANDS.filter((spec) => spec.name.includes(' ')).map((spec) => spec.name.split(' ')[0] as string))];

const GLOBAL_OPTIONS: Record<string, OptionSpec> = {
  db: { type: 'string' },
  schema: { type: 'string' },
  verbose: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
};

const GLOBAL_OPTIONS_HELP = `
Options for every command:
  --db <url>        sqlite:<file> (or just the file's path), or
                    postgres://user:password@host:5432/database (default: $DATABASE_URL)
  --schema <name>   PostgreSQL only: the schema of eskit's tables (default: eskit)
  --verbose         stack traces with errors; the library's info and debug logs
  -h, --help        this help

Exit codes: 0 done; 1 failed or refused; 2 usage error.
`;

function globalHelp(): string {
  const width = Math.max(...COMMANDS.map((spec) => `${spec.name} ${spec.positionals.names}`.trim().length));
  const lines = COMMANDS.map((spec) => `  ${`${spec.name} ${spec.positionals.names}`.trim().padEnd(width)}  ${spec.summary}`);
  return `eskit: operate the event store of an eskit application.

Usage: eskit <command> [options]

Commands:
${lines.join('\n')}

Options for every command:
  --db <url>        sqlite:<file> (or just the file's path), or
                    postgres://user:password@host:5432/database (default: $DATABASE_URL)
  --schema <name>   PostgreSQL only: the schema of eskit's tables (default: eskit)
  --verbose         stack traces with errors; the library's info and debug logs
  -h, --help        help (eskit <command> --help for a command's own options)
  --version         eskit's version

Exit codes:
  0  done
  1  the operation failed or was refused: database unreachable or not migrated, unknown name,
     a leader holds the lock, confirmation missing, ...
  2  usage error: unknown command or option, missing or malformed argument

Errors are one line on stderr ("eskit: <what went wrong>. <what to do>"); --verbose adds the stack.
See ${OPERATIONS_GUIDE} for the details.
`;
}

function groupHelp(group: string): string {
  const specs = COMMANDS.filter((spec) => spec.name.startsWith(`${group} `));
  const width = Math.max(...specs.map((spec) => `${spec.name} ${spec.positionals.names}`.trim().length));
  const lines = specs.map((spec) => `  eskit ${`${spec.name} ${spec.positionals.names}`.trim().padEnd(width)}  ${spec.summary}`);
  return `Usage:\n${lines.join('\n')}\n\nRun \`eskit ${group} <command> --help\` for its options.\n${GLOBAL_OPTIONS_HELP}`;
}

function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** Warnings and errors of the library as `eskit: warning: ...` lines; everything with --verbose. */
function cliLogger(io: CliIO, verbose: boolean): Logger {
  const write = (level: keyof Logger) => (fields: Record<string, unknown>, message: string) => {
    if (!verbose && (level === 'debug' || level === 'info')) return;
    const err = fields.err instanceof Error ? ` (${fields.err.message})` : '';
    io.stderr.write(`eskit: ${level}: ${message}${err}\n`);
  };
  return { debug: write('debug'), info: write('info'), warn: write('warn'), error: write('error') };
}

/** Every option any command takes, so that a first, lenient pass can find the command words. */
function allOptions(): Record<string, OptionSpec> {
  const options: Record<string, OptionSpec> = { ...GLOBAL_OPTIONS };
  for (const spec of COMMANDS) Object.assign(options, spec.options);
  return options;
}

function findCommand(words: readonly string[]): { spec: CommandSpec } | { group: string } {
  const [first, second] = words;
  if (first === undefined) throw new UsageError('no command given', { hint: 'Run `eskit --help` for the list.' });
  const single = COMMANDS.find((spec) => spec.name === first);
  if (single) return { spec: single };
  if (GROUPS.includes(first)) {
    if (second === undefined) return { group: first };
    const spec = COMMANDS.find((candidate) => candidate.name === `${first} ${second}`);
    if (spec) return { spec };
    const choices = COMMANDS.filter((candidate) => candidate.name.startsWith(`${first} `)).map((candidate) => candidate.name.split(' ')[1]);
    throw new UsageError(`unknown command "${first} ${second}" (${first} has: ${choices.join(', ')})`, { hint: `Run \`eskit ${first} --help\`.` });
  }
  throw new UsageError(`unknown command "${first}"`, { hint: 'Run `eskit --help` for the list.' });
}

/** node's parseArgs messages, on one line and without its advice about positionals. */
function parseArgsMessage(error: Error): string {
  const ambiguous = /^Option '(-[^']+)' argument is ambiguous/.exec(error.message);
  if (ambiguous) return `option ${ambiguous[1]} needs a value; for a value that starts with a dash, write ${ambiguous[1]}=<value>`;
  return error.message.replace(/\.?\s*To specify a positional argument.*$/s, '').replace(/\.$/, '').replace(/\s*\n\s*/g, ' ');
}

function parseStrict(argv: readonly string[], spec: CommandSpec): { values: OptionValues; positionals: string[] } {
  try {
    const parsed = parseArgs({ args: [...argv], options: { ...GLOBAL_OPTIONS, ...spec.options }, strict: true, allowPositionals: true });
    return { values: parsed.values as OptionValues, positionals: parsed.positionals };
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')) {
      throw new UsageError(parseArgsMessage(error as Error), { hint: `Run \`eskit ${spec.name} --help\`.` });
    }
    throw error;
  }
}

/**
 * Runs one `eskit` command line (argv without `node` and the script) and returns the exit code.
 * Everything it touches outside comes through `io`, so tests run it in-process. Never throws.
 */
export async function run(argv: readonly string[], io: CliIO): Promise<number> {
  const verbose = argv.includes('--verbose');
  let db: CliDatabase | undefined;
  const out = (text: string): void => void io.stdout.write(text);
  const err = (text: string): void => void io.stderr.write(text);
  try {
    let words: string[];
    let lenient: OptionValues;
    try {
      const parsed = parseArgs({ args: [...argv], options: allOptions(), strict: false, allowPositionals: true });
      words = parsed.positionals;
      lenient = parsed.values as OptionValues;
    } catch (error) {
      throw new UsageError(parseArgsMessage(error as Error), { hint: 'Run `eskit --help`.' });
    }
    if (words.length === 0 && lenient.version === true) {
      out(`${version()}\n`);
      return ExitCode.Ok;
    }
    if (words[0] === 'help') {
      const rest = words.slice(1);
      if (rest.length === 0) {
        out(globalHelp());
        return ExitCode.Ok;
      }
      const found = findCommand(rest);
      out('spec' in found ? found.spec.help + GLOBAL_OPTIONS_HELP : groupHelp(found.group));
      return ExitCode.Ok;
    }
    if (words.length === 0) {
      if (lenient.help === true) {
        out(globalHelp());
        return ExitCode.Ok;
      }
      err(globalHelp());
      throw new UsageError('no command given', { hint: 'Pick one of the commands above.' });
    }
    const found = findCommand(words);
    if (!('spec' in found)) {
      if (lenient.help === true) {
        out(groupHelp(found.group));
        return ExitCode.Ok;
      }
      const choices = COMMANDS.filter((spec) => spec.name.startsWith(`${found.group} `)).map((spec) => spec.name.split(' ')[1]);
      throw new UsageError(`"${found.group}" needs a command: ${choices.join(', ')}`, { hint: `Run \`eskit ${found.group} --help\`.` });
    }
    const { spec } = found;
    if (lenient.help === true) {
      out(spec.help + GLOBAL_OPTIONS_HELP);
      return ExitCode.Ok;
    }
    const { values, positionals } = parseStrict(argv, spec);
    const args = positionals.slice(spec.name.split(' ').length);
    if (args.length < spec.positionals.min) {
      throw new UsageError(`missing ${spec.positionals.names}`, { hint: `Usage: ${spec.help.split('\n')[0]?.replace(/^Usage: /, '')}` });
    }
    if (args.length > spec.positionals.max) {
      throw new UsageError(`unexpected argument "${args[spec.positionals.max]}"`, { hint: `Run \`eskit ${spec.name} --help\`.` });
    }
    const cwd = io.cwd ?? process.cwd();
    const logger = cliLogger(io, verbose);
    const context: CommandContext = {
      io,
      values,
      args,
      verbose,
      logger,
      cwd,
      signal: io.signal ?? new AbortController().signal,
      out,
      err,
      open: async (options = {}) => {
        if (db !== undefined) return db;
        const target = parseTarget(stringOption(values, 'db') ?? io.env.DATABASE_URL, stringOption(values, 'schema'), cwd);
        db = await openDatabase(target, {
          create: options.create ?? false,
          requireMigrated: options.requireMigrated ?? true,
          registry: options.registry,
          logger,
        });
        return db;
      },
    };
    return await spec.run(context);
  } catch (error) {
    const code = error instanceof CliError ? error.exitCode : ExitCode.Failed;
    err(`eskit: ${errorLine(error)}\n`);
    if (verbose) err(`${stackOf(error)}\n`);
    return code;
  } finally {
    if (db !== undefined) {
      await db.close().catch((error: unknown) => {
        if (verbose) err(`eskit: closing the database failed: ${errorLine(error)}\n`);
      });
    }
  }
}

/** The stack, then each cause's, for --verbose. */
function stackOf(error: unknown): string {
  const parts: string[] = [];
  let current: unknown = error;
  for (let depth = 0; current !== undefined && depth < 5; depth++) {
    parts.push(current instanceof Error ? (current.stack ?? `${current.name}: ${current.message}`) : String(current));
    current = current instanceof Error ? current.cause : undefined;
    if (current !== undefined) parts.push('Caused by:');
  }
  return parts.join('\n');
}
