import { randomUUID } from 'node:crypto';
import { resolve as resolvePath } from 'node:path';
import type Database from 'better-sqlite3';

/**
 * Wake-ups for waiters in this process, keyed by database file and lock name, so that a release hands
 * the lock over at once to a waiter on any registry in the process instead of at its next poll.
 */
const wakers = new Map<string, Set<() => void>>();
const privateDatabaseKeys = new WeakMap<Database.Database, string>();

export function fileKey(database: Database.Database): string {
  // An in-memory or temporary database is private to its connection.
  if (database.memory || database.name === '') {
    let key = privateDatabaseKeys.get(database);
    if (key === undefined) {
      key = `private:${randomUUID()}`;
      privateDatabaseKeys.set(database, key);
    }
    return key;
  }
  return `file:${resolvePath(database.name)}`;
}

export function wake(key: string): void {
  for (const waiter of [...(wakers.get(key) ?? [])]) waiter();
}

export function listen(key: string, waiter: () => void): () => void {
  let set = wakers.get(key);
  if (set === undefined) {
    set = new Set();
    wakers.set(key, set);
  }
  set.add(waiter);
  return () => {
    set.delete(waiter);
    if (set.size === 0 && wakers.get(key) === set) wakers.delete(key);
  };
}

