// Personal data through the readers that do more than read a stream: renamed and split types (their
// envelopes were written under the old names), and a log read a batch at a time as a subscription
// reads it.
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import type { Metadata } from '../../core/event.js';
import type { CompiledPersonal } from '../../core/personal/fields.js';
import { isRedacted } from '../../core/personal/types.js';
import type { Personal } from '../../core/personal/types.js';
import { EventRegistry } from '../../core/registry.js';
import type { EventDefinitions, EventRegistryOptions } from '../../core/registry.js';
import type { EventStoreBase } from '../../core/store-base.js';
import type { PersonalTest } from './context.js';
import { assertAbsent, envelopeAt, message, read, registered, secret, subjectId } from './context.js';

// ContactAdded was called ContactCreated; Onboarded (a contact and an address in one event) was split.
type ContactEvent =
  | { type: 'ContactAdded'; data: { customerId: string; email: Personal<string>; source: string } }
  | { type: 'AddressSet'; data: { customerId: string; street: Personal<string>; city: string } };
type Onboarded = { customerId: string; email: string; street: string; city: string };

const definitions: EventDefinitions<ContactEvent> = {
  ContactAdded: {
    renamedFrom: ['ContactCreated'],
    personal: { subject: (data) => data.customerId, fields: ['email'] },
    validate: (data) => {
      if (typeof (data as { email?: unknown }).email !== 'string') throw new Error('email is a string');
      return data as ContactEvent['data'] & { source: string; email: string };
    },
  },
  AddressSet: {
    personal: { subject: (data) => data.customerId, fields: ['street'] },
    validate: (data) => {
      if (typeof (data as { street?: unknown }).street !== 'string') throw new Error('street is a string');
      return data as { customerId: string; street: string; city: string };
    },
  },
};

const splits: EventRegistryOptions<ContactEvent>['splits'] = {
  Onboarded: {
    into: ['ContactAdded', 'AddressSet'],
    split: (data) => {
      const { customerId, email, street, city } = data as Onboarded;
      return [
        { type: 'ContactAdded', data: { customerId, email, source: 'onboarding' } },
        { type: 'AddressSet', data: { customerId, street, city } },
      ];
    },
  },
};

/**
 * Today's registry, appending as the code before the rename and the split did: the retired types pass,
 * encrypted with the personal fields they had then. Reads use today's rules.
 */
class OldCodeRegistry extends EventRegistry<ContactEvent> {
  readonly #then = new EventRegistry<{ type: 'ContactCreated'; data: { customerId: string; email: string } } | { type: 'Onboarded'; data: Onboarded }>({
    ContactCreated: { personal: { subject: (data) => data.customerId, fields: ['email'] } },
    Onboarded: { personal: { subject: (data) => data.customerId, fields: ['email', 'street'] } },
  });

  constructor() {
    super(definitions, { splits });
  }

  override encode(_type: string, data: unknown): unknown {
    return data;
  }

  override personalOf(type: string): readonly CompiledPersonal[] | undefined {
    return this.#then.personalOf(type) ?? super.personalOf(type);
  }
}

/** Appends as old code did (any type). */
function appendOld(store: EventStoreBase<ContactEvent>, stream: string, events: Array<{ type: string; data: unknown; metadata?: Metadata }>) {
  return store.append(stream, events as never);
}

