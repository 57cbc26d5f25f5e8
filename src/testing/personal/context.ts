// What personalDataConformance shares between its files: the harness an adapter hands it, the event
// types the suite writes (its own registry, with personal fields of every shape), and small helpers.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { it } from 'node:test';
import type { EventShape, NewEvent, Recorded } from '../../core/event.js';
import type { Personal } from '../../core/personal/types.js';
import { EventRegistry } from '../../core/registry.js';
import type { EventStoreBase } from '../../core/store-base.js';
import { collect } from '../conformance/context.js';

/** An event store on fresh, empty storage, built with the registry the suite gave. */
export interface PersonalDataStores<E extends EventShape> {
  /** The adapter's event store, with its own subject key store (as the adapter's backend builds it). */
  store: EventStoreBase<E>;
  /** Releases what `create` (or `openAnother`) opened: connections, files, schemas. */
  close(): Promise<void>;
}

/** What an adapter hands `personalDataConformance`. */
export interface PersonalDataConformanceHarness {
  /** Shown in test names, e.g. 'memory', 'sqlite', 'postgres'. */
  name: string;
  /**
   * An event store on fresh, empty storage, built with `registry` (the suite defines its own event
   * types with personal fields) and the adapter's subject key store, as its backend makes it. Called
   * once or more per test; everything it returns is closed when the test ends.
   */
  create<E extends EventShape>(registry: EventRegistry<E>): Promise<PersonalDataStores<E>>;
  /**
   * Optional: a second store on the same storage as `store` (its own connection and key cache, as
   * another process would have), built with `registry`. Without it the cross-handle tests are not registered.
   */
  openAnother?<E extends EventShape>(store: EventStoreBase<E>, registry: EventRegistry<E>): Promise<PersonalDataStores<E>>;
  /**
   * Optional: overwrites the stored data of the event at `position` with `data` (valid JSON text, as
   * an attacker with write access to the table could). Without it the tampering tests are not registered.
   */
  tamper?<E extends EventShape>(store: EventStoreBase<E>, position: number, data: string): Promise<void>;
  /** Fails a test that runs longer than this (a hung query must fail, not stall CI). Default 60 000. */
  testTimeoutMs?: number;
}

// The suite's own events: a customer (one subject per event, nested and whole-object fields, values of
// every JSON kind), an event without personal data, and a message with two subjects.
export interface Profile {
  name: string;
  tags: string[];
}
export type CustomerEvent =
  | { type: 'CustomerRegistered'; data: { customerId: string; email: Personal<string>; address: { city: string; street?: Personal<string> }; plan: string } }
  | { type: 'ProfileUpdated'; data: { customerId: string; profile: Personal<Profile> | null; phones?: Personal<string[]>; age?: Personal<number>; vip?: Personal<boolean> } }
  | { type: 'PlanChanged'; data: { customerId: string; plan: string } }
  | { type: 'MessageSent'; data: { from: string; to: string; topic: string; fromNote: Personal<string>; toNote: Personal<string> } };

type Registered = Extract<CustomerEvent, { type: 'CustomerRegistered' }>['data'];

/**
 * The suite's registry. CustomerRegistered's validate refuses anything but a string email and street,
 * as an application's would: the redaction marker a forgotten field reads as must not make reads fail.
 */
export function customerRegistry(): EventRegistry<CustomerEvent> {
  return new EventRegistry<CustomerEvent>({
    CustomerRegistered: {
      personal: { subject: (data) => data.customerId, fields: ['email', 'address.street'] },
      validate: (data) => {
        const d = data as Partial<Registered>;
        if (typeof d.customerId !== 'string' || typeof d.email !== 'string' || typeof d.plan !== 'string') throw new Error('customerId, email and plan are strings');
        if (typeof d.address?.city !== 'string' || (d.address.street !== undefined && typeof d.address.street !== 'string')) throw new Error('address is { city, street? } of strings');
        return d as Registered;
      },
    },
    ProfileUpdated: { personal: { subject: (data) => data.customerId, fields: ['profile', 'phones', 'age', 'vip'] } },
    PlanChanged: {},
    MessageSent: {
      personal: [
        { subject: (data) => data.from, fields: ['fromNote'] },
        { subject: (data) => data.to, fields: ['toNote'] },
      ],
    },
  });
}

export type CustomerStore = EventStoreBase<CustomerEvent>;

