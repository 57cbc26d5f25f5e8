import * as pg from './driver.js';
import { describeError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';

export interface AppendListenerOptions {
  /** Connection settings of the dedicated LISTEN connection. */
  connection: () => pg.ClientConfig;
  /** The channel the append functions notify (see `notifyChannel('appended', schema)`). */
  channel: string;
  /** Called with the announced position for every notification. */
  onAppended: (position: number) => void;
  /**
   * The other channels heard on the same connection, each with what to call with a notification's
   * payload: the member registries' (`notifyChannel('members', schema)`, payload: the group) and the
   * views' (`notifyChannel('views', schema)`, payload: a commit hint, see postgres-view.ts).
   */
  hints: ReadonlyMap<string, (payload: string) => void>;
  /**
   * Called once after every (re)connect, when LISTEN is in place: appends that committed while there
   * was no LISTEN (before the first connect, or while reconnecting) announced nothing.
   */
  onListening: () => void;
  /**
   * Called each time the connection is lost or a (re)connect fails, before the wait for the next try:
   * from then until `onListening`, notifications are not heard (see `reconnecting`).
   */
  onLost?: () => void;
  /** How long the connection stays up after `idle()` (nobody listens), for the next listener. */
  lingerMs: number;
  logger: Logger;
}

interface Connection {
  client: pg.Client;
  dead: boolean;
  /** LISTEN is in place. */
  listening: boolean;
}

const FIRST_RETRY_MS = 50;
const MAX_RETRY_MS = 5_000;

/**
 * One dedicated connection that LISTENs on a store's `appended` channel and its hint channels (members,
 * views) and turns notifications into `onAppend` wake-ups, member changes and view commits. All on one
 * connection: a node running partitioned runners and views needs them all, and each LISTEN connection
 * is a server session. Only hints: notifications are lost while the connection is down (the reconnect
 * then wakes every append listener once and tells view listeners they may have missed commits; member
 * listeners learn at their next heartbeat), and readers poll anyway.
 *
 * Not through a pool: the connection is held for as long as anyone listens, and a pool's slot would be
 * taken from queries for good. Behind a transaction-pooling proxy (PgBouncer transaction mode) LISTEN
 * does not work; readers then fall back on their poll interval.
 */
export class AppendListener {
  readonly #options: AppendListenerOptions;
  #running = false;
  #connection: Connection | undefined;
  #retry: ReturnType<typeof setTimeout> | undefined;
  #failures = 0;
  #ending = new Set<Promise<void>>();
  #linger: ReturnType<typeof setTimeout> | undefined;

  constructor(options: AppendListenerOptions) {
    this.#options = options;
  }

  /** Connects in the background unless already running (or still lingering). */
  start(): void {
    clearTimeout(this.#linger);
    this.#linger = undefined;
    if (this.#running) return;
    this.#running = true;
    this.#failures = 0;
    void this.#connect();
  }

  /**
   * Nobody listens any more: disconnect after `lingerMs`, unless someone listens again meanwhile. A
   * subscription that stops (a leadership handoff) then does not end a server session right behind
   * its release, while a standby takes over, and a restart does not connect again.
   */
  idle(): void {
    if (!this.#running || this.#linger) return;
    if (this.#options.lingerMs === 0) {
      void this.stop();
      return;
    }
    this.#linger = setTimeout(() => {
      this.#linger = undefined;
      void this.stop();
    }, this.#options.lingerMs);
    // The connection's socket keeps the process up while it lingers, as a pool's idle clients do.
    this.#linger.unref();
  }

  /** Disconnects; resolves when the connection is closed. Safe to call at any time, and twice. */
  async stop(): Promise<void> {
    clearTimeout(this.#linger);
    this.#linger = undefined;
    this.#running = false;
    clearTimeout(this.#retry);
    this.#retry = undefined;
    const connection = this.#connection;
    this.#connection = undefined;
    if (connection) this.#end(connection);
    await Promise.all([...this.#ending]);
  }

  /** True while the LISTEN connection is up and listening. */
  get connected(): boolean {
    return this.#connection !== undefined && !this.#connection.dead && this.#connection.listening;
  }

  /**
   * True from the moment the connection was lost (or a connect failed) until LISTEN is in place again:
   * how long that lasts is not known (the server may refuse connections for a while). False while the
   * first connect after `start()` is under way.
   */
  get reconnecting(): boolean {
    return this.#running && this.#failures > 0;
  }

  async #connect(): Promise<void> {
    this.#retry = undefined;
    if (!this.#running) return;
    const { channel, hints, logger } = this.#options;
    const connection: Connection = { client: new pg.Client(this.#options.connection()), dead: false, listening: false };
    const { client } = connection;
    this.#connection = connection;
    client.on('error', (error) => this.#lost(connection, error));
    client.on('end', () => this.#lost(connection, new Error('the connection ended')));
    client.on('notification', (message) => {
      const hint = hints.get(message.channel);
      if (hint) {
        if (message.payload) hint(message.payload);
        return;
      }
      if (message.channel !== channel) return;
      const position = Number(message.payload);
      if (Number.isSafeInteger(position)) this.#options.onAppended(position);
    });
    try {
      await client.connect();
      // The channels are lower-case identifiers built by notifyChannel; quoting keeps them exact.
      await client.query([channel, ...hints.keys()].map((name) => `LISTEN "${name}"`).join('; '));
    } catch (error) {
      this.#lost(connection, error);
      return;
    }
    if (connection.dead || this.#connection !== connection) return;
    connection.listening = true;
    if (this.#failures > 0) logger.info({ channel }, `Listening for appends on "${channel}" again`);
    this.#failures = 0;
    this.#options.onListening();
  }

  #lost(connection: Connection, error: unknown): void {
    if (connection.dead) return;
    connection.dead = true;
    this.#end(connection);
    if (this.#connection !== connection || !this.#running) return;
    this.#connection = undefined;
    this.#failures += 1;
    this.#options.onLost?.();
    // The first retry is almost at once (a killed backend, a restarted proxy); then back off with jitter.
    const ceiling = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** (this.#failures - 1));
    const wait = this.#failures === 1 ? FIRST_RETRY_MS : ceiling / 2 + (Math.random() * ceiling) / 2;
    this.#options.logger.warn(
      { channel: this.#options.channel, err: error, retryInMs: Math.round(wait) },
      `The LISTEN connection for appends failed (${describeError(error)}); reconnecting. Subscribers poll meanwhile, so nothing is lost, only delayed.`,
    );
    this.#retry = setTimeout(() => void this.#connect(), wait);
  }

  #end(connection: Connection): void {
    connection.dead = true;
    const ending = connection.client.end().catch(() => undefined);
    this.#ending.add(ending);
    void ending.finally(() => this.#ending.delete(ending));
  }
}

/**
 * The channels besides `appended` that the LISTEN connection hears. 'subjects': key ids destroyed by a
 * forget, dropped from the event store's key cache (postgres-subject-key-store.ts).
 */
export const HINT_TOPICS = ['members', 'views', 'subjects'] as const;
export type HintTopic = (typeof HINT_TOPICS)[number];

/** Who hears a hint channel (see `PostgresEventStore.onViewCommitted`). */
export interface HintListener {
  heard(payload: string): void;
  /** LISTEN is (again) in place: hints sent before were not heard. */
  missed?(): void;
}

/**
 * Who hears each hint channel. A listener that throws is skipped: it finds the same hint by its own
 * poll or heartbeat.
 */
export class HintListeners {
  readonly #byTopic = new Map<HintTopic, Set<HintListener>>(HINT_TOPICS.map((topic) => [topic, new Set()]));

  /** Adds `listener`; returns the remover, which says whether it removed it (false the second time). */
  add(topic: HintTopic, listener: HintListener): () => boolean {
    const listeners = this.#byTopic.get(topic) as Set<HintListener>;
    // Wrapped, so that the same listener added twice is two listeners with a remover each.
    const wrapped: HintListener = { heard: (payload) => listener.heard(payload), missed: () => listener.missed?.() };
    listeners.add(wrapped);
    return () => listeners.delete(wrapped);
  }

  heard(topic: HintTopic, payload: string): void {
    for (const listener of [...(this.#byTopic.get(topic) ?? [])]) attempt(() => listener.heard(payload));
  }

  missed(): void {
    for (const listeners of this.#byTopic.values()) for (const listener of [...listeners]) attempt(() => listener.missed?.());
  }

  /** Listeners of every channel. */
  get size(): number {
    let size = 0;
    for (const listeners of this.#byTopic.values()) size += listeners.size;
    return size;
  }

  clear(): void {
    for (const listeners of this.#byTopic.values()) listeners.clear();
  }
}

function attempt(fn: () => void): void {
  try {
    fn();
  } catch {
    // Hints only: whoever failed to take one finds out at its next poll or heartbeat.
  }
}
