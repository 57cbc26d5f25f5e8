import { describeError, InvalidArgumentError, SerializationError } from './errors.js';

/** Checks a numeric option: a safe integer of at least `minimum` (default 1). */
export function positiveInteger(name: string, value: unknown, minimum = 1): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < minimum) {
    throw new InvalidArgumentError(`${name} must be an integer of at least ${minimum}, got ${String(value)}`);
  }
  return value;
}

/** The longest delay a Node.js timer keeps (about 24.8 days); a longer one fires after 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Checks a duration option that drives a timer: an integer number of milliseconds from `minimum` to
 * MAX_TIMER_MS. Longer would not wait longer: Node.js runs such a timer after 1 ms.
 */
export function milliseconds(name: string, value: unknown, minimum = 1): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < minimum || value > MAX_TIMER_MS) {
    throw new InvalidArgumentError(`${name} must be an integer number of milliseconds from ${minimum} to ${MAX_TIMER_MS} (a Node.js timer's limit), got ${String(value)}`);
  }
  return value;
}

/**
 * How deeply data may nest. Deeper is refused on every adapter: SQLite's JSON functions stop there
 * too, real event data never comes close, and the bound turns a cycle into a refusal rather than a
 * stack overflow.
 */
export const MAX_JSON_DEPTH = 1000;

/** True when every backend can store the text: no NUL, no lone UTF-16 surrogate (PostgreSQL refuses both). */
export function isStorableText(text: string): boolean {
  return !text.includes('\u0000') && text.isWellFormed();
}

/** What cannot be stored about a text that `isStorableText` refused, and what to do instead. */
export function unstorableTextReason(text: string): string {
  const rule = 'which PostgreSQL cannot store; eskit refuses it on every adapter, so that what works on one works on all';
  if (text.includes('\u0000')) return `contains the character U+0000 (NUL), ${rule}. Remove it (text.replaceAll('\\u0000', ''))`;
  return (
    `contains a lone UTF-16 surrogate (half a character, as left by cutting a string inside an emoji), ${rule}. ` +
    'Repair it with text.toWellFormed() (U+FFFD in its place), and cut text by code points (Array.from(text)) rather than slice()'
  );
}

/**
 * A copy of `value` that JSON text holds exactly: `JSON.stringify` of the copy, read back with
 * `JSON.parse`, equals the copy. Anything JSON would change or drop is refused with a
 * `SerializationError` whose `path` names it (`data.items[3].price`): NaN and ±Infinity (read back
 * as null), BigInt, functions and symbols, undefined in an array and empty array slots (null),
 * Map and Set ({}), Date (a string), any object whose prototype is not a plain object's (read back
 * without it), symbol keys (dropped), NUL and lone surrogates in strings and keys (PostgreSQL cannot
 * store them), cycles, and nesting deeper than MAX_JSON_DEPTH. Three normalisations are accepted,
 * since the value reads the same: a field whose value is undefined is left out, -0 is 0, and an
 * object without a prototype (or from another realm) becomes a plain object.
 *
 * One walk, no JSON pass: the caller stringifies the copy, and can hand the copy out as the value
 * read back. `root` names the value in paths; `event` and `type` say which event, for the message.
 */
export function jsonCopy(value: unknown, root: string, event?: number, type?: string): unknown {
  try {
    if (value === undefined) throw new Refusal('is undefined: JSON has no undefined; give null for "no value"');
    return copy(value, 0);
  } catch (error) {
    throw refusalError(error, value, root, event, type);
  }
}

/** Why a value was refused; collects its path on the way up the walk, innermost key first. */
class Refusal {
  readonly keys: PropertyKey[] = [];
  constructor(
    readonly reason: string,
    readonly cause?: unknown,
  ) {}
}

const TOO_DEEP = `is nested more than ${MAX_JSON_DEPTH} levels deep, which eskit does not store`;
const propertyIsEnumerable = Object.prototype.propertyIsEnumerable;

function copy(value: unknown, depth: number): unknown {
  switch (typeof value) {
    case 'string':
      if (!isStorableText(value)) throw new Refusal(unstorableTextReason(value));
      return value;
    case 'number':
      if (!Number.isFinite(value)) {
        throw new Refusal(`is ${value}, which JSON cannot hold (it would read back as null): store a finite number, or null for "no value"`);
      }
      // -0 is written as 0; the copy must be what is read back.
      return value === 0 ? 0 : value;
    case 'boolean':
      return value;
    case 'object':
      if (value === null) return null;
      if (depth >= MAX_JSON_DEPTH) throw new Refusal(TOO_DEEP);
      return Array.isArray(value) ? copyArray(value, depth + 1) : copyObject(value, depth + 1);
    case 'undefined':
      throw new Refusal('is undefined (or an empty array slot), which JSON stores as null: store null');
    case 'bigint':
      throw new Refusal('is a BigInt, which JSON cannot hold: store it as a string (String(value)) and convert it where you read it');
    default:
      throw new Refusal(`is a ${typeof value}, which JSON drops: store data only`);
  }
}

