// What the dashboard tests start and talk to: a dashboard on the CLI tests' small application
// (test/cli/world.ts), plain node:http requests (Node's fetch drops a custom Host header) and an SSE
// client that keeps every event it got, so that a test waits for what it expects instead of sleeping.
import { request } from 'node:http';
import type { IncomingHttpHeaders } from 'node:http';
import type { CliDatabase } from '../../src/cli/database.js';
import { openDatabase } from '../../src/cli/open.js';
import { parseTarget } from '../../src/cli/target.js';
import { loadConfig } from '../../src/cli/config-loader.js';
import { loadConfigViews } from '../../src/cli/config-views.js';
import type { EventShape } from '../../src/core/event.js';
import type { EventRegistry } from '../../src/core/registry.js';
import { silentLogger } from '../../src/core/logger.js';
import type { Logger } from '../../src/core/logger.js';
import { startDashboard } from '../../src/cli/dashboard/index.js';
import type { DashboardOptions, RunningDashboard } from '../../src/cli/dashboard/index.js';
import { waitUntil } from '../../src/testing/wait.js';
import type { World } from '../cli/world.js';

export interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  /** The body parsed as JSON (undefined when it is not JSON). */
  json: unknown;
}

export interface RequestOptions {
  method?: string;
  headers?: Record<string, string>;
  /** Sent as is (a string) or as JSON (anything else). */
  body?: unknown;
}

/** One HTTP request to 127.0.0.1:`port`; the Host header is whatever `headers.host` says, else the real one. */
export function send(port: number, path: string, options: RequestOptions = {}): Promise<Reply> {
  const body = options.body === undefined ? undefined : typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: options.method ?? 'GET', headers: options.headers ?? {} }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => {
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

export interface SseEvent {
  event: string;
  data: unknown;
}

export interface SseClient {
  status: number;
  headers: IncomingHttpHeaders;
  /** Everything received, as text. */
  readonly text: string;
  readonly events: SseEvent[];
  /** Resolves with the first event (from the start) that matches. */
  waitFor(event: string, match?: (data: unknown) => boolean, timeoutMs?: number): Promise<unknown>;
  /** Resolves when the server ended the response. */
  ended: Promise<void>;
  close(): void;
}

/** Opens `GET /api/live` and parses its events as they come. */
export function openLive(port: number, headers: Record<string, string> = {}): Promise<SseClient> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/api/live', headers: { accept: 'text/event-stream', ...headers } }, (res) => {
      let text = '';
      let pending = '';
      const events: SseEvent[] = [];
      let endResolve: () => void = () => undefined;
      const ended = new Promise<void>((done) => (endResolve = done));
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        text += chunk;
        pending += chunk;
        let split: number;
        while ((split = pending.indexOf('\n\n')) >= 0) {
          const block = pending.slice(0, split);
          pending = pending.slice(split + 2);
          let event = 'message';
          const data: string[] = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) event = line.slice(7);
            else if (line.startsWith('data: ')) data.push(line.slice(6));
          }
          if (data.length > 0) events.push({ event, data: JSON.parse(data.join('\n')) as unknown });
        }
      });
      res.on('end', endResolve);
      res.on('close', endResolve);
      res.on('error', endResolve);
      resolve({
        status: res.statusCode ?? 0,
        headers: res.headers,
        get text() {
          return text;
        },
        events,
        async waitFor(event, match = () => true, timeoutMs = 5000) {
          const found = await waitUntil(() => events.find((candidate) => candidate.event === event && match(candidate.data)), {
            timeoutMs,
            message: `an SSE "${event}" event that matches`,
          });
          return found.data;
        },
        ended,
        close: () => req.destroy(),
      });
    });
    req.on('error', reject);
    req.end();
  });
}

/** The world's database, opened as `eskit` opens it (through --db; `url` replaces the database URL). */
export function openOn(world: World, url?: string, options: { registry?: EventRegistry<EventShape>; logger?: Logger } = {}): Promise<CliDatabase> {
  const target = parseTarget(url ?? (world.db[1] as string), world.db[3], process.cwd());
  return openDatabase(target, { requireMigrated: true, registry: options.registry, logger: options.logger ?? silentLogger });
}

export interface TestDashboard {
  dashboard: RunningDashboard;
  database: CliDatabase;
  port: number;
  /** Headers a page sends with an action: token, JSON, same origin, operator. */
  actionHeaders(extra?: Record<string, string>): Record<string, string>;
  close(): Promise<void>;
}

/**
 * A dashboard on the world's database, opened as `eskit dashboard` opens it (through --db), on a free
 * port, sampling every 50 ms. `url` replaces the database URL (a PostgreSQL URL with a password);
 * `config` is a config file whose views it may rebuild.
 */
export async function dashboardOn(
  world: World,
  options: Partial<Omit<DashboardOptions, 'database' | 'logger'>> & { url?: string; config?: string; logger?: Logger } = {},
): Promise<TestDashboard> {
  const logger = options.logger ?? silentLogger;
  const config = options.config === undefined ? undefined : await loadConfig(options.config, process.cwd());
  const database = await openOn(world, options.url, { registry: config?.config.registry, logger });
  try {
    const views = config === undefined ? options.views : await loadConfigViews(config, database, logger);
    const dashboard = await startDashboard({ intervalMs: 50, port: 0, ...options, views, database, logger });
    return {
      dashboard,
      database,
      port: dashboard.port,
      actionHeaders: (extra = {}) => ({
        authorization: `Bearer ${dashboard.token ?? ''}`,
        'content-type': 'application/json',
        origin: `http://127.0.0.1:${dashboard.port}`,
        'sec-fetch-site': 'same-origin',
        'x-eskit-operator': 'ada',
        ...extra,
      }),
      async close() {
        await dashboard.close();
        await database.close();
      },
    };
  } catch (error) {
    await database.close();
    throw error;
  }
}
