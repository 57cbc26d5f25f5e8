import type { Metadata } from './event.js';

/**
 * Where instrumentation plugs into core without core knowing it: core imports nothing of ours
 * (DESIGN.md §1), so the telemetry folder fills this slot when it is loaded, and core only calls it.
 * Internal: the package's entry files load telemetry; applications never call this.
 */

/** One call of `EventStore.append`, as its caller passed it (unchecked: the hook runs before the checks). */
export interface AppendCall {
  readonly streamId: unknown;
  readonly events: unknown;
  /** `'any'` when the caller gave none. */
  readonly expectedVersion: unknown;
}

/** What an append returns, as far as an observer needs it. */
export interface AppendOutcome {
  readonly position: number;
  readonly nextExpectedVersion: number;
}

/**
 * Adds the observer's keys to the metadata copy of one event before it is written. It receives a
 * fresh object the store owns, and decides itself whether keys the caller already set win.
 */
export type MetadataStamp = (metadata: Metadata) => void;

/** Wraps one append: runs `append` (exactly once) and returns or throws what it does. */
export type AppendObserver = <R extends AppendOutcome>(call: AppendCall, append: (stamp: MetadataStamp | undefined) => Promise<R>) => Promise<R>;

/**
 * Asked once per append. Undefined (nothing to observe now, say no tracer installed) keeps the append
 * bare: no closure, object or span is made, which is the whole cost of the hook on the hot path.
 */
export type AppendHook = () => AppendObserver | undefined;

let appendHook: AppendHook | undefined;

/** Installs the append hook (one slot: the last one installed wins), or removes it with undefined. */
export function setAppendHook(hook: AppendHook | undefined): void {
  appendHook = hook;
}

/** The observer for the append about to run, if any. */
export function appendObserver(): AppendObserver | undefined {
  return appendHook?.();
}
