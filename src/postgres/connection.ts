import type pg from 'pg';
import { ConnectionError, InvalidArgumentError, StoreClosedError } from '../core/errors.js';
import type { ConnectionTarget } from '../core/errors.js';

/**
 * How long a pool eskit creates (from `connectionString`) waits for a new connection before it gives
 * up. Without it, a server that accepts TCP and never answers (frozen, or a proxy in front of a dead
 * one) holds every call until the operating system gives up, which can take minutes.
 */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

/**
 * The settings of a pool eskit creates itself. TCP keepalive lets the operating system notice a
 * connection whose peer vanished (a lost host, a cut network) while it sits idle in the pool.
 */
export function ownPoolConfig(connectionString: string, max?: number): pg.PoolConfig {
  return { connectionString, connectionTimeoutMillis: DEFAULT_CONNECT_TIMEOUT_MS, keepAlive: true, ...(max === undefined ? {} : { max }) };
}

/**
 * Refuses what the driver would misread: it takes any string without a scheme as a path below a
 * host named "base", so "garbage" becomes `getaddrinfo ENOTFOUND base`. The string is never echoed,
 * as it may hold a password.
 */
export function checkConnectionString(value: unknown): asserts value is string {
  if (typeof value !== 'string' || value === '') {
    throw new InvalidArgumentError('connectionString must be a non-empty string such as postgres://user@host:5432/db');
  }
  if (!/^(postgres(ql)?:\/\/|socket:|\/)/i.test(value.trim())) {
    throw new InvalidArgumentError(
      'connectionString must be a PostgreSQL URL such as postgres://user:password@host:5432/database (or socket:/path/to/dir?db=name); ' +
        'the string given is not one (not shown here, as it may hold a password).',
    );
  }
}

/** Where connections made with `config` go, as the driver resolves it (URL, then fields, then PG* variables, then defaults). */
export function connectionTarget(config: pg.ClientConfig | pg.PoolConfig): ConnectionTarget {
  let fromUrl: Partial<ConnectionTarget> & { user?: string } = {};
  if (typeof config.connectionString === 'string') {
    try {
      const url = new URL(config.connectionString);
      const param = (name: string): string | undefined => url.searchParams.get(name) ?? undefined;
      fromUrl = {
        host: param('host') ?? (url.hostname === '' ? undefined : decodeURIComponent(url.hostname)),
        port: url.port === '' ? undefined : Number(url.port),
        database: param('db') ?? (url.pathname.length > 1 ? decodeURIComponent(url.pathname.slice(1)) : undefined),
        user: url.username === '' ? undefined : decodeURIComponent(url.username),
      };
    } catch {
      // Not a URL (a socket directory): the fields and defaults below still say something useful.
    }
  }
  const env = process.env;
  const user = fromUrl.user ?? config.user ?? env.PGUSER ?? env.USER;
  const port = fromUrl.port ?? (config.port === undefined ? undefined : Number(config.port)) ?? (env.PGPORT ? Number(env.PGPORT) : undefined);
  return {
    host: fromUrl.host ?? config.host ?? env.PGHOST ?? 'localhost',
    port: port !== undefined && Number.isFinite(port) ? port : 5432,
    database: fromUrl.database ?? config.database ?? env.PGDATABASE ?? user ?? '',
  };
}

interface Diagnosis {
  /** What went wrong, in words. */
  reason: string;
  /** Whether a connection was being made (or one made earlier broke, or a pool had none free). */
  phase: 'connect' | 'lost' | 'pool';
  /** What to check. */
  check: string;
  transient: boolean;
}

const CHECK_SERVER = 'Check that the server is running and that host and port are right.';
const CHECK_NETWORK = 'Check host, port and the network between them (firewall, VPN); a server that accepts connections but never answers is frozen or overloaded.';

