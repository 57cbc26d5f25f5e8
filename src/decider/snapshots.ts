import { describeError, InvalidArgumentError, StreamHistoryMissingError } from '../core/errors.js';
import type { EventShape, Recorded } from '../core/event.js';
import { consoleLogger } from '../core/logger.js';
import type { Logger } from '../core/logger.js';
import { everyEvents, snapshotStateCopy } from '../core/snapshot.js';
import type { Snapshot, SnapshotContext, SnapshotLoadContext, SnapshotPolicy, SnapshotStore } from '../core/snapshot.js';
import { isSealedValue } from '../core/personal/cipher.js';
import { personalDataOf, personalKidsOf } from '../core/personal/personal-data.js';
import { withheld } from '../core/personal/withheld.js';
import type { PersonalData } from '../core/personal/personal-data.js';
import type { EventStore } from '../core/store.js';
import { initialStateOf } from './decider.js';
import type { Decider } from './decider.js';
import { SnapshotCache } from './snapshot-cache.js';

/** The snapshot name a CommandHandler uses unless told otherwise. */
export const DEFAULT_SNAPSHOT_NAME = 'decider';
/** A snapshot every this many events unless `every` or `policy` says otherwise. */
export const DEFAULT_SNAPSHOT_EVERY = 100;
/** Streams whose latest snapshot a handler keeps in memory, by default. */
export const DEFAULT_SNAPSHOT_CACHE_SIZE = 1000;
/** The most text the snapshots kept in memory by one handler may add up to (UTF-16 bytes). */
export const SNAPSHOT_CACHE_BYTES = 32 * 1024 * 1024;

/**
 * Snapshots for a CommandHandler: load a stream from its latest snapshot and the events after it, and
 * write a new snapshot after a command when the policy says so (default every 100 events).
 */
export interface SnapshotOptions<S> {
  /** Where they live. Default: the backend's (`backend.snapshots`). */
  store?: SnapshotStore;
  /**
   * The version of the state's shape and of `evolve`. Change it whenever `evolve`, the state or
   * `toJSON`/`fromJSON` change in a way that makes an old snapshot wrong: snapshots of another version
   * are ignored (the stream is replayed in full, then a new snapshot replaces the old one).
   * Compared as text, so 2 and '2' are the same version.
   */
  version: number | string;
  /** A snapshot once this many events were appended since the one loaded (default 100). Not with `policy`. */
  every?: number;
  /** When to write one: `everyEvents(n)`, `onEventTypes(...)`, `slowerThan(ms)`, `anyOf(...)`, `allOf(...)`, `snapshotWhen(fn)`. */
  policy?: SnapshotPolicy;
  /**
   * The snapshots' name: default 'decider'. Give every decider that loads the same streams a name of
   * its own, or they read each other's states.
   */
  name?: string;
  /**
   * The state as a JSON value. Default: the state itself, which must then be plain JSON (objects,
   * arrays, strings, finite numbers, booleans, null); a state with a Date, Map, Set or class instance
   * is refused (the snapshot is not written, a warning is logged) unless you give `toJSON`/`fromJSON`.
   */
  toJSON?: (state: S) => unknown;
  /** The state from what `toJSON` made. Throw to reject a value: the snapshot is ignored and the stream replayed. */
  fromJSON?: (json: unknown) => S;
  /** Where failures to load or write a snapshot are reported (they never fail a command). Default: stderr, warnings. */
  logger?: Logger;
  /**
   * How many streams' latest snapshot the handler keeps in memory (the ones it wrote), so that a load
   * reads only the events after it and not the snapshot row. Default 1000, at most 32 MiB of state
   * text in all; 0 turns it off. Safe with other processes writing: see `SnapshotCache`.
   */
  cacheSize?: number;
}

/** A stream folded into a state, and how that went (for the snapshot policy). */
export interface LoadedStream<S> {
  state: S;
  version: number;
  position: number | undefined;
  /** The version of the snapshot the load started from; 0 without one. */
  snapshotVersion: number;
  /** How many events were folded. */
  loadedEvents: number;
  loadMs: number;
  /** A stored snapshot that was read but could not be used: a new one may replace it. */
  unusable: { streamVersion: number; eventId: string } | undefined;
  /**
   * The key ids of the personal data folded into the state (the snapshot's and the events'): a
   * snapshot of it is sealed with them, so forgetting any of its subjects erases it.
   */
  kids: ReadonlySet<string>;
}

/** A copy of the loaded state, taken before `decide` ran, that a snapshot can be built from. */
export interface PreparedSnapshot {
  /** A JSON value no one else holds. */
  base: unknown;
  context: SnapshotLoadContext;
  unusable: LoadedStream<unknown>['unusable'];
  kids: ReadonlySet<string>;
}

