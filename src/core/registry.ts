import { EventValidationError, UnknownEventTypeError } from './errors.js';
import type { EventShape, Metadata } from './event.js';

/** How one event type is checked and upgraded. Both hooks are optional. */
export interface EventTypeDefinition<D> {
  /**
   * Returns the data as the current type, or throws. Runs on append (so bad data is never stored)
   * and on read (after `upcast`).
   */
  validate?: (data: unknown) => D;
  /** Turns data stored by an older version of the code into the current shape. Runs on read only. */
  upcast?: (data: unknown, metadata: Metadata) => unknown;
}

export type EventDefinitions<E extends EventShape> = {
  [K in E['type']]: EventTypeDefinition<Extract<E, { type: K }>['data']>;
};

/**
 * Maps event type names to their TypeScript types. Listing every member of the union is enforced
 * by the compiler, so a new event type cannot be forgotten here.
 *
 * ```ts
 * type CartEvent = { type: 'ItemAdded'; data: { sku: string } } | { type: 'CartCleared'; data: null };
 * const registry = new EventRegistry<CartEvent>({ ItemAdded: {}, CartCleared: {} });
 * ```
 */
export class EventRegistry<E extends EventShape> {
  readonly #definitions: ReadonlyMap<string, EventTypeDefinition<unknown>>;

  constructor(definitions: EventDefinitions<E>) {
    this.#definitions = new Map(Object.entries(definitions as Record<string, EventTypeDefinition<unknown>>));
  }

  get types(): readonly E['type'][] {
    return [...this.#definitions.keys()] as E['type'][];
  }

  has(type: string): type is E['type'] {
    return this.#definitions.has(type);
  }

  /** Checks an event before it is written. */
  encode(type: string, data: unknown): unknown {
    const definition = this.#definitions.get(type);
    if (!definition) throw new UnknownEventTypeError(type);
    return runValidate(type, definition, data);
  }

  /** Upcasts and validates an event read from the store. */
  decode(type: string, data: unknown, metadata: Metadata, position?: number): unknown {
    const definition = this.#definitions.get(type);
    if (!definition) throw new UnknownEventTypeError(type, position);
    const current = definition.upcast ? definition.upcast(data, metadata) : data;
    return runValidate(type, definition, current, position);
  }
}

function runValidate(type: string, definition: EventTypeDefinition<unknown>, data: unknown, position?: number): unknown {
  if (!definition.validate) return data;
  try {
    return definition.validate(data);
  } catch (cause) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    throw new EventValidationError(type, reason, { cause, position });
  }
}