export function evolutionTests(test: PersonalTest): void {
  describe('schema evolution and batched readers', () => {
    test('renamed and split types with personal fields decode, and read redacted once their subject is forgotten', async ({ open }) => {
      const store = await open<ContactEvent>(new OldCodeRegistry());
      const [sam, tia] = [subjectId('sam'), subjectId('tia')];
      const [samText, tiaText] = [secret('sam'), secret('tia')];
      const stream = 'contacts';
      await appendOld(store, stream, [
        { type: 'ContactCreated', data: { customerId: sam, email: `${samText}@example.com` } },
        { type: 'Onboarded', data: { customerId: sam, email: `${samText}@example.com`, street: `${samText} Street`, city: 'Oslo' } },
        { type: 'Onboarded', data: { customerId: tia, email: `${tiaText}@example.com`, street: `${tiaText} Street`, city: 'Rome' } },
      ]);
      await store.append(stream, [{ type: 'ContactAdded', data: { customerId: sam, email: `${samText}@now.example`, source: 'web' } }]);
      const raw = await read(store.readStream(stream, { raw: true }));
      assertAbsent(raw, samText, 'raw reads of old types');
      envelopeAt(raw[0]?.data, 'email');
      envelopeAt(raw[1]?.data, 'street');

      const live = await read(store.readStream(stream));
      assert.deepEqual(live.map((event) => event.type), ['ContactAdded', 'ContactAdded', 'AddressSet', 'ContactAdded', 'AddressSet', 'ContactAdded']);
      assert.equal(live[0]?.data.email, `${samText}@example.com`, 'a renamed type decrypts');
      assert.equal(live[2]?.data.street, `${samText} Street`, 'a split\'s part decrypts');

      await store.forget(sam);
      const after = await read(store.readStream(stream));
      assert.deepEqual(after.map((event) => event.type), live.map((event) => event.type), 'the same events, whose validate would refuse the marker');
      for (const index of [0, 1, 5]) assert.ok(isRedacted(after[index]?.data.email), `event ${index}: the email is redacted`);
      assert.ok(isRedacted(after[2]?.data.street), 'the split part\'s street is redacted');
      assert.equal(after[2]?.data.city, 'Oslo', 'the other fields of a part are intact');
      assert.equal(after[1]?.data.source, 'onboarding');
      assert.equal(after[3]?.data.email, `${tiaText}@example.com`, 'another subject\'s split event reads as written');
      assert.equal(after[4]?.data.street, `${tiaText} Street`);
      assertAbsent(after, samText, 'a typed read after forget');
      const addresses = await read(store.readAll({ types: ['AddressSet'] }));
      assert.deepEqual(addresses.map((event) => [isRedacted(event.data.street), event.data.city]), [[true, 'Oslo'], [false, 'Rome']], 'a filter keeping one part of a split');
    });

    test('a log read a batch at a time after forget (as a subscription reads it) delivers the subject\'s events redacted', async ({ customers }) => {
      const store = await customers();
      const [uma, vic] = [subjectId('uma'), subjectId('vic')];
      const [umaText, vicText] = [secret('uma'), secret('vic')];
      for (let round = 0; round < 4; round++) {
        await store.append(`customer-${uma}`, [registered(uma, `${umaText}-${round}`)]);
        await store.append(`customer-${vic}`, [registered(vic, `${vicText}-${round}`)]);
        await store.append('messages', [message(uma, vic, umaText, vicText)]);
      }
      await store.forget(uma);
      const batches = async (options: { types?: string[]; category?: string }) => {
        const seen = [];
        let after = 0;
        for (;;) {
          const batch = await read(store.readAll({ ...options, after, limit: 2 }));
          if (batch.length === 0) return seen;
          seen.push(...batch);
          after = batch.at(-1)?.position as number;
        }
      };
      const all = await batches({});
      assert.equal(all.length, 12, 'every event, none failing');
      assertAbsent(all, umaText, 'batched read');
      const vics = all.filter((event) => event.type === 'CustomerRegistered' && event.data.customerId === vic);
      assert.deepEqual(vics.map((event) => event.data.email), [0, 1, 2, 3].map((round) => `${vicText}-${round}@example.com`), 'the other subject reads as written');
      const customersOnly = await batches({ category: 'customer' });
      assert.equal(customersOnly.length, 8);
      assert.equal(customersOnly.filter((event) => isRedacted(event.data.email)).length, 4);
      const messages = await batches({ types: ['MessageSent'] });
      assert.deepEqual(messages.map((event) => [isRedacted(event.data.fromNote), event.data.toNote]), Array.from({ length: 4 }, () => [true, vicText]));
    });
  });
}