/** What a test gets: stores on fresh storage, all closed when it ends. */
export interface PersonalTestContext {
  /** A store built with `registry` on fresh storage. */
  open<E extends EventShape>(registry: EventRegistry<E>): Promise<EventStoreBase<E>>;
  /** A store built with `customerRegistry()` on fresh storage. */
  customers(): Promise<CustomerStore>;
  /** A second store on `store`'s storage (only in tests registered when the harness has openAnother). */
  another<E extends EventShape>(store: EventStoreBase<E>, registry: EventRegistry<E>): Promise<EventStoreBase<E>>;
}

export type PersonalTest = (name: string, fn: (context: PersonalTestContext) => Promise<void>) => void;

/** `it` with a context whose stores are closed when the test ends, whatever happened. */
export function personalTest(harness: PersonalDataConformanceHarness): PersonalTest {
  return (name, fn) => {
    it(name, { timeout: harness.testTimeoutMs ?? 60_000 }, async () => {
      const opened: Array<{ close(): Promise<void> }> = [];
      const open = async <E extends EventShape>(registry: EventRegistry<E>): Promise<EventStoreBase<E>> => {
        const stores = await harness.create(registry);
        opened.push(stores);
        return stores.store;
      };
      const another = async <E extends EventShape>(store: EventStoreBase<E>, registry: EventRegistry<E>): Promise<EventStoreBase<E>> => {
        if (!harness.openAnother) throw new Error(`harness ${harness.name} has no openAnother`);
        const stores = await harness.openAnother(store, registry);
        opened.push(stores);
        return stores.store;
      };
      try {
        await fn({ open, customers: () => open(customerRegistry()), another });
      } finally {
        // The second handles first: they live on the storage the first store owns.
        await closeAll(opened.reverse());
      }
    });
  };
}

/** Closes each in turn, even when one fails; then throws the first failure. */
export async function closeAll(list: ReadonlyArray<{ close(): Promise<void> }>): Promise<void> {
  let failure: { reason: unknown } | undefined;
  for (const item of list) {
    try {
      await item.close();
    } catch (reason) {
      failure ??= { reason };
    }
  }
  if (failure) throw failure.reason;
}

/** A string found nowhere else: a value holding it must never be readable where it should not be. */
export function secret(label: string): string {
  return `${label}-SECRET-${randomUUID()}`;
}

/** A subject of its own for each use. */
export function subjectId(label: string): string {
  return `${label}-${randomUUID()}`;
}

export function registered(customerId: string, secretText: string, options: { street?: string | null; plan?: string } = {}): NewEvent<CustomerEvent> {
  const address: { city: string; street?: string } = { city: 'Springfield' };
  if (options.street !== null) address.street = options.street ?? `1 ${secretText} Street`;
  return { type: 'CustomerRegistered', data: { customerId, email: `${secretText}@example.com`, address, plan: options.plan ?? 'basic' } };
}

export function message(from: string, to: string, fromNote: string, toNote: string): NewEvent<CustomerEvent> {
  return { type: 'MessageSent', data: { from, to, topic: 'hello', fromNote, toNote } };
}

/** Every event of the read, as plain records (for assertions on data of any type). */
export async function read(iterable: AsyncIterable<Recorded>): Promise<Array<Recorded & { data: Record<string, unknown> }>> {
  return (await collect(iterable)) as Array<Recorded & { data: Record<string, unknown> }>;
}

/** Asserts `text` appears nowhere in what `value` serialises to. */
export function assertAbsent(value: unknown, text: string, what: string): void {
  assert.ok(!JSON.stringify(value).includes(text), `${what} must not hold the plaintext ${text}`);
}

/** Asserts `text` appears somewhere in what `value` serialises to. */
export function assertPresent(value: unknown, text: string, what: string): void {
  assert.ok(JSON.stringify(value).includes(text), `${what} must hold ${text}`);
}

/** The field envelope at `path` of raw data: `{ $enc: 1, kid, iv, ct }`. */
export function envelopeAt(data: unknown, path: string): { $enc: number; kid: string; iv: string; ct: string } {
  let node = data;
  for (const name of path.split('.')) node = (node as Record<string, unknown> | undefined)?.[name];
  const envelope = node as { $enc?: unknown; kid?: unknown; iv?: unknown; ct?: unknown } | undefined;
  assert.ok(
    envelope?.$enc === 1 && typeof envelope.kid === 'string' && typeof envelope.iv === 'string' && typeof envelope.ct === 'string',
    `${path} is stored as an envelope { $enc: 1, kid, iv, ct }, got ${JSON.stringify(envelope)}`,
  );
  return envelope as { $enc: number; kid: string; iv: string; ct: string };
}
