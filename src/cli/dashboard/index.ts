// The live operator dashboard's server (`eskit dashboard`, openDashboard): plain node:http, one
// guard in front of every route, one sample of the database per interval fanned out to every page
// over server-sent events. See DESIGN (issue 21) for the API the page (assets/dashboard/) uses.
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ActionLog, Rebuilds } from './actions.js';
import type { DashboardContext } from './context.js';
import { checkAllowedHosts, Guard, isLoopback } from './guard.js';
import { handler } from './routes.js';
import { Sampler } from './sampler.js';
import { LiveHub } from './sse.js';
import { LogTail } from './tail.js';
import type { DashboardOptions, DashboardState, RunningDashboard } from './types.js';

export type {
  ActionLogEntry,
  DashboardEntry,
  DashboardOptions,
  DashboardState,
  DashboardWork,
  EventView,
  LetterView,
  RebuildView,
  RunningDashboard,
  ViewTable,
} from './types.js';
export { isLoopback } from './guard.js';

export const DEFAULT_PORT = 4300;
export const DEFAULT_HOST = '127.0.0.1';
/** What a dashboard bound beyond loopback says when it starts. */
export const EXPOSED_WARNING = 'the dashboard is reachable from other machines; anyone who can reach it can read event data';

/** A new actions token: 32 random bytes, base64url (43 characters). */
export function newToken(): string {
  return randomBytes(32).toString('base64url');
}

function positiveInteger(name: string, value: number, min: number): number {
  if (!Number.isSafeInteger(value) || value < min) throw new RangeError(`dashboard: ${name} must be an integer of at least ${min}, got ${String(value)}`);
  return value;
}

/** A secret (the database password) replaced in a text, so that no error text carries it to the page. */
function scrubber(connectionString: string | undefined): (text: string) => string {
  if (connectionString === undefined) return (text) => text;
  const secrets = new Set<string>();
  try {
    const url = new URL(connectionString);
    if (url.password !== '') {
      secrets.add(url.password);
      secrets.add(decodeURIComponent(url.password));
    }
    const query = url.searchParams.get('password');
    if (query) secrets.add(query);
  } catch {
    // Not a URL: nothing to find in it.
  }
  secrets.add(connectionString);
  const list = [...secrets].filter((secret) => secret.length > 0).sort((a, b) => b.length - a.length);
  return (text) => list.reduce((result, secret) => result.split(secret).join('***'), text);
}

/**
 * Starts the dashboard on `options.database` (which it never closes) and resolves once it listens.
 * Read-only unless `allowActions`; bound to 127.0.0.1:4300 unless told otherwise.
 */
export async function startDashboard(options: DashboardOptions): Promise<RunningDashboard> {
  const { database: db, logger } = options;
  const host = options.host ?? DEFAULT_HOST;
  const intervalMs = positiveInteger('intervalMs', options.intervalMs ?? 1000, 10);
  const historySamples = positiveInteger('historySamples', options.historySamples ?? 180, 1);
  const requestedPort = options.port ?? DEFAULT_PORT;
  if (!Number.isSafeInteger(requestedPort) || requestedPort < 0 || requestedPort > 65535) throw new RangeError(`dashboard: port must be 0 to 65535, got ${String(requestedPort)}`);
  const allowActions = options.allowActions ?? false;
  const token = allowActions ? (options.token ?? (process.env.ESKIT_DASHBOARD_TOKEN || undefined) ?? newToken()) : undefined;
  // What a page can send: Authorization: Bearer <token> takes visible ASCII without spaces (a token of
  // spaces would pass a length check and match nothing; one with a space or an accent never arrives).
  if (token !== undefined && !/^[\x21-\x7e]{16,}$/.test(token)) {
    throw new RangeError('dashboard: the actions token must be at least 16 characters, visible ASCII without spaces');
  }
  const loopback = isLoopback(host);
  const allowedHosts = checkAllowedHosts(options.allowedHosts ?? []);
  const scrub = scrubber(db.target.kind === 'postgres' ? db.target.connectionString : undefined);

  const hub = new LiveHub();
  const tail = new LogTail(db.store);
  let port = requestedPort;
  const context: DashboardContext = {
    db,
    logger,
    hub,
    tail,
    scrub,
    log: new ActionLog({ logger, onAction: options.onAction, publish: (entry) => hub.broadcast('actions', [entry]) }),
    rebuilds: new Rebuilds(options.views ?? [], { scrub, onEnd: () => context.sampler.kick() }),
    sampler: new Sampler(db, {
      intervalMs,
      historySamples,
      logger,
      tail,
      scrub,
      onSample: (_state, events) => {
        hub.broadcast('state', context.state());
        if (events.length > 0) hub.broadcast('events', events);
      },
    }),
    state: (): DashboardState => ({
      ...context.sampler.state,
      readOnly: !allowActions,
      intervalMs,
      rebuilds: context.rebuilds.list(),
      rebuildable: context.rebuilds.names(),
      actionsLog: context.log.count,
    }),
  };
  const guard = new Guard({ loopback, host, port: () => port, token, allowedHosts });
  const server = createServer(handler(context, guard));
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    const failed = (error: Error): void => {
      // Nothing started: the live connections' heartbeat goes too (a program may try another port).
      hub.close();
      reject(error);
    };
    server.once('error', failed);
    server.listen(requestedPort, host, () => {
      server.off('error', failed);
      resolve();
    });
  });
  port = (server.address() as AddressInfo).port;
  server.on('error', (error) => logger.error({ err: error }, 'dashboard: the server failed'));
  if (!loopback) {
    const hosts = allowedHosts.length > 0 ? `; it answers to ${allowedHosts.join(', ')} only` : '; it answers to any Host header (pass --allowed-host <name> to answer only to the names it is reached by, against DNS rebinding)';
    logger.warn({ host, port }, `${EXPOSED_WARNING} (bound to ${host}:${port})${hosts}`);
  }
  context.sampler.start();
  const shownHost = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  const url = `http://${shownHost}:${port}/`;
  logger.info({ url, readOnly: !allowActions }, `dashboard: serving ${db.target.display} at ${url}${allowActions ? ' (actions allowed)' : ' (read-only)'}`);

  let closing: Promise<void> | undefined;
  return {
    url,
    token,
    host,
    port,
    close() {
      closing ??= (async () => {
        const stopped = context.sampler.stop();
        hub.close();
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeAllConnections();
        await Promise.all([stopped, context.rebuilds.close(), closed]);
      })();
      return closing;
    },
  };
}
