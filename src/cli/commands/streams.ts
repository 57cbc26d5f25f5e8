import { ErrorCode, isEskitError } from '../../core/errors.js';
import type { ExpectedVersion } from '../../core/store.js';
import type { CliDatabase } from '../database.js';
import { CliError, ExitCode, UsageError } from '../errors.js';
import type { CommandContext, CommandSpec } from '../command.js';
import { flag, integerOption } from '../command.js';
import { json } from '../format.js';

/** The stream's version, refusing an absent stream with the CLI's words. */
async function currentVersion(db: CliDatabase, stream: string): Promise<number> {
  const version = await db.store.streamVersion(stream);
  if (version === 0) {
    throw new CliError(`no stream "${stream}" (it has no events: never written, or deleted already)`, {
      hint: 'Stream ids are case-sensitive; `eskit events read <stream>` shows a stream, `eskit events tail --from 1 --no-follow` the whole log.',
    });
  }
  return version;
}

function expectedVersion(context: CommandContext): ExpectedVersion {
  return integerOption(context.values, 'expected-version', { min: 1 }) ?? 'any';
}

/** The library's refusals (a conflict, a bound) in the CLI's words. */
async function lifecycleCall<T>(stream: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (isEskitError(error, ErrorCode.Concurrency)) {
      const actual = (error as unknown as { actualVersion: number }).actualVersion;
      throw new CliError(`stream "${stream}" is at version ${actual}, not the --expected-version given`, {
        hint: 'Another writer appended meanwhile: look at the stream again (`eskit events read`) and run the command with its version.',
        cause: error,
      });
    }
    if (isEskitError(error, ErrorCode.StreamNotFound)) {
      throw new CliError(`no stream "${stream}" (it was deleted meanwhile)`, { cause: error });
    }
    throw error;
  }
}

const deleteCommand: CommandSpec = {
  name: 'streams delete',
  summary: 'delete a stream (soft, or --hard)',
  help: `Usage: eskit streams delete <stream> [--hard] [--refuse-appends] [--expected-version <n>] --yes [--json]

Deletes a stream: its events leave every read at once (readAll, subscriptions, views, this CLI), its
snapshots are removed, and a "$stream.deleted" event is appended (views that name it can react). The
stream then reads as absent; the next append starts it again at version 1, unless --refuse-appends.

Soft (the default): the events are kept in deleted_events, out of every read, for an audit or a restore
by hand. --hard removes them for good, with the stream's earlier soft-deleted events.

Without --yes, only says what it would delete and exits with 1.

Options:
  --hard                   remove the events for good
  --refuse-appends         later appends to the stream fail (ESKIT_STREAM_DELETED) instead of restarting it
  --expected-version <n>   delete only if the stream is at version n (else exit 1, nothing deleted)
  --yes                    confirm
  --json                   print {stream, version, hard, appends, position}
`,
  options: {
    hard: { type: 'boolean' },
    'refuse-appends': { type: 'boolean' },
    'expected-version': { type: 'string' },
    yes: { type: 'boolean' },
    json: { type: 'boolean' },
  },
  positionals: { min: 1, max: 1, names: '<stream>' },
  async run(context) {
    const stream = context.args[0] as string;
    const hard = flag(context.values, 'hard');
    const appends = flag(context.values, 'refuse-appends') ? 'refuse' : 'restart';
    const expected = expectedVersion(context);
    const db = await context.open();
    const version = await currentVersion(db, stream);
    const what = `${hard ? 'hard-delete' : 'delete'} stream "${stream}" (at version ${version})`;
    if (!flag(context.values, 'yes')) {
      throw new CliError(`this would ${what}${hard ? ' for good' : ''}`, {
        hint: `Add --yes to do it: eskit streams delete ${stream}${hard ? ' --hard' : ''}${appends === 'refuse' ? ' --refuse-appends' : ''} --expected-version ${version} --yes`,
      });
    }
    const { position } = await lifecycleCall(stream, () => db.store.deleteStream(stream, { hard, appends, expectedVersion: expected }));
    if (flag(context.values, 'json')) {
      context.out(json({ stream, version, hard, appends, position }));
      return ExitCode.Ok;
    }
    const kept = hard ? 'removed for good' : 'kept in deleted_events, out of every read';
    const next = appends === 'refuse' ? 'Appends to it are refused from now on.' : 'The next append starts it again at version 1.';
    context.out(`Deleted stream "${stream}" at version ${version} (its events ${kept}); $stream.deleted at position ${position}. ${next}\n`);
    return ExitCode.Ok;
  },
};

