// The argument checks of EventStoreBase's verbs, apart from the class: each event of an append
// (type, id, metadata, data through the registry), stream ids, expected versions, counts.
import { newEventId } from './event-id.js';
import { InvalidArgumentError, SerializationError } from './errors.js';
import type { EventShape, Metadata, NewEvent } from './event.js';
import type { MetadataStamp } from './hooks.js';
import { isLifecycleType, keepsLifecycleEvents, reservedType } from './lifecycle.js';
import type { EventRegistry } from './registry.js';
import type { ExpectedVersion } from './store.js';
import { isStorableText, jsonCopy, unstorableTextReason } from './validate.js';

/** An event to append, checked: its data and metadata are copies of the caller's. */
export interface CheckedEvent {
  id: string;
  type: string;
  data: unknown;
  metadata: Metadata;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The event's id and type, checked, and copies of its data and metadata that JSON holds exactly (see jsonCopy). */
export function checkEvent<E extends EventShape>(event: NewEvent<E>, index: number, registry: EventRegistry<E> | undefined, stamp: MetadataStamp | undefined): CheckedEvent {
  if (typeof event !== 'object' || event === null) {
    throw new InvalidArgumentError(`event ${index} must be an object with a type and data`);
  }
  const { type } = event;
  if (typeof type !== 'string' || type.length === 0) {
    throw new InvalidArgumentError(`event ${index} needs a non-empty string type`);
  }
  if (isLifecycleType(type)) throw reservedType(type, index);
  if (!isStorableText(type)) {
    throw new SerializationError('type', {
      path: 'type',
      reason: `Cannot append event ${index}: its type ${JSON.stringify(type)} ${unstorableTextReason(type)}. Nothing was written.`,
    });
  }
  const givenId = event.id;
  if (givenId !== undefined && (typeof givenId !== 'string' || !UUID.test(givenId))) {
    throw new InvalidArgumentError(`event ${index} has id ${String(givenId)}, which is not a UUID`);
  }
  // Lower case, as PostgreSQL's uuid type gives it back: one id is one id on every adapter.
  const id = givenId === undefined ? newEventId() : givenId.toLowerCase();
  const given = event.metadata ?? {};
  if (typeof given !== 'object' || given === null || Array.isArray(given)) {
    throw new InvalidArgumentError(`event ${index} metadata must be a plain object`);
  }
  const data = jsonCopy(registry ? registry.encode(type, event.data) : event.data, 'data', index, type);
  const metadata = jsonCopy(given, 'metadata', index, type) as Metadata;
  registry?.stampVersion(type, metadata);
  stamp?.(metadata);
  return { id, type, data, metadata };
}

export function assertStreamId(streamId: unknown): asserts streamId is string {
  if (typeof streamId !== 'string' || streamId.length === 0) {
    throw new InvalidArgumentError(`streamId must be a non-empty string, got ${JSON.stringify(streamId) ?? String(streamId)}`);
  }
}

export function assertExpectedVersionArgument(expected: unknown): asserts expected is ExpectedVersion {
  if (expected === 'any' || expected === 'no_stream' || expected === 'stream_exists') return;
  if (typeof expected === 'number' && Number.isSafeInteger(expected) && expected >= 0) return;
  throw new InvalidArgumentError(
    `expectedVersion must be a non-negative integer, "no_stream", "stream_exists" or "any"; got ${JSON.stringify(expected) ?? String(expected)}`,
  );
}

export function checkedExpected(expected: unknown): ExpectedVersion {
  assertExpectedVersionArgument(expected);
  return expected;
}

export function optionalCount(name: string, value: unknown): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    throw new InvalidArgumentError(`${name} must be a positive integer, got ${String(value)}`);
  }
  return value;
}

/**
 * What a typed read of `types` selects in the stored log, for any store: `storedTypes` of an
 * EventStoreBase (renamed and split types), else the types as given. Undefined stays undefined (every
 * type). Lifecycle events are left out of an unfiltered read by the reader, see `readsLifecycleRow`.
 */
export function storedTypesOf(store: object, types: readonly string[] | undefined): string[] | undefined {
  if (types === undefined) return undefined;
  const own = (store as { storedTypes?: unknown }).storedTypes;
  return typeof own === 'function' ? (own.call(store, types) as string[]) : [...types];
}

/**
 * Whether a row of a raw read of `types` (as stored) would reach a typed reader: lifecycle rows only
 * when asked for by type. The rule readAll applies (`keepsLifecycleEvents`), for readers that read raw.
 */
export function readsLifecycleRow(type: string, types: readonly string[] | undefined): boolean {
  return keepsLifecycleEvents(false, types) || !isLifecycleType(type);
}
