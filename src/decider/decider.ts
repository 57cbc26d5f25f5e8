import type { EventShape } from '../core/event.js';

/**
 * A decider is the whole write model of one stream type as three pure pieces:
 * - `initialState`: the state of a stream with no events,
 * - `decide`: turns a command and the current state into new events, or throws to reject it,
 * - `evolve`: applies one event to a state.
 *
 * Keep `decide` and `evolve` free of I/O and of hidden inputs (clock, random): the command handler
 * may call `decide` again after a concurrency conflict, and a stream is folded every time it is loaded
 * (from its start, or with `snapshots` from a snapshot that `evolve` built from earlier events).
 */
export interface Decider<State, Command, Event extends EventShape> {
  /**
   * A value, or a function that makes one. Use the function form when `evolve` mutates the state it
   * receives, so every fold starts from a fresh object. (A `State` that is itself a function must
   * therefore be given through a factory.)
   */
  initialState: State | (() => State);
  /** Returns the events that record the decision (none for a no-op), or throws a domain error. */
  decide(state: State, command: Command): Event | readonly Event[];
  /**
   * Applies one event. When the command handler folds a stream, the event is the stored one, so it
   * also carries metadata, version and position at runtime; rely on `type` and `data` only, the
   * given/when/then helper passes bare domain events.
   */
  evolve(state: State, event: Event): State;
}

/** The state a stream with no events has. */
export function initialStateOf<State>(decider: Pick<Decider<State, unknown, EventShape>, 'initialState'>): State {
  const { initialState } = decider;
  return typeof initialState === 'function' ? (initialState as () => State)() : initialState;
}

/** Folds `events` into a state, from `state` (default: the decider's initial state). */
export function fold<State, Event extends EventShape>(
  decider: Pick<Decider<State, never, Event>, 'initialState' | 'evolve'>,
  events: Iterable<Event>,
  state: State = initialStateOf(decider),
): State {
  let current = state;
  for (const event of events) current = decider.evolve(current, event);
  return current;
}

/** `decide`'s result as an array (a single event becomes a one-element array). */
export function decidedEvents<Event extends EventShape>(result: Event | readonly Event[]): Event[] {
  return Array.isArray(result) ? [...(result as readonly Event[])] : [result as Event];
}
