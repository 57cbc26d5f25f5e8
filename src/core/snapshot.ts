import { CorruptSnapshotError, InvalidArgumentError, SerializationError } from './errors.js';
import type { EventShape } from './event.js';
import { isStorableText, jsonCopy, unstorableTextReason } from './validate.js';

/**
 * A decider's state as it was after one event of a stream, kept so that loading the stream reads only
 * the events after it. Only a cache: deleting every snapshot changes no result, only load times.
 */
export interface Snapshot {
  streamId: string;
  /** Which state this is (one stream can carry snapshots of several deciders, each under its name). */
  name: string;
  /**
   * The version the code gave the state's shape. A loader whose version differs ignores the snapshot
   * (full replay), so a changed `evolve` never reads a state built by the old one.
   */
  stateVersion: string;
  /** The stream version of the last event folded into `state`. */
  streamVersion: number;
  /** The id of that event: a loader uses the snapshot only if the stream still has this very event there. */
  eventId: string;
  /** A JSON value (what `JSON.parse` returns); every load returns a fresh one. */
  state: unknown;
  createdAt: Date;
}

/** A snapshot to write; the store stamps `createdAt`. */
export type NewSnapshot = Omit<Snapshot, 'createdAt'>;

export interface SaveSnapshotOptions {
  /**
   * A snapshot the caller read and found unusable (another state version, or its event is no longer in
   * the stream): the save replaces it even if it is not at a higher stream version, as long as the
   * stored row is still that one (same stream version and event id). A row another writer put there in
   * between is left alone.
   */
  replacing?: { streamVersion: number; eventId: string };
}

/**
 * Where deciders' snapshots live, one row per (stream, name), in the same database as the events.
 * A row is replaced only by a snapshot of a higher stream version (or, with `replacing`, by one that
 * supersedes a row the caller found unusable), so racing writers can only move it forward.
 */
export interface SnapshotStore {
  /** The latest snapshot of `streamId` under `name`, or undefined. Throws `CorruptSnapshotError` for a row that is not JSON. */
  load(streamId: string, name: string): Promise<Snapshot | undefined>;
  /**
   * Writes the snapshot; true when it was written, false when the stored one stays (it is at the same
   * or a higher stream version). Refuses a state that JSON cannot hold exactly (`SerializationError`).
   */
  save(snapshot: NewSnapshot, options?: SaveSnapshotOptions): Promise<boolean>;
  /** Deletes every snapshot of the stream (all names); returns how many there were. */
  deleteStream(streamId: string): Promise<number>;
}

/** A snapshot checked, with its state as JSON text: what the bundled stores write. */
export interface CheckedSnapshot {
  streamId: string;
  name: string;
  stateVersion: string;
  streamVersion: number;
  eventId: string;
  /** JSON text. */
  state: string;
  replacing: { streamVersion: number; eventId: string } | undefined;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Checks a text argument: non-empty and storable on every backend. */
export function checkSnapshotText(what: string, value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) {
    throw new InvalidArgumentError(`A snapshot's ${what} must be a non-empty string, got ${JSON.stringify(value) ?? String(value)}`);
  }
  if (!isStorableText(value)) throw new InvalidArgumentError(`A snapshot's ${what} ${unstorableTextReason(value)}`);
  return value;
}

function checkVersion(what: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    throw new InvalidArgumentError(`A snapshot's ${what} must be a positive integer stream version, got ${String(value)}`);
  }
  return value;
}

function checkEventId(what: string, value: unknown): string {
  if (typeof value !== 'string' || !UUID.test(value)) {
    throw new InvalidArgumentError(`A snapshot's ${what} must be the UUID of an event, got ${JSON.stringify(value) ?? String(value)}`);
  }
  // Lower case, as the event stores hand ids out.
  return value.toLowerCase();
}

/**
 * A copy of a state that JSON holds exactly (see `jsonCopy`), or a `SerializationError` that names the
 * part JSON cannot hold and says to give `toJSON`/`fromJSON`.
 */
export function snapshotStateCopy(state: unknown, streamId: string, name: string): unknown {
  try {
    return jsonCopy(state, 'state');
  } catch (error) {
    const path = (error as SerializationError).path;
    const reason = error instanceof Error ? error.message.replace(/^Cannot append: /, '').replace(/ Nothing was written\.$/, '') : String(error);
    throw new SerializationError('state', {
      path,
      cause: error,
      reason: `Cannot snapshot stream "${streamId}" (${name}): ${reason} Give the handler snapshots.toJSON/fromJSON for a state that is not plain JSON. Nothing was written.`,
    });
  }
}

