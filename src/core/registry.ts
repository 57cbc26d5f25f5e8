import { EventValidationError, InvalidArgumentError, RetiredEventTypeError, UnknownEventTypeError } from './errors.js';
import type { EventShape, Metadata, Recorded } from './event.js';
import { compileRegistry, partId, reasonOf, SCHEMA_VERSION_KEY, storedVersion, upgrade } from './evolution.js';
// Types starting with `$stream.` are eskit's stream lifecycle events: a registry reads them as stored.
import { isLifecycleType } from './lifecycle.js';
import type { CompiledRegistry, CompiledSplit, CompiledType, SplitDefinition, SplitPart, UpcastStep } from './evolution.js';
import type { CompiledPersonal } from './personal/fields.js';
import type { PersonalDataDefinition } from './personal/types.js';

export { SCHEMA_VERSION_KEY, partId } from './evolution.js';
export type { SplitDefinition, SplitPart, UpcastStep } from './evolution.js';

/** How one event type is checked and upgraded. Every field is optional. */
export interface EventTypeDefinition<D> {
  /**
   * Returns the data as the current type, or throws. Runs on append (so bad data is never stored)
   * and on read (after the upcasters).
   */
  validate?: (data: unknown) => D;
  /**
   * Turns data stored by an older version of the code into the current shape. Runs on every read,
   * whatever version the event was stored at. For more than one change, use `version` and
   * `upcasters` instead (the two cannot be combined: move this function into `upcasters` as the step
   * `{ from: 1, up }`).
   */
  upcast?: (data: unknown, metadata: Metadata) => unknown;
  /**
   * The current schema version of the data (default 1). Appends write it to the metadata as
   * `$schemaVersion` when it is above 1; an event without that key was stored at version 1.
   */
  version?: number;
  /**
   * One step per older version, `{ from: v, up }` turning version v into v + 1: every version from 1
   * to `version - 1` has exactly one (checked when the registry is built). A read runs the steps
   * from the stored version on, then `validate`.
   */
  upcasters?: readonly UpcastStep[];
  /**
   * Names this type had before: stored events of those names are read as this type, at the version
   * their metadata says (a rename does not restart the count). They can no longer be appended.
   */
  renamedFrom?: readonly string[];
  /**
   * The type's personal data: whose it is and which fields hold it (a list for several subjects). The
   * fields are encrypted on append with the subject's key, and read as the redaction marker once
   * `forget(subject)` destroyed it: declare them `Personal<T>`. Paths are those of the current version.
   */
  personal?: PersonalDataDefinition<D> | readonly PersonalDataDefinition<D>[];
}

/** A definition for every type of the union, except eskit's own events (`$stream.*`, `$subject.*`), read as stored. */
export type EventDefinitions<E extends EventShape> = {
  [K in Exclude<E['type'], `$stream.${string}` | `$subject.${string}`>]: EventTypeDefinition<Extract<E, { type: K }>['data']>;
};

export interface EventRegistryOptions<E extends EventShape> {
  /**
   * Retired stored types read as several events each, by stored type name:
   * `{ CartCheckedOut: { into: ['OrderPlaced', 'PaymentTaken'], split: (data) => [...] } }`.
   */
  splits?: Record<string, SplitDefinition<E>>;
}

/** How a stored event is decoded. */
export interface DecodeOptions {
  /**
   * Some personal field reads as the redaction marker (its subject was forgotten): `validate`, written
   * for the live shape, is skipped (the event passed it when it was appended). Upcasters still run.
   */
  redacted?: boolean;
}

/** The stored type names a typed read of some types has to fetch, and what it keeps of them. */
export interface StoredTypeFilter {
  /** Stored names: the asked types, their old names, and the split types that can make them. */
  types: string[];
  /** Set when decoded events must be filtered again (a split also makes types not asked for). */
  keep: ReadonlySet<string> | undefined;
}

