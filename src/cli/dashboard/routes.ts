// The router: the guard first, for every request, then the route. Reads are GET/HEAD; every other
// method is an action (actions.ts), logged whatever its outcome.
import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { eventAt, isLetterId } from '../commands/dlq-shared.js';
import type { CliDatabase } from '../database.js';
import { messageOf } from '../errors.js';
import { printableLetter } from '../personal-fields.js';
import type { DeadLetter, DeadLetterStatus, DeadLetterStore } from '../../core/dead-letter.js';
import { SealedDeadLetterStore } from '../../core/personal/sealed-dead-letters.js';
import type { Recorded } from '../../core/event.js';
import { describeAction, isActionPath, requester, runAction } from './actions.js';
import type { DashboardContext } from './context.js';
import type { Guard } from './guard.js';
import { HttpError, integerParam, sendError, sendJson, setSecurityHeaders } from './http.js';
import { eventView } from './tail.js';
import type { EventView, LetterView } from './types.js';

/** Where the page's files are: the package's assets/dashboard/ (from src/cli/dashboard/ and dist/cli/dashboard/ alike). */
const ASSETS = new URL('../../../assets/dashboard/', import.meta.url);
const ASSET_NAME = /^[a-z0-9][a-z0-9_-]*(\.[a-z0-9_-]+)*\.(html|js|mjs|css|svg|png|ico|json|txt)$/i;
const CONTENT_TYPES: Record<string, string> = {
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  mjs: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
  svg: 'image/svg+xml',
  png: 'image/png',
  ico: 'image/x-icon',
  json: 'application/json; charset=utf-8',
  txt: 'text/plain; charset=utf-8',
};
/** How many events a search looks at: the last ones of the log. */
const SEARCH_WINDOW = 10_000;
const SEARCH_MAX_RESULTS = 500;

export function letterView(letter: DeadLetter): LetterView {
  const shown = printableLetter(letter);
  return {
    ...shown,
    createdAt: shown.createdAt.toISOString(),
    updatedAt: shown.updatedAt.toISOString(),
    attempts: shown.attempts.map(({ at, error }) => ({ at: at.toISOString(), error })),
  };
}

/**
 * The letters as stored, not opened: what a letter about an event with personal data holds sealed (its
 * payload, its error texts, which can quote the data) shows as "[personal]" (printableLetter), as the
 * event's own fields do. `eskit dlq show` opens letters for whoever has the database's credentials;
 * the page needs none (any local user on loopback, anyone on the network off it), so it never shows
 * the plaintext.
 */
function storedLetters(db: CliDatabase): DeadLetterStore {
  return db.deadLetters instanceof SealedDeadLetterStore ? db.deadLetters.inner : db.deadLetters;
}

async function asset(res: ServerResponse, name: string): Promise<void> {
  if (!ASSET_NAME.test(name)) throw new HttpError(404, `no ${name}`);
  let body: Buffer;
  try {
    body = await readFile(new URL(name, ASSETS));
  } catch {
    throw new HttpError(404, `no ${name}`, 'The dashboard page is not installed (assets/dashboard/ is missing from the package).');
  }
  const type = CONTENT_TYPES[name.slice(name.lastIndexOf('.') + 1).toLowerCase()] ?? 'application/octet-stream';
  res.writeHead(200, { 'Content-Type': type, 'Content-Length': body.length });
  res.end(body);
}

function decoded(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw new HttpError(400, 'malformed percent-encoding in the path');
  }
}

async function deadLetters(context: DashboardContext, params: URLSearchParams): Promise<unknown> {
  const source = params.get('source') || undefined;
  const statusText = params.get('status') || undefined;
  if (statusText !== undefined && statusText !== 'dead' && statusText !== 'redrive') throw new HttpError(400, `status must be "dead" or "redrive", got "${statusText}"`);
  const status = statusText as DeadLetterStatus | undefined;
  const after = params.get('after') || undefined;
  if (after !== undefined && !isLetterId(after)) throw new HttpError(400, `after must be a dead letter id, got "${after}"`);
  const limit = integerParam(params, 'limit', 50, 1, 200) as number;
  const order = params.get('order') || 'oldest';
  if (order !== 'oldest' && order !== 'newest') throw new HttpError(400, `order must be "oldest" or "newest", got "${order}"`);
  const page = await storedLetters(context.db).list({ source, status, limit: limit + 1, afterId: after?.toLowerCase(), newestFirst: order === 'newest' });
  const letters = page.slice(0, limit).map(letterView);
  const total = await context.db.deadLetters.count({ source, status });
  return { letters, total, next: page.length > limit ? (letters[letters.length - 1]?.id ?? null) : null };
}

