// Schema evolution for EventRegistry: the definitions checked and compiled once at construction
// (version chains, renames, splits), and the pieces the decode path runs on every read.
import { createHash } from 'node:crypto';
import { EventValidationError, RegistryDefinitionError } from './errors.js';
import type { EventShape, Metadata } from './event.js';
import type { EventTypeDefinition } from './registry.js';
import { isLifecycleType, RESERVED_TYPE_PREFIX } from './lifecycle.js';
import { compilePersonal } from './personal/fields.js';
import type { CompiledPersonal } from './personal/fields.js';

/**
 * The metadata key an append writes the type's schema version under, when that version is above 1.
 * An event without it was written at version 1 (as every event stored before versions existed).
 * Reserved: with a registry, an append always sets (or removes) it to match the type.
 */
export const SCHEMA_VERSION_KEY = '$schemaVersion';

/** One step of a version chain: turns data of version `from` into version `from + 1`. */
export interface UpcastStep {
  from: number;
  up: (data: unknown, metadata: Metadata) => unknown;
}

/**
 * One event a split makes of a stored event. `data` is read like an event stored at `version`
 * (default 1, as an event without `$schemaVersion`): the type's upcasters from there on run, then
 * its `validate`. Name the version whose shape you return, so later versions of the type upgrade it.
 */
export type SplitPart<E extends EventShape> = E extends EventShape ? { type: E['type']; data: unknown; version?: number } : never;

/**
 * A retired stored type that is read as several events. The parts share the stored event's position,
 * stream version, timestamp and metadata; part 0 keeps its id, the others get ids derived from it.
 */
export interface SplitDefinition<E extends EventShape> {
  /**
   * Every type `split` may return. A read filtered by types reads the stored type when it asks for
   * any of these (and keeps only the parts it asked for).
   */
  into: readonly E['type'][];
  /** At least one part, in the order they are delivered; runs on every read of such an event. */
  split: (data: unknown, metadata: Metadata) => readonly SplitPart<E>[];
}

/** A current type, compiled. */
export interface CompiledType {
  name: string;
  version: number;
  /** steps[v - 1] turns version v into v + 1. */
  steps: readonly UpcastStep['up'][];
  upcast: EventTypeDefinition<unknown>['upcast'];
  validate: EventTypeDefinition<unknown>['validate'];
  renamedFrom: readonly string[];
  personal: readonly CompiledPersonal[] | undefined;
}

export interface CompiledSplit {
  source: string;
  into: readonly string[];
  split: SplitDefinition<EventShape>['split'];
}

export interface CompiledRegistry {
  types: ReadonlyMap<string, CompiledType>;
  /** Old name → the type it is read as. */
  renamed: ReadonlyMap<string, CompiledType>;
  splits: ReadonlyMap<string, CompiledSplit>;
  hasPersonalData: boolean;
}

const isPositiveInteger = (value: unknown): value is number => typeof value === 'number' && Number.isSafeInteger(value) && value >= 1;

