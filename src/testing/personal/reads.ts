// Appending and reading personal data while its subjects live: encrypted at rest (raw reads hold
// envelopes, never the plaintext), opened by typed reads, values of every kind, several subjects.
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { ErrorCode } from '../../core/errors.js';
import type { NewEvent } from '../../core/event.js';
import { assertUnchanged, expectCode, snapshot } from '../conformance/context.js';
import type { CustomerEvent, PersonalTest } from './context.js';
import { assertAbsent, assertPresent, envelopeAt, message, read, registered, secret, subjectId } from './context.js';

function profileOf(customerId: string, text: string): NewEvent<CustomerEvent> {
  // Falsy values (0, false) are values: encrypted like any other.
  return { type: 'ProfileUpdated', data: { customerId, profile: { name: `${text} name`, tags: [text, 'b'] }, phones: [`${text}-1`, `${text}-2`], age: 0, vip: false } };
}

export function readTests(test: PersonalTest): void {
  describe('appending and reading', () => {
    test('personal fields are stored as envelopes without their plaintext; typed reads give the plaintext', async ({ customers }) => {
      const store = await customers();
      const ann = subjectId('ann');
      const text = secret('ann');
      const stream = `customer-${ann}`;
      const appended = [registered(ann, text), profileOf(ann, text), { type: 'PlanChanged', data: { customerId: ann, plan: 'gold' } } as NewEvent<CustomerEvent>];
      await store.append(stream, appended);

      const raw = await read(store.readStream(stream, { raw: true }));
      assertAbsent(raw, text, 'a raw stream read');
      assertAbsent(await read(store.readAll({ raw: true })), text, 'a raw log read');
      const [first, second, third] = raw;
      const kids = new Set<string>();
      const ivs = new Set<string>();
      for (const path of ['email', 'address.street']) {
        const envelope = envelopeAt(first?.data, path);
        kids.add(envelope.kid);
        ivs.add(envelope.iv);
      }
      for (const path of ['profile', 'phones', 'age', 'vip']) {
        const envelope = envelopeAt(second?.data, path);
        kids.add(envelope.kid);
        ivs.add(envelope.iv);
      }
      assert.equal(kids.size, 1, 'every field of one subject is under its one key');
      assert.equal(ivs.size, 6, 'every field has a nonce of its own');
      assert.equal(first?.data.customerId, ann, 'other fields are stored as they are');
      assert.equal(first?.data.plan, 'basic');
      assert.equal((first?.data.address as { city?: unknown }).city, 'Springfield', 'a sibling of a nested personal field is stored as it is');
      assert.deepEqual(third?.data, appended[2]?.data, 'an event without personal data is stored as it is');

      const typed = await read(store.readStream(stream));
      assert.deepEqual(typed.map((event) => event.data), appended.map((event) => event.data), 'a typed stream read gives the plaintext');
      const log = await read(store.readAll());
      assert.deepEqual(log.map((event) => event.data), appended.map((event) => event.data), 'a typed log read too');
      const backward = await read(store.readStream(stream, { direction: 'backward', fromVersion: 2, limit: 1 }));
      assert.deepEqual(backward.map((event) => event.data), [appended[1]?.data], 'backward, from a version, limited');
      const filtered = await read(store.readAll({ types: ['CustomerRegistered'] }));
      assert.deepEqual(filtered.map((event) => event.data), [appended[0]?.data], 'filtered by type');
      const category = await read(store.readAll({ category: 'customer', after: typed[0]?.position }));
      assert.deepEqual(category.map((event) => event.data), appended.slice(1).map((event) => event.data), 'by category, after a position');
    });

    test('the append result holds the plaintext, and the events given are not changed', async ({ customers }) => {
      const store = await customers();
      const bo = subjectId('bo');
      const text = secret('bo');
      const given = [registered(bo, text), profileOf(bo, text)];
      const copy = structuredClone(given);
      const result = await store.append(`customer-${bo}`, given);
      assert.deepEqual(given, copy, 'the caller\'s events are not encrypted in place');
      assert.deepEqual(result.events.map((event) => event.data), copy.map((event) => event.data), 'the result holds what was appended');
      assertPresent(result.events, text, 'the append result');
      const typed = await read(store.readStream(`customer-${bo}`));
      assert.deepEqual(typed.map((event) => event.data), result.events.map((event) => event.data), 'a read gives what the append returned');
      assert.deepEqual(typed.map((event) => event.id), result.events.map((event) => event.id));
    });

    test('absent and null personal fields are left as they are', async ({ customers }) => {
      const store = await customers();
      const cy = subjectId('cy');
      const text = secret('cy');
      const given: NewEvent<CustomerEvent>[] = [
        registered(cy, text, { street: null }),
        { type: 'ProfileUpdated', data: { customerId: cy, profile: null } },
      ];
      await store.append(`customer-${cy}`, given);
      const raw = await read(store.readStream(`customer-${cy}`, { raw: true }));
      envelopeAt(raw[0]?.data, 'email');
      assert.deepEqual(raw[0]?.data.address, { city: 'Springfield' }, 'an absent nested field stays absent');
      assert.deepEqual(raw[1]?.data, { customerId: cy, profile: null }, 'null stays null, absent fields stay absent');
      const typed = await read(store.readStream(`customer-${cy}`));
      assert.deepEqual(typed.map((event) => event.data), given.map((event) => event.data));
      assert.equal(Object.hasOwn(typed[1]?.data ?? {}, 'phones'), false, 'no field appears');
    });

    test('an event with two subjects (personal as a list) has each field under its own subject\'s key', async ({ customers }) => {
      const store = await customers();
      const [dee, eli] = [subjectId('dee'), subjectId('eli')];
      const [deeText, eliText] = [secret('dee'), secret('eli')];
      const given = [message(dee, eli, deeText, eliText), message(dee, dee, `${deeText} to self`, `${deeText} from self`)];
      await store.append('messages', given);
      const raw = await read(store.readStream('messages', { raw: true }));
      assertAbsent(raw, deeText, 'raw');
      assertAbsent(raw, eliText, 'raw');
      assert.notEqual(envelopeAt(raw[0]?.data, 'fromNote').kid, envelopeAt(raw[0]?.data, 'toNote').kid, 'two subjects: two keys');
      assert.equal(envelopeAt(raw[1]?.data, 'fromNote').kid, envelopeAt(raw[1]?.data, 'toNote').kid, 'one subject twice: one key');
      assert.equal(raw[0]?.data.topic, 'hello');
      const typed = await read(store.readStream('messages'));
      assert.deepEqual(typed.map((event) => event.data), given.map((event) => event.data));
    });

    test('a read of many subjects opens each event with its own subject\'s key', async ({ customers }) => {
      const store = await customers();
      const people = Array.from({ length: 25 }, (_, index) => ({ id: subjectId(`p${index}`), text: secret(`p${index}`) }));
      for (const [index, person] of people.entries()) {
        await store.append(`customer-${person.id}`, [registered(person.id, person.text)]);
        // Interleaved: the events of one page belong to many subjects.
        await store.append(`customer-${people[(index + 7) % people.length]?.id as string}`, [profileOf(person.id, person.text)]);
      }
      const log = await read(store.readAll());
      assert.equal(log.length, 50);
      for (const event of log) {
        const person = people.find((candidate) => candidate.id === event.data.customerId);
        assert.ok(person !== undefined);
        const field = event.type === 'CustomerRegistered' ? event.data.email : (event.data.profile as { name: string }).name;
        assert.ok(typeof field === 'string' && field.startsWith(person.text), `event at ${event.position} reads its own subject's plaintext`);
      }
    });

    test('a subject function that gives no subject refuses the append, which writes nothing', async ({ customers }) => {
      const store = await customers();
      await store.append('customer-x', [registered(subjectId('fay'), secret('fay'))]);
      const before = await snapshot(store, ['customer-x']);
      const text = secret('nobody');
      await expectCode(() => store.append('customer-x', [registered('', text)]), ErrorCode.EventValidation);
      await expectCode(() => store.append('customer-x', [registered(subjectId('gus'), secret('gus')), message('', subjectId('hal'), text, text)]), ErrorCode.EventValidation);
      await assertUnchanged(store, before, 'an append whose subject is empty');
      assertAbsent(await read(store.readAll({ raw: true })), text, 'the log');
    });
  });
}