const truncateCommand: CommandSpec = {
  name: 'streams truncate',
  summary: "remove a stream's events before a version",
  help: `Usage: eskit streams truncate <stream> --before <version> [--expected-version <n>] --yes [--json]

Removes the stream's events before <version> for good (2 <= version <= the stream's version: its last
event always stays) and appends a "$stream.truncated" event. Versions do not change and appends go on;
a read of the stream starts at <version>. A decider loading the stream needs a snapshot at or after
<version>: write one first.

Without --yes, only says what it would remove and exits with 1.

Options:
  --before <version>       the first version to keep
  --expected-version <n>   truncate only if the stream is at version n (else exit 1, nothing removed)
  --yes                    confirm
  --json                   print {stream, before, version, position}
`,
  options: { before: { type: 'string' }, 'expected-version': { type: 'string' }, yes: { type: 'boolean' }, json: { type: 'boolean' } },
  positionals: { min: 1, max: 1, names: '<stream>' },
  async run(context) {
    const stream = context.args[0] as string;
    const before = integerOption(context.values, 'before', { min: 1 });
    if (before === undefined) throw new UsageError('--before <version> is required', { hint: 'The first version to keep, e.g. --before 100.' });
    if (before < 2) throw new UsageError('--before must be at least 2', { hint: 'Version 1 is the first event: there is nothing before it to remove.' });
    const expected = expectedVersion(context);
    const db = await context.open();
    const version = await currentVersion(db, stream);
    if (before > version) {
      throw new CliError(`stream "${stream}" is at version ${version}, so --before ${before} would remove its last event`, {
        hint: `Pass --before ${version} or lower (its last event always stays), or delete the stream: eskit streams delete ${stream}`,
      });
    }
    if (!flag(context.values, 'yes')) {
      throw new CliError(`this would remove the events of stream "${stream}" before version ${before} for good (versions 1 to ${before - 1}, or what is left of them)`, {
        hint: `Add --yes to do it: eskit streams truncate ${stream} --before ${before} --expected-version ${version} --yes`,
      });
    }
    const { position } = await lifecycleCall(stream, () => db.store.truncateStream(stream, before, { expectedVersion: expected }));
    if (flag(context.values, 'json')) {
      context.out(json({ stream, before, version, position }));
      return ExitCode.Ok;
    }
    context.out(`Truncated stream "${stream}" before version ${before} (it is at version ${version}); $stream.truncated at position ${position}.\n`);
    return ExitCode.Ok;
  },
};

const archiveCommand: CommandSpec = {
  name: 'streams archive',
  summary: 'move a finished stream to the archive',
  help: `Usage: eskit streams archive <stream> [--expected-version <n>] --yes [--json]

Moves a finished stream's events to the archive (archived_events): they leave every read of the log at
once, its snapshots are removed, a "$stream.archived" event is appended (views that name it can react),
and later appends to the stream are refused. \`eskit events read <stream> --archived\` reads it back.

Without --yes, only says what it would archive and exits with 1.

Options:
  --expected-version <n>   archive only if the stream is at version n (else exit 1, nothing moved)
  --yes                    confirm
  --json                   print {stream, version, position}
`,
  options: { 'expected-version': { type: 'string' }, yes: { type: 'boolean' }, json: { type: 'boolean' } },
  positionals: { min: 1, max: 1, names: '<stream>' },
  async run(context) {
    const stream = context.args[0] as string;
    const expected = expectedVersion(context);
    const db = await context.open();
    const version = await currentVersion(db, stream);
    if (!flag(context.values, 'yes')) {
      throw new CliError(`this would archive stream "${stream}" (at version ${version}): its events leave the log, and appends to it are refused from then on`, {
        hint: `Add --yes to do it: eskit streams archive ${stream} --expected-version ${version} --yes`,
      });
    }
    const { position } = await lifecycleCall(stream, () => db.store.archiveStream(stream, { expectedVersion: expected }));
    if (flag(context.values, 'json')) {
      context.out(json({ stream, version, position }));
      return ExitCode.Ok;
    }
    context.out(`Archived stream "${stream}" at version ${version}; $stream.archived at position ${position}. Read it back with: eskit events read ${stream} --archived\n`);
    return ExitCode.Ok;
  },
};

export const streamCommands: CommandSpec[] = [deleteCommand, truncateCommand, archiveCommand];
