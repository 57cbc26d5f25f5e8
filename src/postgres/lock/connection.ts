import { LockUnavailableError } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import * as pg from '../driver.js';
import { migrateOnClient } from '../migrations.js';
import { HEARTBEAT, sessionSetup } from './sql.js';

/** One lock session: the advisory locks it holds live exactly as long as it does. */
export interface Connection {
  client: pg.Client;
  pid: number;
  dead: boolean;
  /** The last statement queued: statements run one after another (pg deprecates queueing on a client). */
  tail: Promise<unknown>;
  /** Names whose waiter lock this session holds (shared): releasers on other nodes see it and NOTIFY. */
  readonly waitingFor: Set<string>;
  /** Set once the client is told to end: settles when its socket has closed. */
  ended?: Promise<void>;
  /** performance.now() when the last statement was sent: the server saw this session busy then. */
  lastSent: number;
  /** performance.now() when the statement in flight (at most one) was sent; undefined when none is. */
  inFlightSince: number | undefined;
}

/** Runs `statement` on the connection after whatever is queued on it; resolves with its rows. */
export function query(connection: Connection, statement: pg.QueryArrayConfig, values: unknown[]): Promise<unknown[][]> {
  const run = connection.tail.then(async () => {
    connection.lastSent = connection.inFlightSince = performance.now();
    try {
      return (await connection.client.query<unknown[]>({ ...statement, values })).rows;
    } finally {
      connection.inFlightSince = undefined;
    }
  });
  connection.tail = run.catch(() => undefined);
  return run;
}

export interface SessionSettings {
  readonly config: pg.ClientConfig;
  readonly schema: string;
  /** The channel releases NOTIFY on, LISTENed to by every session. */
  readonly channel: string;
  readonly applicationName: string;
  readonly sessionTimeoutMs: number;
  readonly durableTokens: boolean;
  readonly autoMigrate: boolean;
  readonly logger: Logger;
}

/** What the session tells the registry, and asks it. */
export interface SessionOwner {
  /** The current connection failed (its client reported an error or its end, or a heartbeat failed). */
  lost(connection: Connection, error: unknown): void;
  /** A release was announced on the channel; `payload` is the released lock's key. */
  notified(payload: string | undefined): void;
  closed(): boolean;
  /** Something is held, awaited, being tried or being released: the connection must stay open. */
  busy(): boolean;
}

/**
 * The lock connection's life cycle: at most one connection at a time, opened on demand (and by one
 * caller when several ask at once), heartbeats while it is open so that the server's idle timeout
 * ends only a frozen holder's session, and a linger before an idle registry closes it.
 */
export class LockSession {
  readonly #settings: SessionSettings;
  readonly #owner: SessionOwner;
  #connection: Connection | undefined;
  #connecting: Promise<Connection> | undefined;
  #migrated = false;
  #everConnected = false;
  #heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  #lingerTimer: ReturnType<typeof setTimeout> | undefined;
  /** When the registry last went idle (nothing held or awaited): the linger timer counts from there. */
  #idleSince = 0;

  constructor(settings: SessionSettings, owner: SessionOwner) {
    this.#settings = settings;
    this.#owner = owner;
  }

  /** The live connection, if one is open. */
  get current(): Connection | undefined {
    return this.#connection;
  }

  /** A connection was open once: a later failure to connect is more likely an outage than wrong settings. */
  get everConnected(): boolean {
    return this.#everConnected;
  }

  get config(): pg.ClientConfig {
    return this.#settings.config;
  }