/** Checks the definitions against each other and compiles them; throws RegistryDefinitionError. */
export function compileRegistry(definitions: Record<string, EventTypeDefinition<unknown>>, splits: Record<string, SplitDefinition<EventShape>>): CompiledRegistry {
  if (typeof definitions !== 'object' || definitions === null) throw new RegistryDefinitionError('the definitions must be an object { [type]: definition }.');
  const types = new Map<string, CompiledType>();
  for (const [name, definition] of Object.entries(definitions)) types.set(name, compileType(name, definition));
  const renamed = new Map<string, CompiledType>();
  for (const type of types.values()) {
    for (const old of type.renamedFrom) {
      if (old === type.name) throw new RegistryDefinitionError(`"${old}" lists itself in renamedFrom; remove it.`);
      if (types.has(old)) {
        throw new RegistryDefinitionError(
          `"${type.name}" lists "${old}" in renamedFrom, but "${old}" is also a current type. An old name is read as the new one and never ` +
            `written again, so it cannot be both: remove the definition of "${old}", or take it out of renamedFrom.`,
        );
      }
      const other = renamed.get(old);
      if (other) throw new RegistryDefinitionError(`"${old}" is in the renamedFrom of both "${other.name}" and "${type.name}"; a stored type is read as one type, keep it in one list.`);
      renamed.set(old, type);
    }
  }
  const compiledSplits = new Map<string, CompiledSplit>();
  if (typeof splits !== 'object' || splits === null) throw new RegistryDefinitionError('splits must be an object { [storedType]: { into, split } }.');
  for (const [source, definition] of Object.entries(splits)) {
    if (isLifecycleType(source)) throw new RegistryDefinitionError(`"${source}" cannot be split: types starting with "${RESERVED_TYPE_PREFIX}" are eskit's lifecycle events.`);
    if (types.has(source)) {
      throw new RegistryDefinitionError(`"${source}" is both a current type and split: a split type is never written again. Remove its definition, or its split.`);
    }
    const target = renamed.get(source);
    if (target) throw new RegistryDefinitionError(`"${source}" is both renamed (to "${target.name}") and split: a stored type is read one way; keep one.`);
    if (typeof definition?.split !== 'function') throw new RegistryDefinitionError(`the split of "${source}" needs split: (data, metadata) => [{ type, data }, ...].`);
    const into = definition.into as readonly string[] | undefined;
    if (!Array.isArray(into) || into.length === 0) {
      throw new RegistryDefinitionError(`the split of "${source}" needs into: the non-empty list of types its parts can have (typed reads use it).`);
    }
    for (const part of into) {
      if (types.has(part)) continue;
      const why = renamed.has(part) ? `it was renamed to "${renamed.get(part)?.name}"` : part === source || splits[part] !== undefined ? 'it is split itself' : 'it is not a type of this registry';
      throw new RegistryDefinitionError(`the split of "${source}" lists "${part}" in into, but ${why}; a split's parts must be current types.`);
    }
    compiledSplits.set(source, { source, into: [...new Set(into)], split: definition.split });
  }
  return { types, renamed, splits: compiledSplits, hasPersonalData: [...types.values()].some((type) => type.personal !== undefined) };
}

function compileType(name: string, definition: EventTypeDefinition<unknown>): CompiledType {
  if (name === '') throw new RegistryDefinitionError('an event type name cannot be empty.');
  if (isLifecycleType(name)) {
    throw new RegistryDefinitionError(`"${name}" cannot be defined: types starting with "${RESERVED_TYPE_PREFIX}" are eskit's lifecycle events, read without a definition.`);
  }
  if (typeof definition !== 'object' || definition === null) throw new RegistryDefinitionError(`the definition of "${name}" must be an object ({} when it has no rules).`);
  const { validate, upcast, upcasters = [], renamedFrom = [] } = definition;
  const version = definition.version ?? 1;
  if (!isPositiveInteger(version)) throw new RegistryDefinitionError(`"${name}" has version ${String(version)}; a version is a positive integer (1 when left out).`);
  if (validate !== undefined && typeof validate !== 'function') throw new RegistryDefinitionError(`validate of "${name}" must be a function.`);
  if (upcast !== undefined && typeof upcast !== 'function') throw new RegistryDefinitionError(`upcast of "${name}" must be a function.`);
  if (!Array.isArray(renamedFrom) || renamedFrom.some((old) => typeof old !== 'string' || old === '' || isLifecycleType(old))) {
    throw new RegistryDefinitionError(`renamedFrom of "${name}" must be a list of old type names (non-empty, not "${RESERVED_TYPE_PREFIX}...").`);
  }
  if (!Array.isArray(upcasters)) throw new RegistryDefinitionError(`upcasters of "${name}" must be a list of steps { from, up }.`);
  if (upcast !== undefined && (version > 1 || upcasters.length > 0)) {
    throw new RegistryDefinitionError(
      `"${name}" has both upcast and a version chain. upcast runs on every stored event whatever its version; make it the first step ` +
        '(upcasters: [{ from: 1, up: <your upcast> }, ...]): events stored before versions existed are version 1, so it meets the same events.',
    );
  }
  const steps = new Array<UpcastStep['up'] | undefined>(version - 1).fill(undefined);
  for (const step of upcasters as readonly UpcastStep[]) {
    const from = (step as Partial<UpcastStep> | null)?.from;
    if (!isPositiveInteger(from) || typeof step.up !== 'function') {
      throw new RegistryDefinitionError(`each upcaster of "${name}" is { from: <version>, up: (data, metadata) => data of version from + 1 }; got from ${String(from)}.`);
    }
    if (from >= version) {
      throw new RegistryDefinitionError(
        `"${name}" has an upcaster from version ${from}, but its version is ${version}: a step from ${from} makes version ${from + 1}. ` +
          `Set version: ${from + 1} (appends then write that version), or remove the step.`,
      );
    }
    if (steps[from - 1] !== undefined) throw new RegistryDefinitionError(`"${name}" has two upcasters from version ${from}; keep one step per version.`);
    steps[from - 1] = step.up;
  }
  const missing = steps.flatMap((step, index) => (step === undefined ? [index + 1] : []));
  if (missing.length > 0) {
    throw new RegistryDefinitionError(
      `"${name}" is at version ${version} but has no upcaster from version ${missing.join(', ')}: events stored at ` +
        `${missing.length === 1 ? 'that version' : 'those versions'} could not be read. Add { from: ${missing[0]}, up } (one step per version, 1 to ${version - 1}).`,
    );
  }
  return { name, version, steps: steps as UpcastStep['up'][], upcast, validate, renamedFrom: [...renamedFrom], personal: compilePersonal(name, definition.personal) };
}

