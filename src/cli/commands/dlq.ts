import type { DeadLetter, DeadLetterStatus } from '../../core/dead-letter.js';
import { CliError, ExitCode, UsageError } from '../errors.js';
import type { CommandContext, CommandSpec } from '../command.js';
import { flag, integerOption, stringOption } from '../command.js';
import { ago, json, plural, table, truncate } from '../format.js';
import { printable, printableLetter } from '../personal-fields.js';
import { assertKnownSource, eventAt, getLetter, handlerLetters, handlerRefusal, isView, leaderNote, letterId, markLetter, openedLetters } from './dlq-shared.js';

function statusOption(context: CommandContext): DeadLetterStatus | undefined {
  const value = stringOption(context.values, 'status');
  if (value === undefined || value === 'dead' || value === 'redrive') return value;
  throw new UsageError(`--status must be "dead" or "redrive", got "${value}"`);
}

const list: CommandSpec = {
  name: 'dlq list',
  summary: 'list dead letters',
  help: `Usage: eskit dlq list [--source <name>] [--status dead|redrive] [--newest] [--limit <n>] [--after <id>] [--json]

Dead letters, oldest first (--newest: newest first): what a subscription, automation or view gave up
on after its last retry.

Options:
  --source <name>   only this subscription's, automation's or view's
  --status <s>      dead (waiting for an operator) or redrive (marked, waiting for the leading node)
  --newest          newest first
  --limit <n>       at most n (default 50)
  --after <id>      the page after this id, in the listing's order (ids grow with time)
  --json            an array of dead letters, as the DeadLetterStore returns them
`,
  options: {
    source: { type: 'string' },
    status: { type: 'string' },
    limit: { type: 'string' },
    after: { type: 'string' },
    newest: { type: 'boolean' },
    json: { type: 'boolean' },
  },
  positionals: { min: 0, max: 0, names: '' },
  async run(context) {
    const source = stringOption(context.values, 'source');
    const status = statusOption(context);
    const limit = integerOption(context.values, 'limit', { min: 1, default: 50 }) as number;
    const after = stringOption(context.values, 'after');
    const afterId = after === undefined ? undefined : letterId(after);
    const db = await context.open();
    if (source !== undefined) await assertKnownSource(db, source);
    // One more than shown: whether there is a next page.
    const newestFirst = flag(context.values, 'newest');
    const page = await openedLetters(db).list({ source, status, limit: limit + 1, afterId, newestFirst });
    // What is still sealed (keys this store cannot read) prints as "[personal]".
    const letters = page.slice(0, limit).map(printableLetter);
    const more = page.length > limit;
    if (flag(context.values, 'json')) {
      context.out(json(letters));
      return ExitCode.Ok;
    }
    const total = await db.deadLetters.count({ source, status });
    if (letters.length === 0) {
      context.out(afterId === undefined ? `No dead letters${source === undefined ? '' : ` of "${source}"`}.\n` : 'No more dead letters.\n');
      return ExitCode.Ok;
    }
    const now = new Date();
    const rows = letters.map((letter) => [
      letter.id,
      letter.source,
      letter.stage,
      letter.status,
      `#${letter.eventPosition} ${letter.eventType}`,
      letter.streamId,
      letter.key === '' ? '-' : truncate(letter.key, 24),
      String(letter.attempts.length),
      ago(letter.createdAt, now),
      truncate(letter.attempts[letter.attempts.length - 1]?.error ?? '', 60),
    ]);
    context.out(table(['ID', 'SOURCE', 'STAGE', 'STATUS', 'EVENT', 'STREAM', 'KEY', 'ATTEMPTS', 'CREATED', 'LAST ERROR'], rows));
    if (more) {
      const last = letters[letters.length - 1] as DeadLetter;
      const filters = `${source === undefined ? '' : ` --source ${source}`}${status === undefined ? '' : ` --status ${status}`}${newestFirst ? ' --newest' : ''}${limit === 50 ? '' : ` --limit ${limit}`}`;
      context.out(`\nShowing ${letters.length} of ${total}. Next page: eskit dlq list --after ${last.id}${filters}\n`);
    }
    return ExitCode.Ok;
  },
};