  connect(): Promise<Connection> {
    if (this.#connection && !this.#connection.dead) return Promise.resolve(this.#connection);
    this.#connecting ??= this.#open().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  /** The connection once any connect in progress has settled (for close). */
  async settled(): Promise<Connection | undefined> {
    return (await this.#connecting?.catch(() => undefined)) ?? this.#connection;
  }

  /**
   * Marks the connection dead; if it was the current one, stops using it, ends it, and returns true
   * (its session is over, and with it every lock it held).
   */
  drop(connection: Connection): boolean {
    const wasCurrent = !connection.dead && connection === this.#connection;
    connection.dead = true;
    if (!wasCurrent) return false;
    this.#connection = undefined;
    clearInterval(this.#heartbeatTimer);
    this.#heartbeatTimer = undefined;
    void this.disconnect(connection);
    return true;
  }

  async disconnect(connection: Connection): Promise<void> {
    connection.dead = true;
    if (this.#connection === connection) {
      this.#connection = undefined;
      clearInterval(this.#heartbeatTimer);
      this.#heartbeatTimer = undefined;
    }
    connection.ended ??= connection.client.end().catch(() => undefined);
    await connection.ended;
  }

  /**
   * Holding and awaiting nothing (the caller checked): close the connection after a while (the
   * heartbeat keeps it alive meanwhile), so that a registry in an idle process holds no server session
   * and no event loop open.
   */
  idle(): void {
    if (!this.#connection) return;
    this.#idleSince = performance.now();
    // One timer for many short leases: it is not cleared by an acquire (a timer per acquire and release
    // was a measurable part of their cost); when it fires it looks at when the registry was last used.
    if (!this.#lingerTimer) this.#armLinger(this.#settings.sessionTimeoutMs);
  }

  stopLinger(): void {
    clearTimeout(this.#lingerTimer);
  }

  async #open(): Promise<Connection> {
    const { config, channel, schema } = this.#settings;
    const client = new pg.Client(config);
    const connection: Connection = { client, pid: 0, dead: false, tail: Promise.resolve(), waitingFor: new Set(), lastSent: 0, inFlightSince: undefined };
    client.on('error', (error) => this.#owner.lost(connection, error));
    client.on('end', () => this.#owner.lost(connection, new Error('the lock connection ended')));
    client.on('notification', (message) => {
      if (message.channel === channel) this.#owner.notified(message.payload);
    });
    try {
      await client.connect();
      if (this.#settings.autoMigrate && !this.#migrated) {
        await migrateOnClient(client, schema);
        this.#migrated = true;
      }
      const results = (await client.query(sessionSetup(this.#settings))) as unknown as pg.QueryResult<{ pid: number }>[];
      connection.pid = Number(results[results.length - 1]?.rows[0]?.pid);
    } catch (error) {
      connection.dead = true;
      await client.end().catch(() => undefined);
      throw error;
    }
    // A plain error: a connection that died at once is worth another try (isTransient).
    if (connection.dead) throw new Error('the lock connection failed right after connecting');
    if (this.#owner.closed()) {
      await this.disconnect(connection);
      throw new LockUnavailableError('The lock registry was closed while connecting.');
    }
    this.#connection = connection;
    this.#everConnected = true;
    connection.lastSent = performance.now();
    this.#startHeartbeat(connection);
    this.#settings.logger.debug({ pid: connection.pid, applicationName: this.#settings.applicationName }, 'Lock connection open');
    return connection;
  }

  #startHeartbeat(connection: Connection): void {
    clearInterval(this.#heartbeatTimer);
    const every = Math.max(1, Math.floor(this.#settings.sessionTimeoutMs / 4));
    this.#heartbeatTimer = setInterval(() => void this.#heartbeat(connection), every);
    // The socket keeps the process alive while it is open; the timer need not.
    this.#heartbeatTimer.unref();
  }

  async #heartbeat(connection: Connection): Promise<void> {
    if (connection.dead || connection !== this.#connection) return;
    const timeout = this.#settings.sessionTimeoutMs;
    // A process stalled longer than the timeout (SIGSTOP, a debugger, a blocked event loop) must assume
    // the server ended its session and a standby took over, before any more of its work runs: judged
    // here, in the first timer after the stall, before any I/O callback. From the last statement SENT,
    // not the last answer read: the server's idle clock restarts with every statement it receives, and
    // a busy event loop runs its timers before it reads the answers already waiting on the socket.
    if (performance.now() - connection.lastSent > timeout) {
      this.#owner.lost(connection, new Error(`nothing was sent on the lock connection for over ${timeout} ms (was this process stalled?)`));
      return;
    }
    try {
      const limit = Math.floor(timeout / 2);
      if (!(await answered(connection, query(connection, HEARTBEAT, []), limit))) {
        this.#owner.lost(connection, new Error(`a statement on the lock connection went unanswered for ${limit} ms`));
      }
    } catch (error) {
      this.#owner.lost(connection, error);
    }
  }

  #armLinger(ms: number): void {
    this.#lingerTimer = setTimeout(() => {
      this.#lingerTimer = undefined;
      const connection = this.#connection;
      // A release in flight re-arms the timer when it is done (its NOTIFY must not die with the session).
      if (!connection || this.#owner.busy()) return;
      const idleFor = performance.now() - this.#idleSince;
      if (idleFor < this.#settings.sessionTimeoutMs) {
        this.#armLinger(this.#settings.sessionTimeoutMs - idleFor);
        return;
      }
      this.#connection = undefined;
      connection.dead = true;
      clearInterval(this.#heartbeatTimer);
      this.#heartbeatTimer = undefined;
      // After what is still queued on it (a lock given back, a waiter key given up): its NOTIFY or
      // unlock must not die with the session.
      void connection.tail.then(() => this.disconnect(connection));
    }, ms);
    this.#lingerTimer.unref();
  }
}

/**
 * Settles with true once `answer` does, or with false once the statement in flight on `connection`
 * (that one, or one queued ahead of it) has gone unanswered for `limit` ms since it was sent: unheard
 * that long, the server may be gone or may end the session before the next heartbeat lands. Only
 * judged after a turn of the event loop: a busy loop runs due timers before it reads its sockets, so an
 * answer may already be here, unread; a statement that got one is not late, however long the loop was
 * busy. (A statement still queued is not yet sent: the clock starts when it is.)
 */
function answered(connection: Connection, answer: Promise<unknown>, limit: number): Promise<boolean> {
  return new Promise<boolean>((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    let settled = false;
    const settle = (): boolean => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      return true;
    };
    answer.then(
      () => settle() && resolve(true),
      (error: unknown) => settle() && reject(error),
    );
    const judge = (): void => {
      setImmediate(() => {
        if (settled) return;
        const left = (connection.inFlightSince ?? performance.now()) + limit - performance.now();
        if (left <= 0) {
          if (settle()) resolve(false);
          return;
        }
        timer = setTimeout(judge, left);
      });
    };
    timer = setTimeout(judge, limit);
  });
}
