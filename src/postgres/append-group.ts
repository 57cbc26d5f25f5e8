import { ConcurrencyError, DuplicateEventIdError, StreamDeletedError } from '../core/errors.js';
import type { GroupedAppend, GroupOutcome } from '../core/group-commit.js';
import type { PreparedEvent } from '../core/store-base.js';
import type { ExpectedVersion } from '../core/store.js';
import { EXPECTED_ANY, EXPECTED_NO_STREAM, EXPECTED_STREAM_EXISTS, GROUP_REFUSED_DELETED, GROUP_REFUSED_DUPLICATE, GROUP_REFUSED_VERSION } from './append-functions.js';

// The client side of `<schema>.append_group` (append-functions.ts): its parameters, and what its
// answer means for each append of the group.

/** append_group's parameters (see appendGroupFunction in append-functions.ts). */
export function groupValues(group: readonly GroupedAppend[]): unknown[] {
  const streams: string[] = [];
  const expected: number[] = [];
  const counts: number[] = [];
  const previous: number[] = [];
  const eventAppends: number[] = [];
  const eventStreams: string[] = [];
  const ids: string[] = [];
  const types: string[] = [];
  const data: string[] = [];
  const metadata: string[] = [];
  const latest = new Map<string, number>();
  group.forEach((append, index) => {
    const ordinal = index + 1;
    streams.push(append.streamId);
    expected.push(encodeExpected(append.expected));
    counts.push(append.events.length);
    previous.push(latest.get(append.streamId) ?? 0);
    latest.set(append.streamId, ordinal);
    for (const event of append.events) {
      eventAppends.push(ordinal);
      eventStreams.push(append.streamId);
      ids.push(event.id);
      types.push(event.type);
      data.push(event.data);
      metadata.push(event.metadata);
    }
  });
  return [streams, expected, counts, previous, eventAppends, eventStreams, ids, types, data, metadata];
}

/** Each append's outcome from append_group's row: base_position, offsets, versions, time in ms. */
export function groupOutcomes(group: readonly GroupedAppend[], row: unknown[]): GroupOutcome[] {
  const base = Number(row[0]);
  const offsets = row[1] as number[];
  const versions = row[2] as string[];
  // No time when every append was refused (nothing was written).
  const timestamp = new Date(row[3] === null ? Date.now() : Number(row[3]));
  return group.map((append, index): GroupOutcome => {
    const offset = offsets[index] as number;
    const version = Number(versions[index]);
    if (offset === GROUP_REFUSED_VERSION) return new ConcurrencyError(append.streamId, append.expected, version);
    if (offset === GROUP_REFUSED_DELETED) return new StreamDeletedError(append.streamId);
    if (offset === GROUP_REFUSED_DUPLICATE) return new DuplicateEventIdError((append.events[version - 1] as PreparedEvent).id);
    const first = base + offset + 1;
    return { streamVersion: version, positions: append.events.map((_, k) => first + k), timestamp };
  });
}

/** The non-numeric expected versions as the append functions take them (numbers pass through). */
export function encodeExpected(expected: ExpectedVersion): number {
  switch (expected) {
    case 'any':
      return EXPECTED_ANY;
    case 'no_stream':
      return EXPECTED_NO_STREAM;
    case 'stream_exists':
      return EXPECTED_STREAM_EXISTS;
    default:
      return expected;
  }
}
