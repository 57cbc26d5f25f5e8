// The one guard in front of every route (DESIGN "Security"): what is not let through here never
// reaches a handler. Reads (GET, HEAD) need only a Host the dashboard answers to; every other method
// is an action, refused when read-only, and otherwise needing the token, a JSON body and the page's
// own origin.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import { HttpError } from './http.js';

/** Whether `host` (what the server binds to) is reachable from this machine only. */
export function isLoopback(host: string): boolean {
  const bare = host.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  return bare === 'localhost' || bare === '::1' || (isIP(bare) === 4 && bare.startsWith('127.'));
}

/** What a token is compared as: its SHA-256, so that both sides have the same length whatever was sent. */
function digest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

export interface GuardConfig {
  /** Bound to loopback: the Host header must name it (DNS rebinding). */
  loopback: boolean;
  /** The port listened on (known once listening). */
  port: () => number;
  /** The actions token; undefined: read-only. */
  token: string | undefined;
}

export type Verdict = { ok: true; action: boolean } | { ok: false; action: boolean; error: HttpError };

export class Guard {
  readonly #config: GuardConfig;
  readonly #digest: Buffer | undefined;

  constructor(config: GuardConfig) {
    this.#config = config;
    this.#digest = config.token === undefined ? undefined : digest(config.token);
  }

  check(req: IncomingMessage): Verdict {
    const method = req.method ?? 'GET';
    const action = method !== 'GET' && method !== 'HEAD';
    const refuse = (error: HttpError): Verdict => ({ ok: false, action, error });
    const host = req.headers.host ?? '';
    if (this.#config.loopback) {
      const port = this.#config.port();
      const allowed = [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`];
      if (!allowed.includes(host.toLowerCase())) {
        return refuse(new HttpError(421, 'this dashboard answers to 127.0.0.1, localhost and [::1] only', `Open http://127.0.0.1:${port}/.`));
      }
    }
    if (!action) return { ok: true, action };
    if (this.#digest === undefined) {
      return refuse(
        new HttpError(403, 'read-only: start the dashboard with --allow-actions to retry, discard or redrive dead letters and rebuild views', 'eskit dashboard --allow-actions prints the token to use.'),
      );
    }
    const authorization = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    if (authorization === null || !timingSafeEqual(digest(authorization[1] as string), this.#digest)) {
      return refuse(new HttpError(401, 'missing or wrong token', 'Enter the token `eskit dashboard --allow-actions` printed.', { 'WWW-Authenticate': 'Bearer' }));
    }
    const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
    if (type !== 'application/json') return refuse(new HttpError(415, 'actions take a JSON body (Content-Type: application/json)'));
    const origin = req.headers.origin;
    const site = req.headers['sec-fetch-site'];
    // The page's own origin: http://<Host>, or https://<Host> behind a TLS proxy that passes the Host on.
    if (origin === undefined || (origin !== `http://${host}` && origin !== `https://${host}`) || (site !== undefined && site !== 'same-origin')) {
      return refuse(new HttpError(403, 'cross-site request refused: actions come from the dashboard page itself'));
    }
    return { ok: true, action };
  }
}