function copyArray(array: readonly unknown[], depth: number): unknown[] {
  const length = array.length;
  const out = new Array<unknown>(length);
  let i = 0;
  try {
    for (; i < length; i++) out[i] = copy(array[i], depth);
  } catch (error) {
    throw at(error, i);
  }
  return out;
}

function copyObject(object: object, depth: number): Record<string, unknown> {
  const prototype: unknown = Object.getPrototypeOf(object);
  // A plain object's prototype is Object.prototype, or null, or another realm's Object.prototype
  // (whose own prototype is null, as for objects made in a vm context or by a test runner's realm).
  if (prototype !== Object.prototype && prototype !== null && Object.getPrototypeOf(prototype) !== null) {
    throw new Refusal(instanceReason(object, prototype as object));
  }
  const out: Record<string, unknown> = {};
  const keys = Object.keys(object);
  let key: PropertyKey = '';
  try {
    for (let i = 0; i < keys.length; i++) {
      key = keys[i] as string;
      if (!isStorableText(key)) throw new Refusal(`is a key that ${unstorableTextReason(key)}`);
      const item = (object as Record<string, unknown>)[key];
      if (item === undefined) continue;
      const copied = copy(item, depth);
      // Assigning '__proto__' would set the copy's prototype; JSON.parse makes it an own key.
      if (key === '__proto__') Object.defineProperty(out, key, { value: copied, enumerable: true, writable: true, configurable: true });
      else out[key] = copied;
    }
    for (const symbol of Object.getOwnPropertySymbols(object)) {
      if (!propertyIsEnumerable.call(object, symbol)) continue;
      key = symbol;
      throw new Refusal('is a symbol-keyed property, which JSON drops: use a string key');
    }
  } catch (error) {
    throw at(error, key);
  }
  return out;
}

/** The refusal (a getter's or proxy's own error becomes one) with `key` added to its path. */
function at(error: unknown, key: PropertyKey): Refusal {
  const refusal = error instanceof Refusal ? error : new Refusal(`could not be read: ${describeError(error)}`, error);
  refusal.keys.push(key);
  return refusal;
}

function instanceReason(object: object, prototype: object): string {
  const tag = Object.prototype.toString.call(object).slice(8, -1);
  switch (tag) {
    case 'Date':
      return 'is a Date, which JSON stores as a string and reads back as a string: store date.toISOString() (or date.getTime()) and make the Date where you read it';
    case 'Map':
      return 'is a Map, which JSON stores as {}: store a plain object (Object.fromEntries(map)) or an array of entries ([...map])';
    case 'Set':
      return 'is a Set, which JSON stores as {}: store an array ([...set])';
    default: {
      const constructor: unknown = (prototype as { constructor?: unknown }).constructor;
      const name = tag !== 'Object' ? tag : typeof constructor === 'function' && constructor.name !== '' ? constructor.name : 'class';
      return (
        `is a ${name} instance, which JSON would not read back as one: store plain objects, arrays, strings, ` +
        'finite numbers, booleans and null (for example { ...value }), and rebuild the instance where you read it'
      );
    }
  }
}

const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;

function formatPath(root: string, keys: readonly PropertyKey[]): string {
  let path = root;
  for (const key of keys) {
    if (typeof key === 'number') path += `[${key}]`;
    else if (typeof key === 'symbol') path += `[${String(key)}]`;
    else path += IDENTIFIER.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`;
  }
  return path;
}

function refusalError(error: unknown, value: unknown, root: string, event: number | undefined, type: string | undefined): SerializationError {
  const refusal = error instanceof Refusal ? error : new Refusal(`could not be read: ${describeError(error)}`, error);
  let keys = refusal.keys.reverse();
  let reason = refusal.reason;
  if (reason === TOO_DEEP) {
    const cycle = findCycle(value, keys);
    if (cycle !== undefined) {
      keys = keys.slice(0, cycle.at);
      reason = `refers back to ${formatPath(root, keys.slice(0, cycle.target))} (a cycle), which JSON cannot hold`;
    }
  }
  const path = formatPath(root, keys);
  const subject = event === undefined ? '' : ` event ${event} (${type === undefined || isStorableText(type) ? type : JSON.stringify(type)})`;
  return new SerializationError(path, {
    path,
    cause: refusal.cause,
    reason: `Cannot append${subject}: ${path} ${reason}. Nothing was written.`,
  });
}

/**
 * Follows `keys` from `value`: when an object on the way is one of its own ancestors, the path up to
 * it (`at` keys) closes a cycle back to the ancestor reached by the first `target` keys.
 */
function findCycle(value: unknown, keys: readonly PropertyKey[]): { at: number; target: number } | undefined {
  const seen: unknown[] = [value];
  let current = value;
  try {
    for (let i = 0; i < keys.length; i++) {
      current = (current as Record<PropertyKey, unknown>)[keys[i] as PropertyKey];
      const target = seen.indexOf(current);
      if (target !== -1) return { at: i + 1, target };
      seen.push(current);
    }
  } catch {
    // A getter that fails the second time round: report the depth, not the cycle.
  }
  return undefined;
}