/**
 * Maps event type names to their TypeScript types. Listing every member of the union is enforced
 * by the compiler, so a new event type cannot be forgotten here.
 *
 * ```ts
 * type CartEvent = { type: 'ItemAdded'; data: { sku: string } } | { type: 'CartCleared'; data: null };
 * const registry = new EventRegistry<CartEvent>({ ItemAdded: {}, CartCleared: {} });
 * ```
 *
 * Types evolve without rewriting stored events: a version chain (`version`, `upcasters`), renames
 * (`renamedFrom`) and splits (`options.splits`). Every read of a store built with the registry decodes
 * through it. The constructor checks all of it and throws `RegistryDefinitionError` on a contradiction.
 */
export class EventRegistry<E extends EventShape> {
  readonly #compiled: CompiledRegistry;

  constructor(definitions: EventDefinitions<E>, options: EventRegistryOptions<E> = {}) {
    this.#compiled = compileRegistry(
      definitions as Record<string, EventTypeDefinition<unknown>>,
      (options.splits ?? {}) as Record<string, SplitDefinition<EventShape>>,
    );
  }

  /** The current types (what can be appended). */
  get types(): readonly E['type'][] {
    return [...this.#compiled.types.keys()] as E['type'][];
  }

  /** Old names and split types: stored names that are read as current types. */
  get retiredTypes(): readonly string[] {
    return [...this.#compiled.renamed.keys(), ...this.#compiled.splits.keys()];
  }

  has(type: string): type is E['type'] {
    return this.#compiled.types.has(type);
  }

  /** The current schema version of a type (1 unless its definition says otherwise). */
  versionOf(type: E['type']): number {
    return this.#current(type, 'read').version;
  }

  /** The personal data definitions of a current type (undefined: it has none). */
  personalOf(type: string): readonly CompiledPersonal[] | undefined {
    return this.#compiled.types.get(type)?.personal;
  }

  /** True when some current type has personal fields. */
  get hasPersonalData(): boolean {
    return this.#compiled.hasPersonalData;
  }

  /** Checks an event before it is written. */
  encode(type: string, data: unknown): unknown {
    const definition = this.#current(type, 'append');
    if (!definition.validate) return data;
    try {
      return definition.validate(data);
    } catch (cause) {
      throw new EventValidationError(type, reasonOf(cause), { cause });
    }
  }

  /**
   * Sets the metadata's `$schemaVersion` to the type's version (removes it at version 1), on the
   * copy an append writes: a key copied from another event must not misstate this one.
   */
  stampVersion(type: string, metadata: Metadata): void {
    const version = this.#compiled.types.get(type)?.version ?? 1;
    if (version > 1) metadata[SCHEMA_VERSION_KEY] = version;
    else delete metadata[SCHEMA_VERSION_KEY];
  }

  /**
   * The data of a stored event of a current type or an old name, as the current version (upcast and
   * validated). A split type is several events: read those with `decodeEvent`.
   */
  decode(type: string, data: unknown, metadata: Metadata, position?: number, options: DecodeOptions = {}): unknown {
    const redacted = options.redacted === true;
    if (isLifecycleType(type)) return data;
    const definition = this.#compiled.types.get(type) ?? this.#compiled.renamed.get(type);
    if (!definition) {
      if (this.#compiled.splits.has(type)) throw new InvalidArgumentError(`"${type}" is split into several events; decode it with decodeEvent`);
      throw new UnknownEventTypeError(type, position);
    }
    return upgrade(definition, type, data, metadata, storedVersion(type, metadata, position), position, redacted);
  }

  /** The type a stored type name is read as (the new name of an old one; itself otherwise). */
  decodedType(storedType: string): string {
    return this.#compiled.renamed.get(storedType)?.name ?? storedType;
  }

  /** True when stored events of this type are read as several events. */
  isSplit(storedType: string): boolean {
    return this.#compiled.splits.has(storedType);
  }

  /**
   * A stored event (as a raw read returns it) as the events it is read as: one, or a split's parts.
   * The same decoding every read of a store with this registry does. Throws what such a read would.
   */
  decodeEvent(stored: Recorded, options: DecodeOptions = {}): Recorded<E>[] {
    const split = this.#compiled.splits.get(stored.type);
    if (split) return this.#split(stored, split, options.redacted === true);
    const data = this.decode(stored.type, stored.data, stored.metadata, stored.position, options);
    return [{ ...stored, type: this.decodedType(stored.type), data } as Recorded<E>];
  }

  /**
   * The parts of a stored event of a split type. They share its position, stream version, timestamp
   * and metadata (part 0 gets the given metadata object, the others copies); part 0 keeps its id.
   */
  #split(stored: Recorded, split: CompiledSplit, redacted: boolean): Recorded<E>[] {
    const { position } = stored;
    let parts: readonly SplitPart<E>[];
    try {
      parts = split.split(stored.data, stored.metadata) as readonly SplitPart<E>[];
    } catch (cause) {
      throw new EventValidationError(stored.type, `its split threw: ${reasonOf(cause)}`, { cause, position });
    }
    if (!Array.isArray(parts) || parts.length === 0) {
      throw new EventValidationError(
        stored.type,
        'its split returned no events: a split returns at least one (a stored event that vanished would leave its stream version unaccounted for)',
        { position },
      );
    }
    const count = parts.length;
    return parts.map((part, index) => {
      const type = (part as { type?: unknown } | null)?.type;
      if (typeof type !== 'string' || !split.into.includes(type)) {
        throw new EventValidationError(stored.type, `its split returned a part of type ${JSON.stringify(type)}, which is not in its into (${split.into.join(', ')})`, { position });
      }
      const target = this.#compiled.types.get(type) as CompiledType;
      const version = part.version ?? 1;
      if (!Number.isSafeInteger(version) || version < 1) {
        throw new EventValidationError(stored.type, `its split returned a "${type}" part with version ${String(version)}; a version is a positive integer`, { position });
      }
      const metadata = index === 0 ? stored.metadata : structuredClone(stored.metadata);
      const data = upgrade(target, stored.type, part.data, metadata, version, position, redacted);
      return {
        id: partId(stored.id, index),
        type,
        data,
        metadata,
        streamId: stored.streamId,
        streamVersion: stored.streamVersion,
        position,
        timestamp: stored.timestamp,
        part: { index, count, storedId: stored.id, storedType: stored.type },
      } as Recorded<E>;
    });
  }

  /**
   * The stored names a typed read of `types` fetches: each type, its old names, and the split types
   * whose parts can be of it. A retired name is refused (its events are read as other types).
   */
  storedTypesFor(types: readonly string[]): StoredTypeFilter {
    const stored = new Set<string>();
    let filtered = false;
    for (const type of types) {
      stored.add(type);
      const current = this.#compiled.types.get(type);
      if (!current) {
        if (!isLifecycleType(type)) this.#refuseRetired(type, 'read');
        continue;
      }
      for (const old of current.renamedFrom) stored.add(old);
      for (const split of this.#compiled.splits.values()) {
        if (!split.into.includes(type)) continue;
        stored.add(split.source);
        if (split.into.some((part) => !types.includes(part))) filtered = true;
      }
    }
    return { types: [...stored], keep: filtered ? new Set(types) : undefined };
  }

  #current(type: string, action: 'append' | 'read'): CompiledType {
    const definition = this.#compiled.types.get(type);
    if (definition) return definition;
    this.#refuseRetired(type, action);
    throw new UnknownEventTypeError(type);
  }

  #refuseRetired(type: string, action: 'append' | 'read'): void {
    const target = this.#compiled.renamed.get(type);
    if (target) throw new RetiredEventTypeError(type, [target.name], 'renamed', action);
    const split = this.#compiled.splits.get(type);
    if (split) throw new RetiredEventTypeError(type, split.into, 'split', action);
  }
}