const show: CommandSpec = {
  name: 'dlq show',
  summary: 'one dead letter: every attempt, its payload and its event',
  help: `Usage: eskit dlq show <id> [--json]

Everything about one dead letter: where it failed (source and stage), its to-do item (key, payload),
every attempt's time and error, and the event it came from. A letter about an event with personal data
is stored sealed with its subjects' keys and shown opened; once a subject was forgotten its payload reads
{"$redacted":true} and its errors "[erased: ...]". The event is shown as stored: its personal fields
print as "[personal]" (the CLI never decrypts events).

Options:
  --json   the dead letter, with the event under "event"
`,
  options: { json: { type: 'boolean' } },
  positionals: { min: 1, max: 1, names: '<id>' },
  async run(context) {
    const id = letterId(context.args[0] as string);
    const db = await context.open();
    // The letter opened (what is still sealed prints as "[personal]"); the event raw, its personal fields as "[personal]".
    const letter = printableLetter(await getLetter(db, id));
    const event = await eventAt(db, letter.eventPosition);
    if (flag(context.values, 'json')) {
      context.out(json({ ...letter, event: event === undefined ? null : { ...event, data: printable(event.data) } }));
      return ExitCode.Ok;
    }
    const stage = { execute: "an automation's side effect for a to-do item", trigger: "an automation's trigger", handler: "a subscription's or view's handler" }[letter.stage];
    const indent = (text: string): string => text.replace(/\n/g, '\n    ');
    let text = `Dead letter ${letter.id}\n`;
    text += `  source    ${letter.source}\n`;
    text += `  stage     ${letter.stage} (${stage})\n`;
    text += `  status    ${letter.status}${letter.status === 'redrive' ? ' (marked; the leading node runs it again)' : ''}\n`;
    if (letter.key !== '') text += `  key       ${letter.key}\n`;
    text += `  event     #${letter.eventPosition} ${letter.eventType} in stream "${letter.streamId}" (id ${letter.eventId})\n`;
    text += `  created   ${letter.createdAt.toISOString()}\n`;
    text += `  updated   ${letter.updatedAt.toISOString()}\n`;
    if (letter.payload !== null) text += `  payload\n    ${indent(JSON.stringify(letter.payload, null, 2))}\n`;
    text += `\nAttempts (${letter.attempts.length}):\n`;
    letter.attempts.forEach((attempt, index) => {
      text += `  ${index + 1}. ${attempt.at.toISOString()}  ${indent(attempt.error)}\n`;
    });
    if (event) {
      text += `\nEvent data:\n    ${indent(JSON.stringify(printable(event.data), null, 2))}\n`;
      if (Object.keys(event.metadata).length > 0) text += `Event metadata:\n    ${indent(JSON.stringify(event.metadata, null, 2))}\n`;
    } else {
      text += `\nThe event at position ${letter.eventPosition} is no longer in the store.\n`;
    }
    text += `\nRun it again: eskit dlq retry ${letter.id}    Drop it: eskit dlq discard ${letter.id}\n`;
    context.out(text);
    return ExitCode.Ok;
  },
};

