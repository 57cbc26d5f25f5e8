/** Metadata travels with every event. The two well-known keys link events to what caused them. */
export interface Metadata {
  /** Shared by every message of one business flow. */
  correlationId?: string;
  /** The id of the message (command or event) that directly caused this one. */
  causationId?: string;
  [key: string]: unknown;
}

/** The minimal shape of a domain event: a discriminating `type` and its JSON `data`. */
export interface EventShape {
  type: string;
  data: unknown;
}

/** An event to append. `id` defaults to a fresh UUIDv7. */
export type NewEvent<E extends EventShape = EventShape> = E extends EventShape
  ? E & { metadata?: Metadata; id?: string }
  : never;

/** An event as stored: the domain event plus its place in the log (see `Recorded`). */
export interface StoredEvent<T extends string = string, D = unknown> {
  /** UUIDv7, unique across the store. */
  id: string;
  type: T;
  data: D;
  metadata: Metadata;
  streamId: string;
  /** 1 for the first event of a stream. */
  streamVersion: number;
  /** Position in the global order, starting at 1. Never reused, may have gaps. */
  position: number;
  timestamp: Date;
  /**
   * Only on the events a registry split decoded from one stored event (see EventRegistry `splits`):
   * they share its position, stream version, timestamp and metadata. Part 0 keeps the stored id,
   * the others have ids derived from it (stable across reads).
   */
  part?: EventPart;
}

/** Where a split's event came from: which part of which stored event. */
export interface EventPart {
  /** 0 for the first part, in the order the split returned them. */
  index: number;
  /** How many events the stored event was split into. */
  count: number;
  /** The stored event's id (part 0's id). */
  storedId: string;
  /** The stored event's type (the retired type that was split). */
  storedType: string;
}

/**
 * An event as read back: the domain event (`type`, `data`) with its id, metadata, stream, version,
 * global position and timestamp; typed from a union of domain events (it distributes over the union,
 * so `switch (event.type)` narrows `data`). `Recorded` alone is any event.
 */
export type Recorded<E extends EventShape = EventShape> = E extends EventShape ? StoredEvent<E['type'], E['data']> : never;
