// How EventStoreBase turns the rows an adapter reads into the events a reader iterates: the paging
// iterator, and the one decode path every reader goes through (JSON, registry upcasting, renames, splits).
import { CorruptEventError, ErrorCode, EventValidationError, isEskitError } from './errors.js';
import type { EventShape, Metadata, Recorded } from './event.js';
import type { EventRegistry } from './registry.js';
import type { StoredEventRow } from './store-base.js';
import { markPersonal } from './personal/personal-data.js';
import type { Opened } from './personal/fields.js';

/**
 * On the iterable `readAll` returns (EventStoreBase): once an iteration has run to its end (not left
 * with `break`), the position of the last stored row it fetched. Every row up to it was delivered or skipped (a lifecycle event a typed
 * read leaves out, a split's parts none of which were asked for), so a reader may go on from there:
 * the subscription runners use it so that a tail of skipped rows is not read again at every poll.
 */
export const LOOKED_THROUGH: unique symbol = Symbol('eskit.readAll.lookedThrough');

/** A stored row as read: one event, a split's parts, or nothing left once a filter kept none of them. */
export type DecodedRow = Recorded | Recorded[] | undefined;

/**
 * An async iterable over pages fetched on demand. Hand-written rather than an async generator: a
 * generator costs a promise chain per event, which showed as ~20% of a SQLite scan. Argument checks
 * (`start`) run on the first `next()`, so a bad read rejects like any other read failure. A stored row
 * is decoded when its turn comes (the events before a failing one are delivered first); a split row
 * yields its parts one after another, never across pages. `skipped` hears of each row that left nothing.
 */
export function pagedRead(
  start: () => void,
  nextPage: () => Promise<StoredEventRow[] | undefined>,
  decode: (row: StoredEventRow) => DecodedRow,
  skipped?: () => void,
): AsyncIterable<Recorded> {
  return {
    [Symbol.asyncIterator]: () => {
      let rows: StoredEventRow[] = [];
      let index = 0;
      let parts: Recorded[] | undefined;
      let partIndex = 0;
      let started = false;
      let done = false;
      const finish = (): IteratorResult<Recorded> => {
        done = true;
        rows = [];
        parts = undefined;
        return { value: undefined, done: true };
      };
      // The next event of the page in hand; undefined when it is used up.
      const take = (): Recorded | undefined => {
        if (parts !== undefined) {
          if (partIndex < parts.length) return parts[partIndex++];
          parts = undefined;
        }
        while (index < rows.length) {
          const decoded = decode(rows[index++] as StoredEventRow);
          if (decoded === undefined) {
            skipped?.();
            continue;
          }
          if (!Array.isArray(decoded)) return decoded;
          parts = decoded;
          partIndex = 1;
          return decoded[0];
        }
        return undefined;
      };
      const fill = async (): Promise<IteratorResult<Recorded>> => {
        if (!started) {
          started = true;
          start();
        }
        for (;;) {
          if (done) return finish();
          const page = await nextPage();
          if (page === undefined) return finish();
          rows = page;
          index = 0;
          const event = take();
          if (event !== undefined) return { value: event, done: false };
        }
      };
      return {
        next: (): Promise<IteratorResult<Recorded>> => {
          if (index < rows.length || parts !== undefined) {
            try {
              const event = take();
              if (event !== undefined) return Promise.resolve({ value: event, done: false });
            } catch (error) {
              finish();
              return Promise.reject(error);
            }
          }
          return fill().catch((error: unknown) => {
            finish();
            throw error;
          });
        },
        return: (): Promise<IteratorResult<Recorded>> => Promise.resolve(finish()),
      };
    },
  };
}

/**
 * A stored row as the event(s) it is read as, through the registry (the one decode path of every
 * reader): one event (the row itself, changed in place), a split's parts (an array), or undefined
 * when `keep` leaves none of them. `raw`: JSON only, the stored type and data as they are. `opened`:
 * the row's data with its personal fields opened (see PersonalData.openPage), used instead of its JSON.
 */
export function decodeRow<E extends EventShape>(
  row: StoredEventRow,
  registry: EventRegistry<E> | undefined,
  raw: boolean,
  keep: ReadonlySet<string> | undefined,
  opened?: Opened,
): DecodedRow {
  if (opened?.failure !== undefined) throw opened.failure;
  let data: unknown;
  let metadata: Metadata;
  try {
    data = opened === undefined ? JSON.parse(row.data) : opened.data;
    metadata = JSON.parse(row.metadata) as Metadata;
  } catch (cause) {
    throw new CorruptEventError(row.position, 'its data or metadata is not valid JSON', { cause });
  }
  if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata)) {
    throw new CorruptEventError(row.position, 'its metadata is not an object');
  }
  // Adapters hand over rows of their own (never shared), so the row becomes the event in place:
  // one object per event instead of two.
  const event = row as unknown as Recorded;
  event.metadata = metadata;
  if (raw || !registry) {
    event.data = data;
    return event;
  }
  if (opened === undefined || opened.kids.length === 0) return decodeThrough(registry, event, data, keep, opened);
  try {
    return decodeThrough(registry, event, data, keep, opened);
  } catch (error) {
    // An upcaster's or validate's reason may quote the plaintext it was given, and a read's error
    // reaches logs and status: withheld, as the errors of handlers on such events are.
    if (!isEskitError(error, ErrorCode.EventValidation)) throw error;
    throw new EventValidationError(event.type, 'its upcasters or validate refused it; the reason is withheld, as it may quote the personal data the event holds', { position: event.position });
  }
}

/** The registry's part of decodeRow: renames, splits, upcasters and validate, then the `keep` filter. */
function decodeThrough<E extends EventShape>(registry: EventRegistry<E>, event: Recorded, stored: unknown, keep: ReadonlySet<string> | undefined, opened: Opened | undefined): DecodedRow {
  const redacted = opened?.redacted === true;
  if (registry.isSplit(event.type)) {
    event.data = stored;
    const parts: Recorded[] = registry.decodeEvent(event, { redacted });
    const kept = keep === undefined ? parts : parts.filter((part) => keep.has(part.type));
    if (opened !== undefined) for (const part of kept) markPersonal(part, opened.kids);
    return kept.length === 0 ? undefined : kept;
  }
  event.data = registry.decode(event.type, stored, event.metadata, event.position, { redacted });
  event.type = registry.decodedType(event.type);
  if (keep !== undefined && !keep.has(event.type)) return undefined;
  if (opened !== undefined) markPersonal(event, opened.kids);
  return event;
}
