import { InvalidArgumentError } from './errors.js';
import type { LiveMember, MemberHeartbeat } from './members.js';
import { isStorableText, MAX_TIMER_MS } from './validate.js';

/*
 * Argument checks shared by every MemberRegistry adapter, so that they all accept and refuse exactly
 * the same input (the conformance suite checks this).
 */

/** How long a member row stays after its ttl ran out before a heartbeat of its group deletes it. */
export const MEMBER_ROW_RETENTION_MS = 60_000;

function checkName(what: string, value: unknown, hint: string): string {
  if (typeof value !== 'string' || value.length === 0) {
    throw new InvalidArgumentError(`${what} must be a non-empty string (${hint}), got ${JSON.stringify(value) ?? String(value)}`);
  }
  // Refused everywhere, as PostgreSQL cannot store it: what works on one adapter works on all.
  if (!isStorableText(value)) {
    throw new InvalidArgumentError(`${what} contains U+0000 or a lone surrogate, which PostgreSQL cannot store; give it a name of plain text`);
  }
  return value;
}

export function checkGroup(group: unknown): string {
  return checkName('A member group', group, 'the name of the partitioned runner the nodes share');
}

export function checkMemberId(id: unknown): string {
  return checkName('A member id', id, 'one per node, e.g. `<host>/<pid>/<random>`');
}

export function checkHeartbeat(member: unknown): MemberHeartbeat {
  if (typeof member !== 'object' || member === null) {
    throw new InvalidArgumentError('heartbeat needs a member: { id, partitions, ttlMs }');
  }
  const { id, partitions, ttlMs } = member as Partial<MemberHeartbeat>;
  checkMemberId(id);
  if (typeof partitions !== 'number' || !Number.isSafeInteger(partitions) || partitions < 1) {
    throw new InvalidArgumentError(`partitions must be a positive integer (the partition count this member runs with), got ${String(partitions)}`);
  }
  if (typeof ttlMs !== 'number' || !Number.isSafeInteger(ttlMs) || ttlMs < 1 || ttlMs > MAX_TIMER_MS) {
    throw new InvalidArgumentError(
      `ttlMs must be a positive integer number of milliseconds (at most ${MAX_TIMER_MS}): how long this member counts as alive ` +
        `without another heartbeat, longer than the time between heartbeats; got ${String(ttlMs)}`,
    );
  }
  return { id: id as string, partitions, ttlMs };
}

/** Members sorted by id the same way on every adapter (code units, as JavaScript compares strings). */
export function sortMembers(members: LiveMember[]): LiveMember[] {
  return members.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}