async function deadLetter(context: DashboardContext, id: string): Promise<unknown> {
  if (!isLetterId(id)) throw new HttpError(400, `"${id}" is not a dead letter id (a UUID)`);
  const letter = await storedLetters(context.db).get(id.toLowerCase());
  if (letter === undefined) throw new HttpError(404, `no dead letter ${id}`, 'It may have been redriven successfully or discarded.');
  const event = await eventAt(context.db, letter.eventPosition);
  return { letter: letterView(letter), event: event === undefined ? null : eventView(event) };
}

async function events(context: DashboardContext, params: URLSearchParams): Promise<unknown> {
  const after = integerParam(params, 'after', 0, 0, Number.MAX_SAFE_INTEGER) as number;
  const limit = integerParam(params, 'limit', 100, 1, 500) as number;
  const list: EventView[] = [];
  for await (const event of context.db.store.readAll({ after, limit, raw: true })) list.push(eventView(event));
  return { events: list, head: await context.db.store.headPosition() };
}

async function stream(context: DashboardContext, streamId: string, params: URLSearchParams): Promise<unknown> {
  const from = integerParam(params, 'from', undefined, 1, Number.MAX_SAFE_INTEGER);
  const limit = integerParam(params, 'limit', 500, 1, 500) as number;
  const { store } = context.db;
  const version = await store.streamVersion(streamId);
  const list: EventView[] = [];
  if (version > 0) {
    for await (const event of store.readStream(streamId, { fromVersion: from, limit, raw: true })) list.push(eventView(event));
    return { streamId, version, archived: false, events: list };
  }
  // No events in the log: an archived stream's are in the archive.
  let archivedVersion = 0;
  for await (const event of store.readArchived(streamId, { raw: true })) {
    archivedVersion = Math.max(archivedVersion, event.streamVersion);
    if ((from === undefined || event.streamVersion >= from) && list.length < limit) list.push(eventView(event));
  }
  if (archivedVersion === 0) throw new HttpError(404, `no stream "${streamId}"`, 'Stream ids are case-sensitive.');
  return { streamId, version: archivedVersion, archived: true, events: list };
}

async function search(context: DashboardContext, params: URLSearchParams): Promise<unknown> {
  const given = (['correlation', 'causation', 'id'] as const).filter((name) => (params.get(name) ?? '') !== '');
  if (given.length !== 1) throw new HttpError(400, 'search by exactly one of correlation, causation or id');
  const field = given[0] as 'correlation' | 'causation' | 'id';
  const value = params.get(field) as string;
  const matches = (event: Recorded): boolean =>
    field === 'id' ? event.id === value : field === 'correlation' ? event.metadata.correlationId === value : event.metadata.causationId === value;
  const head = await context.db.store.headPosition();
  const start = Math.max(0, head - SEARCH_WINDOW);
  let after = start;
  let scanned = 0;
  const found: EventView[] = [];
  while (after < head && found.length < SEARCH_MAX_RESULTS) {
    let read = 0;
    for await (const event of context.db.store.readAll({ after, limit: 1000, raw: true })) {
      if (event.position > head) break;
      after = event.position;
      read += 1;
      scanned += 1;
      if (matches(event) && found.length < SEARCH_MAX_RESULTS) found.push(eventView(event));
    }
    if (read === 0) break;
  }
  return { events: found, scanned, from: start + 1 };
}

