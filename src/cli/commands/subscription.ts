import type { ResetOutcome, ResetRefusedError } from '../../core/admin.js';
import { isEskitError } from '../../core/errors.js';
import { describeHolder } from '../database.js';
import type { CliDatabase } from '../database.js';
import { CliError, ExitCode, unknownName, UsageError } from '../errors.js';
import type { CommandSpec } from '../command.js';
import { flag, parseInteger, stringOption } from '../command.js';
import { json } from '../format.js';

/** The admin surface's reset, its refusals in the CLI's words (with what to do). */
async function reset(db: CliDatabase, name: string, position: number, force: boolean): Promise<ResetOutcome> {
  try {
    return await db.admin.resetCheckpoint(name, position, { force });
  } catch (error) {
    if (!isEskitError(error, 'ESKIT_RESET_REFUSED')) throw error;
    const refusal = error as ResetRefusedError;
    if (refusal.reason === 'unknown') throw unknownName('subscription or automation', name, refusal.known);
    if (refusal.reason === 'view') {
      throw new CliError(`"${name}" is a view: its checkpoint belongs to its tables, and moving it would apply events twice or skip them`, {
        hint: `Rebuild it instead: eskit view rebuild ${name}`,
        cause: error,
      });
    }
    const holder = refusal.heldBy === undefined ? 'another node' : describeHolder(refusal.heldBy);
    throw new CliError(`"${name}" is being processed: its lock is held by ${holder}`, {
      hint: 'Stop that node first, or pass --force (the reset fences it out: its next checkpoint write is refused and it starts over from the new position).',
      cause: error,
    });
  }
}

const command: CommandSpec = {
  name: 'subscription reset',
  summary: "move a subscription's or automation's checkpoint",
  help: `Usage: eskit subscription reset <name> --to <position>|head [--force] [--json]

Sets the checkpoint of a subscription or automation, so that it goes on after <position>: lower to
process events again (0: from the beginning), "head" to skip everything up to now.

Refused (exit 1) while a node holds the lock of <name>, naming the holder: stop it first, or pass
--force. Either way the reset is fenced: the lock's fencing token is raised above every one handed out
and the checkpoint takes it, in one transaction, so a node still leading with an older token cannot
write its old position back. Its next checkpoint write is refused; it gives up leadership, takes the
lock again and goes on from the new position (it may still have processed the batch it was in).
On SQLite the lease is also cleared, so the holder notices at its next renewal.

Without leader election (no lock row) nothing can stop a running node from saving over the reset:
stop every node running <name> first. Views are refused: rebuild them instead.

Options:
  --to <position>   a global position (0 = the beginning), or "head"
  --force           reset even while a node holds the lock
  --json            print {name, previous, position, fencingToken, fencing, heldBy}
`,
  options: { to: { type: 'string' }, force: { type: 'boolean' }, json: { type: 'boolean' } },
  positionals: { min: 1, max: 1, names: '<name>' },
  async run(context) {
    const name = context.args[0] as string;
    const to = stringOption(context.values, 'to');
    if (to === undefined) throw new UsageError('--to <position> is required', { hint: 'e.g. --to 0 to process everything again, or --to head to skip to now.' });
    const target = to === 'head' ? undefined : parseInteger(to, '--to');
    const db = await context.open();
    const head = await db.store.headPosition();
    const position = target ?? head;
    if (position > head) {
      throw new CliError(`position ${position} is beyond the head of the log (${head})`, { hint: 'Use a position at or below the head, or --to head.' });
    }
    const outcome = await reset(db, name, position, flag(context.values, 'force'));
    if (flag(context.values, 'json')) {
      context.out(json({ ...outcome, heldBy: outcome.heldBy ?? null, fencingToken: outcome.fencingToken ?? null, previous: outcome.previous ?? null }));
    } else {
      const from = outcome.previous === undefined ? 'no saved position' : String(outcome.previous);
      const token = outcome.fencingToken === undefined ? '' : ` (fencing token ${outcome.fencingToken})`;
      let text = `Reset "${name}" from ${from} to ${position}${token}.\n`;
      if (outcome.heldBy) {
        text += `The node holding its lock, ${describeHolder(outcome.heldBy)}, is fenced out: its next checkpoint write is refused, and it goes on from ${position} after taking the lock again.\n`;
      }
      context.out(text);
    }
    if (outcome.fencing === 'none') {
      context.err(
        `eskit: warning: "${name}" uses no leader election, so a node still running it can save its old position over this reset. Make sure none runs it (or run the reset again after stopping them).\n`,
      );
    }
    return ExitCode.Ok;
  },
};

export const subscriptionCommands: CommandSpec[] = [command];