function diagnose(error: unknown, config: pg.PoolConfig | pg.ClientConfig): Diagnosis | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const { code, message } = error as { code?: unknown; message?: unknown };
  const text = typeof message === 'string' ? message : '';
  switch (code) {
    case 'ECONNREFUSED':
      return { phase: 'connect', reason: 'the connection was refused', check: CHECK_SERVER, transient: true };
    // A container's host name disappears from DNS while it restarts: waiting can heal this too.
    case 'ENOTFOUND':
      return { phase: 'connect', reason: 'the host name was not found', check: 'Check the host name.', transient: true };
    case 'EAI_AGAIN':
      return { phase: 'connect', reason: 'the host name could not be looked up (DNS did not answer)', check: 'Check the host name and DNS.', transient: true };
    case 'ETIMEDOUT':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EHOSTDOWN':
    case 'ENETDOWN':
      return { phase: 'connect', reason: `the host could not be reached (${text || code})`, check: CHECK_NETWORK, transient: true };
    case 'ECONNRESET':
    case 'EPIPE':
    case 'ECONNABORTED':
      return { phase: 'lost', reason: `the connection was lost (${text || code})`, check: CHECK_SERVER, transient: true };
    case '28P01':
    case '28000':
      return { phase: 'connect', reason: `the login was refused (${text})`, check: 'Check the user and password, and that pg_hba.conf admits this client.', transient: false };
    case '3D000':
      return { phase: 'connect', reason: text || 'the database does not exist', check: 'Check the database name.', transient: false };
    case '53300':
      return { phase: 'connect', reason: `the server has no connection slots left (${text})`, check: 'Raise max_connections, or use fewer or smaller pools.', transient: true };
    case '57P01':
    case '57P02':
      return { phase: 'lost', reason: `the server ended the session (${text})`, check: 'Wait for it to restart, or check why it ended the session.', transient: true };
    case '57P03':
      return { phase: 'connect', reason: `the server is starting up or shutting down (${text})`, check: 'Wait for it, or check why it restarts.', transient: true };
  }
  if (typeof code === 'string' && code.startsWith('08')) return { phase: 'lost', reason: `the connection failed (${text})`, check: CHECK_SERVER, transient: true };
  // pg's and pg-pool's own errors have no code, only these messages.
  const ms = config.connectionTimeoutMillis ? ` within ${config.connectionTimeoutMillis} ms` : '';
  // pg-pool says this when its connections all stayed busy; a slow new connection gets the next one.
  if (/timeout exceeded when trying to connect/i.test(text)) {
    return { phase: 'pool', reason: `no connection of the pool became free${ms}`, check: 'Give the pool more connections (max), or find what holds them.', transient: true };
  }
  if (/Connection terminated due to connection timeout|^timeout expired$/i.test(text)) {
    return { phase: 'connect', reason: `the server did not answer${ms}`, check: CHECK_NETWORK, transient: true };
  }
  if (/^Connection terminated/i.test(text)) return { phase: 'lost', reason: `the connection was lost (${text})`, check: CHECK_SERVER, transient: true };
  if (/does not support SSL/i.test(text)) {
    return { phase: 'connect', reason: text, check: 'Turn SSL off for this server (sslmode in the URL, or the ssl option).', transient: false };
  }
  return undefined;
}

/**
 * A connection failure as a ConnectionError naming host, port and database (never the password);
 * a pool that was ended as ESKIT_STORE_CLOSED, as retrying cannot heal it; anything else undefined.
 */
export function connectionFailure(error: unknown, via: pg.Pool | pg.ClientBase | undefined): Error | undefined {
  if (via === undefined) return undefined;
  if (isPool(via) && via.ending) return new StoreClosedError('connection pool (pg.Pool) of this store');
  return connectionErrorFor(error, isPool(via) ? via.options : clientConfig(via));
}

/** A connection failure of a connection made with `config` as a ConnectionError; anything else undefined. */
export function connectionErrorFor(error: unknown, config: pg.ClientConfig | pg.PoolConfig): ConnectionError | undefined {
  const diagnosis = diagnose(error, config);
  if (!diagnosis) return undefined;
  const target = connectionTarget(config);
  const where = `PostgreSQL at host ${target.host}, port ${target.port}, database "${target.database}"`;
  const what = { connect: `Could not connect to ${where}`, lost: `The connection to ${where} failed`, pool: `Could not get a connection to ${where}` }[diagnosis.phase];
  return new ConnectionError(
    target,
    `${what}: ${diagnosis.reason}. ${diagnosis.check}`,
    { cause: error, transient: diagnosis.transient },
  );
}

function isPool(via: pg.Pool | pg.ClientBase): via is pg.Pool {
  return typeof (via as { totalCount?: unknown }).totalCount === 'number' && typeof (via as { options?: unknown }).options === 'object';
}

// A pg.Client keeps the host, port and database it resolved.
function clientConfig(client: pg.ClientBase): pg.ClientConfig {
  const { host, port, database } = client as Partial<Record<'host' | 'database', string>> & { port?: number };
  return { host, port, database };
}

/**
 * Hears the 'error' event of a client taken from a pool, until the returned function is called (just
 * before it is given back). A checked-out client whose connection dies emits 'error', and an unheard
 * one ends the process; the statement running on it fails with the same error, which is what the
 * caller handles. The pool hears its idle clients itself.
 */
export function hearWhileCheckedOut(client: pg.PoolClient): () => void {
  const heard = (): void => undefined;
  client.on('error', heard);
  return () => {
    client.removeListener('error', heard);
  };
}