/** For adapters: checks a snapshot to save and serialises its state, or throws before anything is written. */
export function checkSnapshot(snapshot: NewSnapshot, options: SaveSnapshotOptions = {}): CheckedSnapshot {
  if (typeof snapshot !== 'object' || snapshot === null) throw new InvalidArgumentError('save needs a snapshot object');
  const streamId = checkSnapshotText('streamId', snapshot.streamId);
  const name = checkSnapshotText('name', snapshot.name);
  const stateVersion = checkSnapshotText('stateVersion', snapshot.stateVersion);
  const streamVersion = checkVersion('streamVersion', snapshot.streamVersion);
  const eventId = checkEventId('eventId', snapshot.eventId);
  const state = JSON.stringify(snapshotStateCopy(snapshot.state, streamId, name));
  const given = options?.replacing;
  let replacing: CheckedSnapshot['replacing'];
  if (given !== undefined) {
    if (typeof given !== 'object' || given === null) throw new InvalidArgumentError('replacing must be { streamVersion, eventId } of the snapshot read');
    replacing = { streamVersion: checkVersion('replacing.streamVersion', given.streamVersion), eventId: checkEventId('replacing.eventId', given.eventId) };
  }
  return { streamId, name, stateVersion, streamVersion, eventId, state, replacing };
}

/** For adapters: a stored state's JSON text read back, or `CorruptSnapshotError` when it is not JSON. */
export function parseSnapshotState(streamId: string, name: string, text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (cause) {
    throw new CorruptSnapshotError(streamId, name, 'its state is not valid JSON', { cause });
  }
}

/** What a snapshot policy gets to decide on, once a command's events are appended. */
export interface SnapshotContext {
  streamId: string;
  /** The stream version after the append. */
  version: number;
  /** The stream version the state was loaded at (before the command). */
  loadedVersion: number;
  /** The version of the snapshot the state was loaded from; 0 when it was loaded without one. */
  snapshotVersion: number;
  /** How many events the load folded (after the snapshot, or all of them). */
  loadedEvents: number;
  /** How long the load took, in milliseconds. */
  loadMs: number;
  /** The events the command appended. */
  events: readonly EventShape[];
}

/** What is known before `decide` runs: the context without the command's events. */
export type SnapshotLoadContext = Omit<SnapshotContext, 'version' | 'events'>;

/**
 * When to write a snapshot. `due` decides after the append. `mayBeDue` is asked before `decide` runs:
 * when it is true, the handler keeps a JSON copy of the loaded state to build the snapshot from (one
 * `toJSON` call), so that nothing `decide` does to the state can reach a snapshot. Without `mayBeDue`
 * the copy is taken before every command. A snapshot that is due but was not prepared is skipped; the
 * next command writes it.
 */
export interface SnapshotPolicy {
  due(context: SnapshotContext): boolean;
  mayBeDue?(context: SnapshotLoadContext): boolean;
}

/**
 * A snapshot once `n` events have been appended since the one the state was loaded from (or since the
 * start of the stream): a load then folds at most n - 1 events after its snapshot.
 */
export function everyEvents(n: number): SnapshotPolicy {
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 1) {
    throw new InvalidArgumentError(`everyEvents needs a positive integer number of events, got ${String(n)}`);
  }
  return {
    due: (c) => c.version - c.snapshotVersion >= n,
    // A command appends at least one event.
    mayBeDue: (c) => c.loadedVersion + 1 - c.snapshotVersion >= n,
  };
}

/** A snapshot after a command that appended an event of one of these types (a closing event, say). */
export function onEventTypes(...types: string[]): SnapshotPolicy {
  if (types.length === 0 || types.some((type) => typeof type !== 'string' || type.length === 0)) {
    throw new InvalidArgumentError('onEventTypes needs one or more event type names');
  }
  const wanted = new Set(types);
  return { due: (c) => c.events.some((event) => wanted.has(event.type)) };
}

/** A snapshot when the load took at least `ms` milliseconds (whatever made it slow). */
export function slowerThan(ms: number): SnapshotPolicy {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) {
    throw new InvalidArgumentError(`slowerThan needs a non-negative number of milliseconds, got ${String(ms)}`);
  }
  return { due: (c) => c.loadMs >= ms, mayBeDue: (c) => c.loadMs >= ms };
}

/** A policy from a predicate (asked after the append; the copy of the loaded state is taken before every command). */
export function snapshotWhen(due: (context: SnapshotContext) => boolean): SnapshotPolicy {
  if (typeof due !== 'function') throw new InvalidArgumentError('snapshotWhen needs a function (context) => boolean');
  return { due };
}

/** Due when any of the policies is. */
export function anyOf(...policies: SnapshotPolicy[]): SnapshotPolicy {
  checkPolicies('anyOf', policies);
  return {
    due: (c) => policies.some((p) => p.due(c)),
    mayBeDue: (c) => policies.some((p) => p.mayBeDue === undefined || p.mayBeDue(c)),
  };
}

/** Due when all of the policies are. */
export function allOf(...policies: SnapshotPolicy[]): SnapshotPolicy {
  checkPolicies('allOf', policies);
  return {
    due: (c) => policies.every((p) => p.due(c)),
    mayBeDue: (c) => policies.every((p) => p.mayBeDue === undefined || p.mayBeDue(c)),
  };
}

function checkPolicies(what: string, policies: readonly SnapshotPolicy[]): void {
  if (policies.length === 0 || policies.some((p) => typeof p?.due !== 'function')) {
    throw new InvalidArgumentError(`${what} needs one or more snapshot policies (everyEvents(n), onEventTypes(...), ...)`);
  }
}
