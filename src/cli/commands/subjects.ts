// eskit subjects forget|allow-new-key: the right to erasure from the command line, through the
// adapter's event store (store.forget, store.allowNewKey), so the CLI erases exactly as the library does.
import type { PersonalData } from '../../core/personal/personal-data.js';
import type { CliDatabase } from '../database.js';
import { CliError, ExitCode, UsageError } from '../errors.js';
import type { CommandContext, CommandSpec } from '../command.js';
import { flag } from '../command.js';
import { json, plural } from '../format.js';

function subjectArgument(context: CommandContext): string {
  const subject = context.args[0] as string;
  if (subject.trim() === '') {
    throw new UsageError('the subject is empty', { hint: "Pass the person's id as their events' `personal.subject` returns it, e.g. eskit subjects forget customer-42." });
  }
  return subject;
}

/** The store's key store; every bundled adapter has one, so its absence is a store older than this CLI. */
function personalDataOf(db: CliDatabase): PersonalData {
  const personal = db.adapter.store.personalData;
  if (personal === undefined) {
    throw new CliError(`the event store of ${db.target.display} has no key store for personal data`, {
      hint: 'This eskit build opens its adapters without one; use an eskit whose adapters keep subject keys.',
    });
  }
  return personal;
}

const forget: CommandSpec = {
  name: 'subjects forget',
  summary: "erase a person's personal data (destroys their keys)",
  help: `Usage: eskit subjects forget <subject> --yes [--json]

Erases the personal data of one data subject (a person, by the id their events' personal.subject
returns): records the erasure, destroys the subject's keys, and appends a "$subject.forgotten" event to
the stream "$subject-<subject>" (views that name it clear their rows). From then on their personal
fields read as the redaction marker {"$redacted":true} everywhere, for good; copies sealed with their
keys (snapshots, dead letters) can no longer be opened; and appends of personal data for them fail
(ESKIT_SUBJECT_FORGOTTEN) until \`eskit subjects allow-new-key <subject>\`.

Idempotent: forgetting a forgotten subject destroys nothing and appends another "$subject.forgotten".
A subject with no personal data yet is fenced all the same: none can be written for them afterwards.
Backups and WAL archives are not reached: see docs/personal-data.md.

Without --yes, only says what it would do and exits with 1.

Options:
  --yes    confirm
  --json   print {subject, keysDestroyed, alreadyForgotten, position}
`,
  options: { yes: { type: 'boolean' }, json: { type: 'boolean' } },
  positionals: { min: 1, max: 1, names: '<subject>' },
  async run(context) {
    const subject = subjectArgument(context);
    const db = await context.open();
    const personal = personalDataOf(db);
    if (!flag(context.values, 'yes')) {
      const forgotten = await personal.keys.isForgotten(subject);
      const what = forgotten
        ? `subject "${subject}" is forgotten already: forgetting it again destroys nothing and appends another $subject.forgotten`
        : `this would forget subject "${subject}" for good: its keys are destroyed, and its personal fields read as redacted from then on`;
      throw new CliError(what, { hint: `Add --yes to do it: eskit subjects forget ${subject} --yes` });
    }
    const result = await db.adapter.store.forget(subject);
    if (flag(context.values, 'json')) {
      const { keysDestroyed, alreadyForgotten, position } = result;
      context.out(json({ subject, keysDestroyed, alreadyForgotten, position }));
      return ExitCode.Ok;
    }
    const done = result.alreadyForgotten
      ? `Subject "${subject}" was forgotten already (${plural(result.keysDestroyed, 'key')} destroyed now)`
      : `Forgot subject "${subject}": ${plural(result.keysDestroyed, 'key')} destroyed`;
    context.out(
      `${done}; $subject.forgotten at position ${result.position}. Its personal fields read as redacted from now on, ` +
        `and appends of personal data for it are refused until \`eskit subjects allow-new-key ${subject}\`.\n`,
    );
    return ExitCode.Ok;
  },
};

const allowNewKey: CommandSpec = {
  name: 'subjects allow-new-key',
  summary: 'let a forgotten person have personal data again',
  help: `Usage: eskit subjects allow-new-key <subject> [--json]

Lets a forgotten data subject have personal data again (they came back, and agreed), under a new key:
appends of personal data for them work again. Their personal data from before the erasure stays
unreadable: the old keys are gone for good. A subject that is not forgotten is left as it is.

Options:
  --json   print {subject, wasForgotten}
`,
  options: { json: { type: 'boolean' } },
  positionals: { min: 1, max: 1, names: '<subject>' },
  async run(context) {
    const subject = subjectArgument(context);
    const db = await context.open();
    const personal = personalDataOf(db);
    const wasForgotten = await personal.keys.isForgotten(subject);
    // Only for a forgotten subject: on any other, allowNewKey would make a key for a subject that may
    // never have personal data (a row for nothing); its first append makes one when needed.
    if (wasForgotten) await db.adapter.store.allowNewKey(subject);
    if (flag(context.values, 'json')) {
      context.out(json({ subject, wasForgotten }));
      return ExitCode.Ok;
    }
    context.out(
      wasForgotten
        ? `Subject "${subject}" may have personal data again, under a new key; its personal data from before the erasure stays unreadable.\n`
        : `Subject "${subject}" is not forgotten: appends of personal data for it work already. Nothing changed.\n`,
    );
    return ExitCode.Ok;
  },
};

export const subjectCommands: CommandSpec[] = [forget, allowNewKey];