/** Folds the whole stream from version 1. Throws `StreamHistoryMissingError` when its first events are gone. */
export async function replay<S, E extends EventShape>(store: EventStore<E>, decider: Decider<S, unknown, E>, streamId: string): Promise<LoadedStream<S>> {
  const started = performance.now();
  let state = initialStateOf(decider);
  let version = 0;
  let position: number | undefined;
  let loadedEvents = 0;
  const kids = new Set<string>();
  for await (const event of store.readStream(streamId)) {
    // A stream truncated before its first event read from 1 starts later: its state cannot be folded.
    if (loadedEvents === 0 && event.streamVersion !== 1) throw new StreamHistoryMissingError(streamId, 1, event.streamVersion);
    // A stored event is the domain event plus its envelope; evolve only relies on type and data.
    state = decider.evolve(state, event as unknown as E);
    addKids(kids, event);
    version = event.streamVersion;
    position = event.position;
    loadedEvents++;
  }
  return { state, version, position, snapshotVersion: 0, loadedEvents, loadMs: performance.now() - started, unusable: undefined, kids };
}

function addKids(into: Set<string>, event: object): void {
  const kids = personalKidsOf(event);
  if (kids !== undefined) for (const kid of kids) into.add(kid);
}


/** What a snapshot's sealed state is bound to: its stream, name and last event. */
function sealContext(streamId: string, name: string, eventId: string): string {
  return `snapshot:${streamId}:${name}:${eventId}`;
}

/** The snapshot side of one CommandHandler: its settings, and the writes it has not finished yet. */
export class DeciderSnapshots<S, E extends EventShape> {
  readonly name: string;
  readonly stateVersion: string;
  readonly #store: SnapshotStore;
  readonly #policy: SnapshotPolicy;
  readonly #toJSON: (state: S) => unknown;
  readonly #fromJSON: (json: unknown) => S;
  readonly #logger: Logger;
  readonly #decider: Decider<S, unknown, E>;
  /** One write in flight per stream: a command that would write another meanwhile skips it (the next one writes). */
  readonly #pending = new Map<string, Promise<void>>();
  readonly #cache: SnapshotCache;

  constructor(options: SnapshotOptions<S>, decider: Decider<S, unknown, E>, backendStore: SnapshotStore | undefined) {
    if (typeof options !== 'object' || options === null) {
      throw new InvalidArgumentError('snapshots must be an object: { version, every?, policy?, name?, store?, toJSON?, fromJSON? }');
    }
    const store = options.store ?? backendStore;
    if (typeof store?.load !== 'function' || typeof store.save !== 'function') {
      throw new InvalidArgumentError('snapshots needs a store: give a backend that has one (memory(), sqlite(...), postgres(...)) or snapshots.store');
    }
    const { version } = options;
    if (!((typeof version === 'number' && Number.isFinite(version)) || (typeof version === 'string' && version.length > 0))) {
      throw new InvalidArgumentError(
        `snapshots.version must be a number or a non-empty string (the version of the state's shape; change it when evolve changes), got ${JSON.stringify(version) ?? String(version)}`,
      );
    }
    if (options.every !== undefined && options.policy !== undefined) {
      throw new InvalidArgumentError('snapshots takes `every` or `policy`, not both: for both, policy: anyOf(everyEvents(n), ...)');
    }
    if (options.policy !== undefined && typeof options.policy?.due !== 'function') {
      throw new InvalidArgumentError('snapshots.policy must be a snapshot policy (everyEvents(n), onEventTypes(...), snapshotWhen(fn), ...)');
    }
    const name = options.name ?? DEFAULT_SNAPSHOT_NAME;
    if (typeof name !== 'string' || name.length === 0) throw new InvalidArgumentError('snapshots.name must be a non-empty string');
    for (const key of ['toJSON', 'fromJSON'] as const) {
      if (options[key] !== undefined && typeof options[key] !== 'function') throw new InvalidArgumentError(`snapshots.${key} must be a function`);
    }
    const cacheSize = options.cacheSize ?? DEFAULT_SNAPSHOT_CACHE_SIZE;
    if (typeof cacheSize !== 'number' || !Number.isSafeInteger(cacheSize) || cacheSize < 0) {
      throw new InvalidArgumentError(`snapshots.cacheSize must be a non-negative integer (0: no cache), got ${String(cacheSize)}`);
    }
    this.#cache = new SnapshotCache(cacheSize, SNAPSHOT_CACHE_BYTES);
    this.name = name;
    this.stateVersion = String(version);
    this.#store = store;
    this.#policy = options.policy ?? everyEvents(options.every ?? DEFAULT_SNAPSHOT_EVERY);
    this.#toJSON = options.toJSON ?? ((state) => state);
    this.#fromJSON = options.fromJSON ?? ((json) => json as S);
    this.#logger = options.logger ?? consoleLogger();
    this.#decider = decider;
  }

