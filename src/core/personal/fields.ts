// Personal fields inside an event's data: the registry's definitions compiled, the copy an append
// stores (each field replaced by its envelope), and the walk a read does to open the envelopes.
import { CorruptEventError, EventValidationError, RegistryDefinitionError } from '../errors.js';
import type { Metadata } from '../event.js';
import { decryptField, encryptField, isFieldEnvelope } from './cipher.js';
import type { FieldEnvelope } from './cipher.js';
import { SubjectKeyMissingError } from './errors.js';
import { REDACTED } from './types.js';
import type { PersonalDataDefinition, SubjectKey } from './types.js';

/** One definition of a type, checked. */
export interface CompiledPersonal {
  subject: PersonalDataDefinition<unknown>['subject'];
  fields: ReadonlyArray<{ path: string; segments: readonly string[] }>;
}

export function compilePersonal(type: string, given: unknown): CompiledPersonal[] | undefined {
  if (given === undefined) return undefined;
  const definitions = (Array.isArray(given) ? given : [given]) as Array<Partial<PersonalDataDefinition<unknown>> | null>;
  const seen = new Set<string>();
  const compiled = definitions.map((definition) => {
    if (typeof definition?.subject !== 'function' || !Array.isArray(definition.fields) || definition.fields.length === 0) {
      throw new RegistryDefinitionError(`personal of "${type}" is { subject: (data) => id, fields: ['email', ...] } (or a list of them), with at least one field.`);
    }
    const fields = definition.fields.map((path: unknown) => {
      const segments = typeof path === 'string' ? path.split('.') : [];
      if (segments.length === 0 || segments.some((segment) => segment === '')) {
        throw new RegistryDefinitionError(`personal of "${type}" has field ${JSON.stringify(path)}; a field is a name or a dotted path ('address.street').`);
      }
      if (seen.has(path as string)) throw new RegistryDefinitionError(`personal of "${type}" lists "${String(path)}" twice; a field belongs to one subject.`);
      seen.add(path as string);
      return { path: path as string, segments };
    });
    return { subject: definition.subject, fields };
  });
  // A field inside another personal field would be encrypted twice over, and could not be read alone.
  for (const path of seen) {
    for (const other of seen) {
      if (other !== path && other.startsWith(`${path}.`)) throw new RegistryDefinitionError(`personal of "${type}" lists "${path}" and "${other}", which lies inside it; list one.`);
    }
  }
  return compiled;
}