async function read(context: DashboardContext, req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  const path = url.pathname;
  const params = url.searchParams;
  if (path === '/') return asset(res, 'index.html');
  if (path === '/healthz') return sendJson(res, 200, { ok: true });
  if (path === '/api/state') return sendJson(res, 200, context.state());
  if (path === '/api/live') {
    if (req.method === 'HEAD') {
      res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8' });
      res.end();
      return;
    }
    context.hub.connect(res, [
      ['state', context.state()],
      ['events', context.tail.recent()],
      ['actions', context.log.recent()],
    ]);
    return;
  }
  if (path === '/api/dead-letters') return sendJson(res, 200, await deadLetters(context, params));
  if (/^\/api\/dead-letters\/[^/]+$/.test(path)) return sendJson(res, 200, await deadLetter(context, decoded(path.slice('/api/dead-letters/'.length))));
  if (path === '/api/events') return sendJson(res, 200, await events(context, params));
  if (path.startsWith('/api/streams/') && path.length > '/api/streams/'.length) {
    return sendJson(res, 200, await stream(context, decoded(path.slice('/api/streams/'.length)), params));
  }
  if (path === '/api/search') return sendJson(res, 200, await search(context, params));
  if (path.startsWith('/api/')) throw new HttpError(404, `no API at ${path}`);
  if (/^\/[^/]+$/.test(path)) return asset(res, decoded(path.slice(1)));
  throw new HttpError(404, `no page at ${path}`);
}

/** The paths read with GET and HEAD (read() serves them); an action's path takes POST (isActionPath). */
const READ_PATHS = [/^\/(healthz)?$/, /^\/api\/(state|live|dead-letters|events|search)$/, /^\/api\/dead-letters\/[^/]+$/, /^\/api\/streams\/.+$/, /^\/(?!api\/)[^/]+$/];

/** A request whose path is known but takes other methods: 405 with the ones it takes. */
function wrongMethod(method: string, path: string): HttpError | undefined {
  const allowed = isActionPath(path) ? ['POST'] : READ_PATHS.some((pattern) => pattern.test(path)) ? ['GET', 'HEAD'] : undefined;
  if (allowed === undefined || allowed.includes(method)) return undefined;
  return new HttpError(405, `${path} takes ${allowed.join(' or ')}, not ${method}`, undefined, { Allow: allowed.join(', ') });
}

/** The server's request listener: the guard, then the route; every action attempt logged. */
export function handler(context: DashboardContext, guard: Guard): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    setSecurityHeaders(res);
    const method = req.method ?? 'GET';
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://dashboard.invalid');
    } catch {
      sendError(res, new HttpError(400, 'malformed request URL'));
      return;
    }
    const who = requester(req);
    const verdict = guard.check(req, url.pathname);
    const attempt = verdict.action ? describeAction(method, url.pathname) : undefined;
    if (!verdict.ok) {
      if (attempt) context.log.record(who, attempt.action, attempt.target, 'refused', `${verdict.error.status}: ${verdict.error.message}`);
      // Nothing of a refused request is read: close the connection rather than drain its body.
      if (verdict.action) res.setHeader('Connection', 'close');
      sendError(res, verdict.error);
      return;
    }
    const misfit = wrongMethod(method, url.pathname);
    const work = misfit
      ? Promise.reject(misfit)
      : attempt
        ? runAction(context, req, url.pathname, attempt).then((done) => {
            context.log.record(who, attempt.action, attempt.target, 'ok', done.detail);
            context.sampler.kick();
            sendJson(res, done.status, done.body);
          })
        : read(context, req, res, url);
    work
      .catch((error: unknown) => {
        const refusal = error instanceof HttpError ? error : undefined;
        if (refusal === undefined) context.logger.error({ err: error }, `dashboard: ${method} ${url.pathname} failed`);
        const reply = refusal ?? new HttpError(500, context.scrub(messageOf(error)));
        if (attempt) context.log.record(who, attempt.action, attempt.target, reply.status >= 500 ? 'failed' : 'refused', `${reply.status}: ${reply.message}`);
        if (res.headersSent) res.destroy();
        else sendError(res, reply);
      })
      // Whatever a request does, it must not end the process (the dashboard may run inside an application).
      .catch((error: unknown) => {
        context.logger.error({ err: error }, `dashboard: answering ${method} ${url.pathname} failed`);
        res.destroy();
      });
  };
}