  /**
   * The stream from its snapshot and the events after it, when the snapshot is usable: of this state
   * version, decodable, and its last event still in the stream at its version with its id. Otherwise
   * (or when there is none) a full replay.
   */
  async load(store: EventStore<E>, streamId: string): Promise<LoadedStream<S>> {
    const started = performance.now();
    const cached = this.#cache.get(streamId);
    const personal = personalDataOf(store);
    if (cached !== undefined && (await this.#cachedStillReadable(personal, cached.kids))) {
      const state = this.#decode(streamId, () => JSON.parse(cached.state) as unknown, cached.kids);
      const resumed = state === undefined ? undefined : await this.#resume(store, streamId, cached, state.value, started, cached.kids);
      if (resumed !== undefined) return resumed;
    }
    // Not this stream's history any more (deleted, truncated past it), or its subject was forgotten: ask the store.
    if (cached !== undefined) this.#cache.delete(streamId);
    const snapshot = await this.#store.load(streamId, this.name).catch((error: unknown) => {
      this.#logger.warn({ streamId, snapshot: this.name, err: error }, `could not load the snapshot, replaying the stream: ${describeError(error)}`);
      return undefined;
    });
    if (snapshot === undefined) return replay(store, this.#decider, streamId);
    const unusable = { streamVersion: snapshot.streamVersion, eventId: snapshot.eventId };
    if (snapshot.stateVersion !== this.stateVersion) return { ...(await replay(store, this.#decider, streamId)), unusable };
    const opened = await this.#open(personal, snapshot);
    const state = opened === undefined ? undefined : this.#decode(streamId, () => opened.value, opened.kids);
    const resumed = state === undefined ? undefined : await this.#resume(store, streamId, snapshot, state.value, started, opened?.kids ?? []);
    return resumed ?? { ...(await replay(store, this.#decider, streamId)), unusable };
  }

  /**
   * A stored snapshot's state: as stored, or opened when it was sealed (it holds personal data);
   * undefined when a subject it holds data of was forgotten (or the keys cannot be read): replay then.
   */
  async #open(personal: PersonalData | undefined, snapshot: Snapshot): Promise<{ value: unknown; kids: readonly string[] } | undefined> {
    if (!isSealedValue(snapshot.state)) return { value: snapshot.state, kids: [] };
    if (personal === undefined) return undefined;
    try {
      const opened = await personal.open(snapshot.state, sealContext(snapshot.streamId, this.name, snapshot.eventId));
      return opened.erased === true ? undefined : { value: opened.value, kids: snapshot.state.kids };
    } catch (error) {
      this.#logger.warn({ streamId: snapshot.streamId, snapshot: this.name, err: error }, `could not open the sealed snapshot, replaying the stream: ${describeError(error)}`);
      return undefined;
    }
  }

  /** A cached state holding personal data is used only while every one of its keys lives. */
  async #cachedStillReadable(personal: PersonalData | undefined, kids: readonly string[]): Promise<boolean> {
    if (kids.length === 0) return true;
    if (personal === undefined) return false;
    const keys = await personal.keysById(kids);
    return kids.every((kid) => keys.get(kid) != null);
  }

  /** The state of a snapshot's JSON, or undefined (logged) when `fromJSON` rejects it. */
  #decode(streamId: string, json: () => unknown, kids: readonly string[]): { value: S } | undefined {
    try {
      return { value: this.#fromJSON(json()) };
    } catch (thrown) {
      const error = this.#withheld(thrown, streamId, kids);
      this.#logger.warn({ streamId, snapshot: this.name, err: error }, `could not decode the snapshot (fromJSON threw), replaying the stream: ${describeError(error)}`);
      return undefined;
    }
  }

  /** What a log may show of an error about a state holding personal data (`kids`): not its message. */
  #withheld(error: unknown, streamId: string, kids: Iterable<string>): unknown {
    for (const _kid of kids) return withheld(error, `the snapshot "${this.name}" of stream "${streamId}"`, 'The command is unaffected.');
    return error;
  }

  /** `state` (the snapshot's) with the events after it folded on; undefined when the stream does not have the snapshot's event. */
  async #resume(
    store: EventStore<E>,
    streamId: string,
    snapshot: { streamVersion: number; eventId: string },
    initial: S,
    started: number,
    snapshotKids: readonly string[],
  ): Promise<LoadedStream<S> | undefined> {
    let state = initial;
    const kids = new Set(snapshotKids);
    const from = snapshot.streamVersion;
    let version = 0;
    let position: number | undefined;
    let loadedEvents = 0;
    for await (const event of store.readStream(streamId, { fromVersion: from })) {
      if (version === 0) {
        // The very event the snapshot ends with, or the snapshot is of another history (the stream
        // was deleted and started again, truncated past it, or rewritten): then replay in full.
        if (event.streamVersion !== from || event.id !== snapshot.eventId) break;
        version = from;
        position = event.position;
        continue;
      }
      // The other parts of the snapshot's event, when its stored type has been split since: folded
      // into the snapshot already (as the stored event), like part 0.
      if (event.streamVersion === from) continue;
      state = this.#decider.evolve(state, event as unknown as E);
      addKids(kids, event);
      version = event.streamVersion;
      position = event.position;
      loadedEvents++;
    }
    if (version === 0) return undefined;
    return { state, version, position, snapshotVersion: from, loadedEvents, loadMs: performance.now() - started, unusable: undefined, kids };
  }

  /**
   * Before `decide`: when a snapshot may be due after the command, a JSON copy of the loaded state to
   * build it from, so that nothing `decide` or the caller does to the state can reach a snapshot.
   */
  prepare(streamId: string, loaded: LoadedStream<S>): PreparedSnapshot | undefined {
    if (this.#pending.has(streamId)) return undefined;
    const context: SnapshotLoadContext = {
      streamId,
      loadedVersion: loaded.version,
      snapshotVersion: loaded.snapshotVersion,
      loadedEvents: loaded.loadedEvents,
      loadMs: loaded.loadMs,
    };
    try {
      if (this.#policy.mayBeDue !== undefined && !this.#policy.mayBeDue(context)) return undefined;
      return { base: snapshotStateCopy(this.#toJSON(loaded.state), streamId, this.name), context, unusable: loaded.unusable, kids: loaded.kids };
    } catch (error) {
      this.#warnNotWritten(streamId, error, loaded.kids);
      return undefined;
    }
  }

  /**
   * After the append: when the policy says so, folds the committed events onto the prepared copy and
   * writes the snapshot in the background. Never throws; a failed write is logged.
   */
  committed(streamId: string, prepared: PreparedSnapshot | undefined, events: readonly Recorded<E>[], personal: PersonalData | undefined): void {
    if (prepared === undefined || events.length === 0 || this.#pending.has(streamId)) return;
    const last = events[events.length - 1] as Recorded<E>;
    const kids = new Set(prepared.kids);
    for (const event of events) addKids(kids, event);
    let json: unknown;
    try {
      const context: SnapshotContext = { ...prepared.context, version: last.streamVersion, events };
      if (!this.#policy.due(context)) return;
      // Folded now, before the caller gets the events back (and could change them); written later.
      let state = this.#fromJSON(prepared.base);
      for (const event of events) state = this.#decider.evolve(state, event as unknown as E);
      json = snapshotStateCopy(this.#toJSON(state), streamId, this.name);
    } catch (error) {
      this.#warnNotWritten(streamId, error, kids);
      return;
    }
    const sealWith = [...kids];
    // Right as soon as it is built, written or not: the next load can start from it.
    this.#cache.set(streamId, { streamVersion: last.streamVersion, eventId: last.id, state: JSON.stringify(json), kids: sealWith });
    const replacing = prepared.unusable;
    const write = (async () => {
      // Not later than this: on a synchronous driver (SQLite) a macrotask would wait for a caller's
      // loop of commands to end, and every command meanwhile would find this write still pending.
      let state = json;
      if (sealWith.length > 0) {
        // Personal data is never stored in the clear: sealed with its subjects' keys, or not at all
        // (a subject forgotten meanwhile: a snapshot of its data must not outlive the erasure).
        if (personal === undefined) return;
        state = await personal.seal(json, sealWith, sealContext(streamId, this.name, last.id));
        if (state === undefined) return;
      }
      await this.#store.save(
        { streamId, name: this.name, stateVersion: this.stateVersion, streamVersion: last.streamVersion, eventId: last.id, state },
        replacing === undefined ? undefined : { replacing },
      );
    })()
      .catch((error: unknown) => this.#warnNotWritten(streamId, error, kids))
      .finally(() => this.#pending.delete(streamId));
    this.#pending.set(streamId, write);
  }

  /** Resolves once every snapshot write started so far has finished (written, or failed and logged). */
  async flush(): Promise<void> {
    while (this.#pending.size > 0) await Promise.all(this.#pending.values());
  }

  #warnNotWritten(streamId: string, thrown: unknown, kids: Iterable<string>): void {
    const error = this.#withheld(thrown, streamId, kids);
    this.#logger.warn({ streamId, snapshot: this.name, err: error }, `snapshot not written (the command is unaffected): ${describeError(error)}`);
  }
}
