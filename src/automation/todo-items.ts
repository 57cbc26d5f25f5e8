import type { EventShape, Recorded } from '../core/event.js';
import { InvalidArgumentError } from '../core/errors.js';
import type { HandlerContext } from '../subscription/subscription.js';

/** One thing to do because of an event. Items with the same key run one at a time, in event order. */
export interface TodoItem<P = unknown> {
  key: string;
  payload: P;
}

/**
 * What a trigger gets besides its event: the automation's name (as `subscription`), the lease's token,
 * and a signal that fires when this node must stop (stop() or lost leadership).
 */
export type TriggerContext = HandlerContext;

export type Trigger<E extends EventShape, P> = (
  event: Recorded<E>,
  context: TriggerContext,
) => TodoItem<P> | readonly TodoItem<P>[] | undefined | null | Promise<TodoItem<P> | readonly TodoItem<P>[] | undefined | null>;

/** A trigger's result as checked items. */
export function normalise<P>(result: TodoItem<P> | readonly TodoItem<P>[] | undefined | null): readonly TodoItem<P>[] {
  if (result === undefined || result === null) return [];
  const items = Array.isArray(result) ? (result as readonly TodoItem<P>[]) : [result as TodoItem<P>];
  for (const item of items) checkItem(item);
  return items;
}

export function checkItem<P>(item: TodoItem<P>): TodoItem<P> {
  if (typeof item !== 'object' || item === null || typeof item.key !== 'string' || item.key.length === 0) {
    throw new InvalidArgumentError('trigger must return to-do items ({ key: non-empty string, payload }), an array of them, or nothing');
  }
  // Checked without building a copy: this runs for every item.
  if (item.key.includes('\u0000') || !item.key.isWellFormed()) {
    throw new InvalidArgumentError(`to-do key ${JSON.stringify(item.key)} contains NUL or a lone surrogate, which databases cannot store`);
  }
  return item;
}