const retry: CommandSpec = {
  name: 'dlq retry',
  summary: 'mark dead letters for redrive by the leading node',
  help: `Usage: eskit dlq retry <id> [--force]
       eskit dlq retry --all [--source <name>] [--force]

Marks dead letters for redrive (status "redrive"). The CLI does not run side effects itself: the node
leading the automation picks marked letters up at its next poll tick, runs them again (the trigger
again for a trigger letter), removes a letter on success, and on failure puts it back to "dead" with
the new attempts appended. \`eskit dlq list --status redrive\` shows what is still waiting.

Letters of a subscription or a view (stage handler) are refused: only automations run redrives, so
nothing would pick them up. Replay those with \`subscription reset\` or \`view rebuild\` instead.

Options:
  --all             every dead letter (of --source, or of every automation)
  --source <name>   with --all: only this automation's
  --force           mark handler-stage letters too
`,
  options: { all: { type: 'boolean' }, source: { type: 'string' }, force: { type: 'boolean' } },
  positionals: { min: 0, max: 1, names: '<id> | --all' },
  async run(context) {
    const all = flag(context.values, 'all');
    const source = stringOption(context.values, 'source');
    const force = flag(context.values, 'force');
    const idText = context.args[0];
    if (all === (idText !== undefined)) {
      throw new UsageError(all ? 'give a dead letter id or --all, not both' : 'give a dead letter id or --all', { hint: 'See `eskit dlq retry --help`.' });
    }
    if (source !== undefined && !all) throw new UsageError('--source goes with --all', { hint: 'Give an id, or --all --source <name>.' });
    if (!all) {
      const id = letterId(idText as string);
      const db = await context.open();
      const letter = await getLetter(db, id);
      const { alreadyMarked, note } = await markLetter(db, letter, force);
      context.out(`${alreadyMarked ? `Dead letter ${id} is already marked for redrive.` : `Marked dead letter ${id} of "${letter.source}" for redrive.`}\n${note}`);
      return ExitCode.Ok;
    }
    const db = await context.open();
    if (source !== undefined) await assertKnownSource(db, source);
    const counts = (await db.admin.deadLetterCounts()).filter((count) => count.status === 'dead' && (source === undefined || count.source === source));
    const sources = [...new Set(counts.map((count) => count.source))];
    if (sources.length === 0) {
      context.out(`No dead letters to redrive${source === undefined ? '' : ` for "${source}"`}.\n`);
      return ExitCode.Ok;
    }
    let refused: CliError | undefined;
    for (const name of sources) {
      const handlerCount = handlerLetters(counts, name);
      if (handlerCount > 0 && !force) {
        refused = handlerRefusal(name, handlerCount, await isView(db, name));
        context.err(`eskit: skipped "${name}": ${refused.message}.\n`);
        continue;
      }
      const marked = await db.deadLetters.redrive({ source: name });
      context.out(`Marked ${plural(marked, 'dead letter')} of "${name}" for redrive.\n${await leaderNote(db, name)}`);
    }
    if (refused) {
      if (sources.length === 1) throw refused;
      context.err('eskit: some sources were skipped (see above); pass --force to mark them anyway.\n');
      return ExitCode.Failed;
    }
    return ExitCode.Ok;
  },
};

const discard: CommandSpec = {
  name: 'dlq discard',
  summary: 'remove dead letters for good',
  help: `Usage: eskit dlq discard <id>
       eskit dlq discard --all --source <name> --yes

Removes dead letters for good (the events stay in the log). Without --yes, --all only says how many
it would remove and exits with 1.

Options:
  --all             every dead letter of --source (needs --source)
  --source <name>   the subscription, automation or view whose letters to remove
  --yes             confirm --all
`,
  options: { all: { type: 'boolean' }, source: { type: 'string' }, yes: { type: 'boolean' } },
  positionals: { min: 0, max: 1, names: '<id> | --all' },
  async run(context) {
    const all = flag(context.values, 'all');
    const source = stringOption(context.values, 'source');
    const idText = context.args[0];
    if (all === (idText !== undefined)) {
      throw new UsageError(all ? 'give a dead letter id or --all --source <name>, not both' : 'give a dead letter id or --all --source <name>', {
        hint: 'See `eskit dlq discard --help`.',
      });
    }
    if (!all) {
      if (source !== undefined) throw new UsageError('--source goes with --all', { hint: 'Give an id, or --all --source <name> --yes.' });
      const id = letterId(idText as string);
      const db = await context.open();
      const letter = await getLetter(db, id);
      const removed = await db.deadLetters.discard({ id });
      if (removed === 0) throw new CliError(`no dead letter ${id}`, { hint: 'It was settled or discarded meanwhile.' });
      context.out(`Discarded dead letter ${id} of "${letter.source}" (#${letter.eventPosition} ${letter.eventType}).\n`);
      return ExitCode.Ok;
    }
    if (source === undefined) throw new UsageError('--all needs --source <name>', { hint: 'Letters are discarded one source at a time.' });
    const db = await context.open();
    await assertKnownSource(db, source);
    const count = await db.deadLetters.count({ source });
    if (count === 0) {
      context.out(`No dead letters of "${source}".\n`);
      return ExitCode.Ok;
    }
    if (!flag(context.values, 'yes')) {
      throw new CliError(`this would discard ${plural(count, 'dead letter')} of "${source}" for good`, {
        hint: `Add --yes to do it: eskit dlq discard --all --source ${source} --yes`,
      });
    }
    const removed = await db.deadLetters.discard({ source });
    context.out(`Discarded ${plural(removed, 'dead letter')} of "${source}".\n`);
    return ExitCode.Ok;
  },
};

export const dlqCommands: CommandSpec[] = [list, show, retry, discard];
