// The one guard in front of every route (DESIGN "Security"): what is not let through here never
// reaches a handler. Reads (GET, HEAD) need a Host the dashboard answers to and, from a browser, to
// come from the page itself (another site may only link to it); every other method is an action,
// refused when read-only, and otherwise needing the token, a JSON body and the page's own origin.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import { HttpError } from './http.js';

/**
 * `host` (an address or name) as a browser writes it in a Host header: an IP address in its canonical
 * form (`127.1` is `127.0.0.1`, `0:0:0:0:0:0:0:1` is `[::1]`), a name in lower case.
 */
function canonicalHost(host: string): string {
  const bare = host.replace(/^\[(.*)\]$/, '$1');
  try {
    return new URL(`http://${bare.includes(':') ? `[${bare}]` : bare}/`).hostname;
  } catch {
    return host.toLowerCase();
  }
}

/** Whether `host` (what the server binds to) is reachable from this machine only, in whatever form it is written. */
export function isLoopback(host: string): boolean {
  const canonical = canonicalHost(host);
  const v4 = /^\[::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})\]$/.exec(canonical);
  // An IPv4-mapped IPv6 address (::ffff:127.0.0.1) is its IPv4 address.
  const [high, low] = v4 ? [parseInt(v4[1] as string, 16), parseInt(v4[2] as string, 16)] : [0, 0];
  const address = v4 ? `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}` : canonical;
  return canonical === 'localhost' || canonical === '[::1]' || (isIP(address) === 4 && address.startsWith('127.'));
}

/** What a token is compared as: its SHA-256, so that both sides have the same length whatever was sent. */
function digest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

export interface GuardConfig {
  /** Bound to loopback: the Host header must name it (DNS rebinding). */
  loopback: boolean;
  /** The address bound to (a loopback one other than 127.0.0.1, say 127.0.0.2, is a name the page is opened by too). */
  host?: string;
  /** The port listened on (known once listening). */
  port: () => number;
  /** The actions token; undefined: read-only. */
  token: string | undefined;
  /** More Host names answered (checked by checkAllowedHosts); any: the Host check applies beyond loopback too. */
  allowedHosts?: readonly string[];
}

const HOST_NAME = /^(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9.-]*[a-z0-9])?)(:\d{1,5})?$/i;

/** The allowed Host names, lower-case; refuses what a Host header never holds (a scheme, a path, spaces). */
export function checkAllowedHosts(names: readonly string[]): string[] {
  return names.map((name) => {
    const trimmed = name.trim().toLowerCase();
    if (!HOST_NAME.test(trimmed)) {
      throw new RangeError(`dashboard: allowed host "${name}" is not a host name as a browser sends it (a name or address, optionally :port; no scheme, no path)`);
    }
    return trimmed;
  });
}

export type Verdict = { ok: true; action: boolean } | { ok: false; action: boolean; error: HttpError };

export class Guard {
  readonly #config: GuardConfig;
  readonly #digest: Buffer | undefined;

  constructor(config: GuardConfig) {
    this.#config = config;
    this.#digest = config.token === undefined ? undefined : digest(config.token);
  }

  /**
   * The Host header values the dashboard answers to: on loopback its own names, with the port (bare on
   * port 80, as browsers send it), and the allowed hosts (one without a port with any port or none).
   */
  #answers(host: string): boolean {
    const port = this.#config.port();
    const names = this.#config.loopback ? ['127.0.0.1', 'localhost', '[::1]'] : [];
    const bound = this.#config.host === undefined ? undefined : canonicalHost(this.#config.host);
    if (bound !== undefined && !names.includes(bound) && (this.#config.loopback || !['0.0.0.0', '[::]'].includes(bound))) names.push(bound);
    const own = names.flatMap((name) => (port === 80 ? [`${name}:${port}`, name] : [`${name}:${port}`]));
    if (own.includes(host)) return true;
    return (this.#config.allowedHosts ?? []).some((allowed) => allowed === host || (!/:\d+$/.test(allowed) && host.replace(/:\d+$/, '') === allowed));
  }

  /** Whether Host headers are checked: on loopback (DNS rebinding), and wherever allowed hosts are given. */
  get checksHost(): boolean {
    return this.#config.loopback || (this.#config.allowedHosts?.length ?? 0) > 0;
  }

  /** `path`: the request's path (the URL's pathname). */
  check(req: IncomingMessage, path = '/'): Verdict {
    const method = req.method ?? 'GET';
    const action = method !== 'GET' && method !== 'HEAD';
    const refuse = (error: HttpError): Verdict => ({ ok: false, action, error });
    const host = req.headers.host ?? '';
    if (this.checksHost && !this.#answers(host.toLowerCase())) {
      const port = this.#config.port();
      const names = [...(this.#config.loopback ? ['127.0.0.1', 'localhost', '[::1]'] : []), ...(this.#config.allowedHosts ?? [])];
      return refuse(new HttpError(421, `this dashboard answers to ${names.join(', ')} only`, this.#config.loopback ? `Open http://127.0.0.1:${port}/, or start it with --allowed-host <name>.` : 'Open it by one of those names.'));
    }
    // Fetch metadata: a browser says which site a request comes from. Another site (or another port of
    // this host, "same-site") may link to the page, and that is all: no read of the API (a request the
    // browser sends with no-cors still makes the server query the database, /api/search scans 10,000
    // events, and any page the operator visits could send thousands), no live connection, no action.
    const site = req.headers['sec-fetch-site'];
    if (site === 'cross-site' || site === 'same-site') {
      const navigation = req.headers['sec-fetch-mode'] === 'navigate' && (req.headers['sec-fetch-dest'] ?? 'document') === 'document';
      if (action || !navigation || path.startsWith('/api/')) {
        return refuse(new HttpError(403, 'cross-site request refused: only the dashboard page itself reads its API or acts', 'Open the dashboard from its own address.'));
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
    // The page's own origin: http://<Host>, or https://<Host> behind a TLS proxy that passes the Host on.
    if (origin === undefined || (origin !== `http://${host}` && origin !== `https://${host}`) || (site !== undefined && site !== 'same-origin')) {
      return refuse(new HttpError(403, 'cross-site request refused: actions come from the dashboard page itself'));
    }
    return { ok: true, action };
  }
}