/** The schema version an event was stored at: its `$schemaVersion`, 1 without one. */
export function storedVersion(type: string, metadata: Metadata, position: number | undefined): number {
  const value = metadata[SCHEMA_VERSION_KEY];
  if (value === undefined) return 1;
  if (!isPositiveInteger(value)) {
    throw new EventValidationError(type, `its metadata ${SCHEMA_VERSION_KEY} is ${JSON.stringify(value)}, not a positive integer (the key is reserved for the schema version)`, { position });
  }
  return value;
}

/**
 * Data stored at version `from` of `type`, as the current version: the legacy `upcast`, each step
 * from `from` on, then `validate`. `stored` is the type name in the log (an old name, a split source).
 */
/**
 * `redacted`: some personal field reads as the redaction marker, which `validate` (written for the live
 * shape) would refuse; the event passed it when it was appended, so it is skipped.
 */
export function upgrade(type: CompiledType, stored: string, data: unknown, metadata: Metadata, from: number, position: number | undefined, redacted = false): unknown {
  const as = stored === type.name ? '' : ` (stored as "${stored}")`;
  if (from > type.version) {
    throw new EventValidationError(
      type.name,
      `it was written at schema version ${from}${as}, but this registry's "${type.name}" is at version ${type.version}: newer code wrote it. ` +
        'Deploy that code here too (a registry reads its own version and older ones).',
      { position },
    );
  }
  let current = type.upcast ? type.upcast(data, metadata) : data;
  for (let version = from; version < type.version; version++) {
    try {
      current = (type.steps[version - 1] as UpcastStep['up'])(current, metadata);
    } catch (cause) {
      throw new EventValidationError(type.name, `its upcaster from version ${version} to ${version + 1}${as} threw: ${reasonOf(cause)}`, { cause, position });
    }
  }
  if (!type.validate || redacted) return current;
  try {
    return type.validate(current);
  } catch (cause) {
    throw new EventValidationError(type.name, `${reasonOf(cause)}${as}`, { cause, position });
  }
}

export function reasonOf(cause: unknown): string {
  return cause instanceof Error ? cause.message : String(cause);
}

/**
 * The id of part `index` of a split stored event: the stored id for part 0; for the others a UUIDv8
 * with the stored id's first 48 bits (its time, for eskit's v7 ids) and the rest from
 * SHA-256(stored id, index). The same on every read and every node.
 */
export function partId(storedId: string, index: number): string {
  if (index === 0) return storedId;
  const hash = createHash('sha256').update(`${storedId}/${index}`).digest('hex');
  const variant = ((Number.parseInt(hash[3] as string, 16) & 0x3) | 0x8).toString(16);
  return `${storedId.slice(0, 8)}-${storedId.slice(9, 13)}-8${hash.slice(0, 3)}-${variant}${hash.slice(4, 7)}-${hash.slice(7, 19)}`;
}