/** The subjects of an event's personal data, checked (a subject is a non-empty string). */
export function subjectsOf(type: string, definitions: readonly CompiledPersonal[], data: unknown, metadata: Metadata): string[] {
  return definitions.map(({ subject }) => {
    let id: unknown;
    try {
      id = subject(data, metadata);
    } catch (cause) {
      throw new EventValidationError(type, `its personal data's subject function threw: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    }
    if (typeof id !== 'string' || id === '') {
      throw new EventValidationError(type, `its personal data's subject function returned ${JSON.stringify(id) ?? String(id)}; a subject is a non-empty string (the person's id)`);
    }
    return id;
  });
}

/**
 * A copy of `data` whose personal fields are envelopes (the objects on their paths are copied; the
 * rest is shared with `data`, which is not changed). `keys[i]` is the key of `definitions[i]`'s subject.
 */
export function encryptedCopy(type: string, data: unknown, definitions: readonly CompiledPersonal[], keys: readonly SubjectKey[], eventId: string): unknown {
  let copy = data;
  definitions.forEach((definition, index) => {
    const { kid, key } = keys[index] as SubjectKey;
    for (const { path, segments } of definition.fields) copy = replaceAt(copy, segments, 0, (value) => encryptField(value, kid, key, eventId, path), type);
  });
  return copy;
}

/**
 * `node` with the value at `segments` replaced. An absent, undefined or null value on the way is left
 * alone (nothing personal there); any other value that is not a plain object on the way (an array, a
 * string) is refused: the field would otherwise be stored in the clear without a word.
 */
function replaceAt(node: unknown, segments: readonly string[], depth: number, replace: (value: unknown) => unknown, type: string): unknown {
  if (node === null || node === undefined) return node;
  if (typeof node !== 'object' || Array.isArray(node)) {
    const at = depth === 0 ? 'the data' : `"${segments.slice(0, depth).join('.')}"`;
    throw new EventValidationError(
      type,
      `its personal field "${segments.join('.')}" runs through ${at}, which is ${Array.isArray(node) ? 'an array' : `a ${typeof node}`}, not an object: ` +
        `list ${depth === 0 ? 'fields of an object' : `"${segments.slice(0, depth).join('.')}"`} in personal.fields to encrypt it whole`,
    );
  }
  const name = segments[depth] as string;
  if (!Object.hasOwn(node, name)) return node;
  const value = (node as Record<string, unknown>)[name];
  const next = depth === segments.length - 1 ? (value === null || value === undefined ? value : replace(value)) : replaceAt(value, segments, depth + 1, replace, type);
  return next === value ? node : { ...(node as Record<string, unknown>), [name]: next };
}

/**
 * Refuses data holding an object shaped like an envelope that encryption did not make: every reader
 * would take it for one (and fail on its unknown key, or read it as forgotten). `data` is what is
 * stored: the encrypted copy of an event with personal fields (`definitions` its type's).
 */
export function refuseEnvelopeShapes(type: string, data: unknown, definitions?: readonly CompiledPersonal[]): void {
  const ours = new Set(definitions?.flatMap((definition) => definition.fields.map((field) => field.path)));
  // Given the encrypted copy: the envelopes at the personal paths are encryption's; the visit throws
  // at any other, so the walk changes nothing.
  walk(data, '', (envelope, path) => {
    if (ours.has(path)) return envelope;
    throw new EventValidationError(
      type,
      `its data holds, at "${path || '(the data)'}", an object shaped like an encrypted personal field ({ $enc: 1, kid, iv, ct }), which every read would try to decrypt. ` +
        'Rename its $enc key (eskit reserves it), or wrap the value (for example as JSON text).',
    );
  });
}

/** The key ids of every envelope in `data` (stored data, parsed). */
export function envelopeKids(data: unknown, into: Set<string>): Set<string> {
  walk(data, '', (envelope) => {
    into.add(envelope.kid);
    return envelope;
  });
  return into;
}

/** What opening an event's envelopes gave. */
export interface Opened {
  data: unknown;
  /** Some field's subject was forgotten: it reads as the redaction marker. */
  redacted: boolean;
  /** The ids of the keys that opened a field (what a copy of the event's data must be sealed with). */
  kids: string[];
  /** Set when the row could not be opened (a key the store never had, a field that does not decrypt). */
  failure?: unknown;
}

/**
 * `data` (stored data, parsed, owned by the caller: changed in place) with every envelope opened: the
 * value, or the redaction marker when its key was destroyed (null in `keys`). A key id not in `keys` is
 * a key the store never had: SubjectKeyMissingError; an envelope that does not authenticate (tampered,
 * or moved to another event or field): CorruptEventError.
 */
export function openEnvelopes(data: unknown, keys: ReadonlyMap<string, Uint8Array | null>, eventId: string, position: number): Opened {
  let redacted = false;
  const kids = new Set<string>();
  const opened = walk(data, '', (envelope, path) => {
    const key = keys.get(envelope.kid);
    if (key === undefined) throw new SubjectKeyMissingError(envelope.kid, position);
    if (key === null) {
      redacted = true;
      return REDACTED;
    }
    // Only keys that opened something: a copy of the event's data holds plaintext of those subjects
    // alone (a forgotten subject's fields are the marker, nothing to seal).
    kids.add(envelope.kid);
    try {
      return decryptField(envelope, key, eventId, path);
    } catch (cause) {
      throw new CorruptEventError(position, `its personal field "${path}" does not decrypt under its key (changed after it was written, or copied from another event)`, { cause });
    }
  });
  return { data: opened, redacted, kids: [...kids] };
}

/** Calls `visit` for each envelope (with its dotted path) and puts what it returns in its place. */
function walk(node: unknown, path: string, visit: (envelope: FieldEnvelope, path: string) => unknown): unknown {
  if (typeof node !== 'object' || node === null || Array.isArray(node)) return node;
  if (isFieldEnvelope(node)) return visit(node, path);
  const record = node as Record<string, unknown>;
  for (const name of Object.keys(record)) {
    const value = record[name];
    if (typeof value === 'object' && value !== null) record[name] = walk(value, path === '' ? name : `${path}.${name}`, visit);
  }
  return node;
}
