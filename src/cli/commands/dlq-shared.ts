// What `eskit dlq` and the dashboard share about dead letters: the letters opened for an operator,
// the names a source may have, the refusal of handler-stage redrives and who will run a redrive.
import type { DeadLetterCount } from '../../core/admin.js';
import type { DeadLetter, DeadLetterStore } from '../../core/dead-letter.js';
import type { Recorded } from '../../core/event.js';
import { SealedDeadLetterStore } from '../../core/personal/sealed-dead-letters.js';
import type { CliDatabase } from '../database.js';
import { describeHolder } from '../database.js';
import { CliError, unknownName, UsageError } from '../errors.js';
import { plural } from '../format.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Whether `text` has the shape of a dead letter's id (a UUID). */
export function isLetterId(text: string): boolean {
  return UUID.test(text);
}

/** `text` as a dead letter id (lower case); a usage error when it is no UUID. */
export function letterId(text: string): string {
  if (!isLetterId(text)) throw new UsageError(`"${text}" is not a dead letter id (a UUID)`, { hint: '`eskit dlq list` shows the ids.' });
  return text.toLowerCase();
}

/**
 * The dead letters with their sealed payloads and error texts opened (an operator needs the error to
 * act on it); once a subject of the letter's event was forgotten they read as the redaction marker and
 * "[erased: ...]". The events themselves are read raw: their personal fields print as "[personal]".
 */
export function openedLetters(db: CliDatabase): DeadLetterStore {
  // The backends' dead-letter stores open letters already; one given some other way is wrapped here.
  return db.deadLetters instanceof SealedDeadLetterStore ? db.deadLetters : new SealedDeadLetterStore(db.deadLetters, db.adapter.store);
}

/** The letter, opened; a CliError when there is none. */
export async function getLetter(db: CliDatabase, id: string): Promise<DeadLetter> {
  const letter = await openedLetters(db).get(id);
  if (!letter) throw new CliError(`no dead letter ${id}`, { hint: 'It may have been redriven successfully or discarded; `eskit dlq list` shows what is there.' });
  return letter;
}

/** Every name the database knows (checkpoints, locks, views, dead-letter sources, status rows), sorted. */
export async function knownSources(db: CliDatabase): Promise<string[]> {
  const [subscriptions, views, counts, runners] = await Promise.all([db.admin.subscriptions(), db.admin.views(), db.admin.deadLetterCounts(), db.admin.runners.list()]);
  const known = new Set([...subscriptions, ...views, ...runners].map((row) => row.name));
  for (const count of counts) known.add(count.source);
  return [...known].sort();
}

/** Checks --source against the names the database knows. */
export async function assertKnownSource(db: CliDatabase, source: string): Promise<void> {
  const known = await knownSources(db);
  if (!known.includes(source)) throw unknownName('subscription, automation or view', source, known);
}

/** The event at a global position, raw; undefined when it is no longer in the log. */
export async function eventAt(db: CliDatabase, position: number): Promise<Recorded | undefined> {
  for await (const event of db.store.readAll({ after: Math.max(0, position - 1), limit: 1, raw: true })) {
    return event.position === position ? event : undefined;
  }
  return undefined;
}

/**
 * Letters of subscriptions and views (stage 'handler') are not picked up by anything: say so instead
 * of marking them. `force` says how to mark them anyway (an option of the CLI, a field of the dashboard's request).
 */
export function handlerRefusal(source: string, count: number, isView: boolean, force = 'pass --force'): CliError {
  const replay = isView ? `rebuild the view (\`eskit view rebuild ${source}\`)` : `replay with \`eskit subscription reset ${source} --to <position before the event>\``;
  return new CliError(
    `${plural(count, 'dead letter')} of "${source}" failed in a subscription's or view's handler, and only automations run redrives: nothing would pick ${count === 1 ? 'it' : 'them'} up`,
    {
      hint: `Fix the cause, then ${replay} and discard the letters; or ${force} to mark them anyway.`,
    },
  );
}

/** How many of `source`'s letters in `counts` failed in a handler (only a forced redrive marks those). */
export function handlerLetters(counts: readonly DeadLetterCount[], source: string): number {
  return counts.filter((count) => count.source === source && count.stage === 'handler').reduce((sum, count) => sum + count.count, 0);
}

/** What marking one letter for redrive did, and who will run it (leaderNote). */
export interface MarkedLetter {
  marked: number;
  alreadyMarked: boolean;
  note: string;
}

/**
 * Marks one dead letter for redrive by the rules of `eskit dlq retry` (the dashboard's Retry too): one
 * marked already is left as it is; a handler-stage letter is refused (handlerRefusal, `force` saying how
 * to insist) unless `forced`; one that changed while being marked is an error.
 */
export async function markLetter(db: CliDatabase, letter: DeadLetter, forced: boolean, force?: string): Promise<MarkedLetter> {
  if (letter.status === 'redrive') return { marked: 0, alreadyMarked: true, note: await leaderNote(db, letter.source) };
  if (letter.stage === 'handler' && !forced) throw handlerRefusal(letter.source, 1, await isView(db, letter.source), force);
  const marked = await db.deadLetters.redrive({ id: letter.id });
  if (marked === 0) throw new CliError(`dead letter ${letter.id} changed while it was being marked`, { hint: 'Look at it again.' });
  return { marked, alreadyMarked: false, note: await leaderNote(db, letter.source) };
}

export async function isView(db: CliDatabase, name: string): Promise<boolean> {
  return (await db.admin.views()).some((view) => view.name === name);
}

/** Who will run a redrive of `source`'s letters, as one line (ending in a newline). */
export async function leaderNote(db: CliDatabase, source: string): Promise<string> {
  const lease = (await db.admin.locks()).find((row) => row.name === source);
  if (lease === undefined) return `No leader election seen for "${source}": a node running it picks the redrive up at its next poll.\n`;
  if (!lease.held) return `Note: no node leads "${source}" right now; the redrive runs once one does.\n`;
  return `"${source}" is led by ${describeHolder(lease)}, which picks the redrive up at its next poll.\n`;
}
