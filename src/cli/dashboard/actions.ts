// Actions (DESIGN "HTTP API", POST routes): dead letters retried, discarded, redriven by source,
// discarded by source with the count the person confirmed; views rebuilt. Every attempt goes into the
// action log, also those the guard refused.
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { assertKnownSource, handlerLetters, handlerRefusal, isLetterId, isView, leaderNote, markLetter, openedLetters } from '../commands/dlq-shared.js';
import type { MarkedLetter } from '../commands/dlq-shared.js';
import type { RebuildableView } from '../config.js';
import { CliError, messageOf } from '../errors.js';
import { plural } from '../format.js';
import type { Logger } from '../../core/logger.js';
import type { DashboardContext } from './context.js';
import { booleanField, HttpError, readJsonBody, stringField } from './http.js';
import type { ActionLogEntry, RebuildView } from './types.js';

/** How many log entries are kept (and sent to a page on connect). */
const LOG_SIZE = 100;
const FORCE = 'send force: true';

/** Who made a request, for the action log: taken when it comes in. */
export interface Requester {
  headers: IncomingHttpHeaders;
  address: string;
}

export function requester(req: IncomingMessage): Requester {
  return { headers: req.headers, address: req.socket.remoteAddress ?? 'unknown' };
}

/** How many characters of a target or detail the log keeps. */
const TEXT_MAX = 300;

/**
 * `text` clipped, on one line and free of terminal controls: a target comes from the request's path
 * (percent-decoded: any character) and ends up in log lines and on a terminal, where a newline would
 * forge a line and an escape sequence rewrite the screen. Controls (C0, DEL, C1), line and paragraph
 * separators and bidirectional overrides are written as \u escapes.
 */
