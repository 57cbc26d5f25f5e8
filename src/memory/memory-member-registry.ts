import { checkGroup, checkHeartbeat, checkMemberId, sortMembers } from '../core/member-checks.js';
import type { LiveMember, MemberHeartbeat, MemberRegistry } from '../core/members.js';

interface Entry {
  partitions: number;
  /** performance.now() past which the member is dead: the process is the database here. */
  expiresAt: number;
}

/**
 * Who is alive in each group, in this process's memory: every "node" shares this instance. For tests
 * and examples; `expire()` kills a member at once, as a SIGKILL ending a node's lock session would.
 */
export class MemoryMemberRegistry implements MemberRegistry {
  readonly #groups = new Map<string, Map<string, Entry>>();
  readonly #listeners = new Set<(group: string) => void>();

  async heartbeat(group: string, member: MemberHeartbeat): Promise<LiveMember[]> {
    checkGroup(group);
    const { id, partitions, ttlMs } = checkHeartbeat(member);
    const now = performance.now();
    let members = this.#groups.get(group);
    if (members === undefined) {
      members = new Map();
      this.#groups.set(group, members);
    }
    const before = members.get(id);
    members.set(id, { partitions, expiresAt: now + ttlMs });
    if (before === undefined || before.expiresAt <= now) this.#announce(group);
    const live: LiveMember[] = [];
    for (const [other, entry] of members) {
      if (entry.expiresAt > now) live.push({ id: other, partitions: entry.partitions });
      // The database adapters keep a dead row a while; here nothing reads it, so it goes at once.
      else members.delete(other);
    }
    return sortMembers(live);
  }

  async leave(group: string, member: string): Promise<void> {
    checkGroup(group);
    checkMemberId(member);
    this.#remove(group, member);
  }

  /** Makes `member` dead at once and tells the listeners: a node killed without a word. */
  expire(group: string, member: string): void {
    this.#remove(group, member);
  }

  onChange(listener: (group: string) => void): () => void {
    // Wrapped, so that the same function added twice is two listeners with a remover each.
    const wrapped = (group: string): void => listener(group);
    this.#listeners.add(wrapped);
    return () => void this.#listeners.delete(wrapped);
  }

  #remove(group: string, member: string): void {
    const members = this.#groups.get(group);
    if (members === undefined || !members.delete(member)) return;
    if (members.size === 0) this.#groups.delete(group);
    this.#announce(group);
  }

  /**
   * After the current call, as a database notification would come: a listener that heartbeats or
   * leaves from inside runs on a registry no longer in the middle of a change.
   */
  #announce(group: string): void {
    for (const listener of this.#listeners) {
      queueMicrotask(() => {
        // A listener removed meanwhile hears nothing more.
        if (!this.#listeners.has(listener)) return;
        try {
          listener(group);
        } catch {
          // A hint that a listener failed to take: its next heartbeat tells it the same.
        }
      });
    }
  }
}