export function oneLine(text: string): string {
  const clipped = text.length > TEXT_MAX ? `${text.slice(0, TEXT_MAX - 1)}…` : text;
  // eslint-disable-next-line no-control-regex -- exactly what is replaced
  return clipped.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export class ActionLog {
  readonly #entries: ActionLogEntry[] = [];
  #count = 0;

  constructor(private readonly options: { logger: Logger; onAction?: ((entry: ActionLogEntry) => void) | undefined; publish: (entry: ActionLogEntry) => void }) {}

  get count(): number {
    return this.#count;
  }

  recent(): ActionLogEntry[] {
    return [...this.#entries];
  }

  /**
   * `who`: what `requester(req)` took from the request when it came (its socket is gone by the time a
   * request whose client went away, or whose body was refused half-read, is logged).
   */
  record(who: Requester, action: string, target: string, outcome: ActionLogEntry['outcome'], detail: string): void {
    const header = who.headers['x-eskit-operator'];
    // eslint-disable-next-line no-control-regex -- a name is one line of text
    const operator = (Array.isArray(header) ? header[0] : header)?.replace(/[\u0000-\u001f\u007f-\u009f]/g, '').trim().slice(0, 64);
    const entry: ActionLogEntry = {
      at: new Date().toISOString(),
      action: oneLine(action),
      target: oneLine(target),
      outcome,
      detail: oneLine(detail),
      who: { address: who.address, operator: operator === undefined || operator === '' ? null : operator },
    };
    this.#count += 1;
    this.#entries.push(entry);
    // Refused attempts go first when the log is full: anyone (any web page the operator has open) can
    // send them by the thousand, and they must not push the actions that were carried out out of it.
    if (this.#entries.length > LOG_SIZE) {
      const refused = this.#entries.findIndex((candidate) => candidate.outcome === 'refused');
      this.#entries.splice(refused >= 0 ? refused : 0, 1);
    }
    this.options.logger.info({ action: entry }, `dashboard action ${entry.action}${entry.target === '' ? '' : ` ${entry.target}`}: ${outcome} (${entry.detail})`);
    try {
      this.options.onAction?.(entry);
    } catch (error) {
      this.options.logger.error({ err: error }, 'dashboard: onAction threw');
    }
    this.options.publish(entry);
  }
}

/** The rebuilds started from this dashboard: the last per view, its progress, and a way to stop them all. */
export class Rebuilds {
  readonly #views: ReadonlyMap<string, RebuildableView>;
  readonly #last = new Map<string, RebuildView>();
  readonly #running = new Map<string, { controller: AbortController; done: Promise<void> }>();
  #closed = false;

  constructor(
    views: readonly RebuildableView[],
    private readonly options: { scrub: (text: string) => string; onEnd: () => void },
  ) {
    this.#views = new Map(views.map((view) => [view.name, view]));
  }

  names(): string[] {
    return [...this.#views.keys()].sort();
  }

  list(): RebuildView[] {
    return [...this.#last.values()].map((rebuild) => ({ ...rebuild }));
  }

  start(name: string, fresh: boolean): void {
    const view = this.#views.get(name);
    if (view === undefined) {
      const known = this.names();
      throw new HttpError(404, `no view "${name}" in the config (${known.length === 0 ? 'it has none' : `it has: ${known.join(', ')}`})`, 'Start the dashboard with --config <file> naming the view.');
    }
    // An action whose body was read as close() began: a rebuild started now would run on a database
    // the caller is about to close, with nothing left to stop it.
    if (this.#closed) throw new HttpError(503, 'the dashboard is closing', 'Start it again to rebuild.');
    if (this.#running.has(name)) throw new HttpError(409, `a rebuild of "${name}" runs already`, 'Wait for it to end (its progress bar).');
    const rebuild: RebuildView = { view: name, state: 'running', done: 0, total: 0, startedAt: new Date().toISOString(), finishedAt: null, error: null, result: null };
    this.#last.set(name, rebuild);
    const controller = new AbortController();
    const done = view
      .rebuild({ fresh, signal: controller.signal, onProgress: ({ done: count, total }) => Object.assign(rebuild, { done: count, total }) })
      .then(
        (result) => Object.assign(rebuild, { state: 'done', done: result.events, total: Math.max(rebuild.total, result.events), result: { events: result.events, position: result.position, generation: result.generation } }),
        (error: unknown) => Object.assign(rebuild, { state: 'failed', error: this.options.scrub(controller.signal.aborted ? 'stopped: the dashboard was closed' : messageOf(error)) }),
      )
      .then(() => {
        rebuild.finishedAt = new Date().toISOString();
        this.#running.delete(name);
        this.options.onEnd();
      });
    this.#running.set(name, { controller, done });
  }

  /**
   * Stops the running rebuilds (their shadow tables are dropped) and waits for them, `waitMs` at most:
   * a rebuild stuck in a query of a database that hangs must not hold up a close (as the sampler's).
   */
  async close(waitMs = 2000): Promise<void> {
    this.#closed = true;
    const running = [...this.#running.values()];
    for (const { controller } of running) controller.abort();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(running.map(({ done }) => done)), new Promise<void>((resolve) => (timer = setTimeout(resolve, waitMs).unref()))]);
    clearTimeout(timer);
  }
}

/** What an action route answers: its status and body, and a few words for the log. */
interface Done {
  status: number;
  body: unknown;
  detail: string;
}

const LETTER_ACTION = /^\/api\/dead-letters\/([^/]+)\/(retry|discard)$/;
const VIEW_ACTION = /^\/api\/views\/([^/]+)\/rebuild$/;

/** Whether `path` is an action's (whatever the method it was asked with). */
export function isActionPath(path: string): boolean {
  return LETTER_ACTION.test(path) || VIEW_ACTION.test(path) || path === '/api/dead-letters/redrive' || path === '/api/dead-letters/discard';
}

/** Which action a request is, from its method and path (also for requests the guard refused). */
export function describeAction(method: string, path: string): { action: string; target: string } {
  const letter = LETTER_ACTION.exec(path);
  if (method === 'POST' && letter) return { action: letter[2] as string, target: safeDecode(letter[1] as string) };
  if (method === 'POST' && path === '/api/dead-letters/redrive') return { action: 'redrive', target: '' };
  if (method === 'POST' && path === '/api/dead-letters/discard') return { action: 'discard-all', target: '' };
  const view = VIEW_ACTION.exec(path);
  if (method === 'POST' && view) return { action: 'rebuild', target: safeDecode(view[1] as string) };
  return { action: `${method} ${path.slice(0, 200)}`, target: '' };
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

function letterIdOf(text: string): string {
  if (!isLetterId(text)) throw new HttpError(404, `no dead letter ${text}`, 'Dead letter ids are UUIDs.');
  return text.toLowerCase();
}

/** A refusal of the CLI (handler stage, a letter that changed), as a 409 in the same words. */
function conflict(error: CliError): HttpError {
  return new HttpError(409, error.message, error.hint);
}

async function retry(context: DashboardContext, id: string, body: Record<string, unknown>): Promise<Done> {
  const force = booleanField(body, 'force');
  const { db } = context;
  const letter = await openedLetters(db).get(id);
  if (letter === undefined) throw new HttpError(404, `no dead letter ${id}`, 'It may have been redriven successfully or discarded.');
  let outcome: MarkedLetter;
  try {
    outcome = await markLetter(db, letter, force, FORCE);
  } catch (error) {
    if (error instanceof CliError) throw conflict(error);
    throw error;
  }
  const { marked, alreadyMarked, note } = outcome;
  if (alreadyMarked) return { status: 200, body: { marked, note: `Dead letter ${id} is already marked for redrive. ${note.trim()}` }, detail: 'already marked' };
  return { status: 200, body: { marked, note: note.trim() }, detail: `marked for redrive (source ${letter.source}${force ? ', forced' : ''})` };
}

async function discard(context: DashboardContext, id: string): Promise<Done> {
  const removed = await context.db.deadLetters.discard({ id });
  if (removed === 0) throw new HttpError(404, `no dead letter ${id}`, 'It was settled or discarded meanwhile.');
  return { status: 200, body: { removed }, detail: 'discarded' };
}

async function knownSource(context: DashboardContext, source: string): Promise<void> {
  try {
    await assertKnownSource(context.db, source);
  } catch (error) {
    if (error instanceof CliError) throw new HttpError(404, error.message, error.hint);
    throw error;
  }
}

async function redrive(context: DashboardContext, body: Record<string, unknown>): Promise<Done> {
  const source = stringField(body, 'source');
  const force = booleanField(body, 'force');
  const { db } = context;
  await knownSource(context, source);
  const expected = optionalCount(body, 'expected');
  const counts = (await db.admin.deadLetterCounts()).filter((count) => count.status === 'dead' && count.source === source);
  const dead = counts.reduce((sum, count) => sum + count.count, 0);
  // What the person confirmed: the page sends the count it showed; a letter stored since is not redriven unseen.
  if (expected !== undefined && dead !== expected) {
    throw new HttpError(409, `"${source}" has ${plural(dead, 'dead letter')} waiting, not ${expected}`, 'The list changed: look again and confirm the new count.');
  }
  if (counts.length === 0) return { status: 200, body: { marked: 0, note: `No dead letters to redrive for "${source}".` }, detail: 'nothing to redrive' };
  const handlerCount = handlerLetters(counts, source);
  if (handlerCount > 0 && !force) throw conflict(handlerRefusal(source, handlerCount, await isView(db, source), FORCE));
  const marked = await db.deadLetters.redrive({ source });
  const note = (await leaderNote(db, source)).trim();
  return { status: 200, body: { marked, note }, detail: `marked ${plural(marked, 'dead letter')} for redrive${force ? ' (forced)' : ''}` };
}

/** `expected`: the number of letters the person confirmed, when given. */
function optionalCount(body: Record<string, unknown>, name: string): number | undefined {
  const value = body[name];
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) throw new HttpError(400, `"${name}" must be the number of letters you confirmed`);
  return value;
}

async function discardAll(context: DashboardContext, body: Record<string, unknown>): Promise<Done> {
  const source = stringField(body, 'source');
  const expected = optionalCount(body, 'expected');
  if (expected === undefined) throw new HttpError(400, '"expected" must be the number of letters you confirmed');
  await knownSource(context, source);
  const count = await context.db.deadLetters.count({ source });
  if (count !== expected) {
    throw new HttpError(409, `"${source}" has ${plural(count, 'dead letter')}, not ${expected}`, 'The list changed: look again and confirm the new count.');
  }
  const removed = count === 0 ? 0 : await context.db.deadLetters.discard({ source });
  return { status: 200, body: { removed }, detail: `discarded ${plural(removed, 'dead letter')}` };
}

/**
 * Runs the action `attempt` names (describeAction; the guard let it through, the router checked the
 * method); 404 for a path that is none. A source given in the body becomes the attempt's target as
 * soon as it is read (for the log).
 */
export async function runAction(context: DashboardContext, req: IncomingMessage, path: string, attempt: { action: string; target: string }): Promise<Done> {
  const body = await readJsonBody(req);
  const { action, target } = attempt;
  if ((action === 'redrive' || action === 'discard-all') && typeof body.source === 'string') attempt.target = body.source.slice(0, 200);
  switch (action) {
    case 'retry':
      return retry(context, letterIdOf(target), body);
    case 'discard':
      return discard(context, letterIdOf(target));
    case 'redrive':
      return redrive(context, body);
    case 'discard-all':
      return discardAll(context, body);
    case 'rebuild':
      context.rebuilds.start(target, booleanField(body, 'fresh'));
      return { status: 202, body: { started: true }, detail: `rebuild started${booleanField(body, 'fresh') ? ' (fresh)' : ''}` };
    default:
      throw new HttpError(404, `no action at ${path}`);
  }
}
