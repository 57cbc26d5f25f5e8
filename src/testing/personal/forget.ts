// forget(subject): the subject's fields read as the redaction marker (and nothing else changes), the
// `$subject.forgotten` event, appends of its personal data refused until allowNewKey.
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { ErrorCode } from '../../core/errors.js';
import type { NewEvent } from '../../core/event.js';
import { SUBJECT_FORGOTTEN, subjectStreamId } from '../../core/lifecycle.js';
import { isRedacted, REDACTED } from '../../core/personal/types.js';
import { assertUnchanged, expectCode, snapshot } from '../conformance/context.js';
import type { CustomerEvent, PersonalTest } from './context.js';
import { assertAbsent, assertPresent, customerRegistry, envelopeAt, message, read, registered, secret, subjectId } from './context.js';

const profileOf = (customerId: string, text: string): NewEvent<CustomerEvent> => ({
  type: 'ProfileUpdated',
  data: { customerId, profile: { name: text, tags: [text] }, phones: [text], age: 41, vip: true },
});
const planChanged = (customerId: string, plan = 'gold'): NewEvent<CustomerEvent> => ({ type: 'PlanChanged', data: { customerId, plan } });

export function forgetTests(test: PersonalTest): void {
  describe('forget', () => {
    test('the subject\'s personal fields read as the redaction marker; every other field, event and subject as before', async ({ customers }) => {
      const store = await customers();
      const [ivy, jo] = [subjectId('ivy'), subjectId('jo')];
      const [ivyText, joText] = [secret('ivy'), secret('jo')];
      await store.append(`customer-${ivy}`, [registered(ivy, ivyText), profileOf(ivy, ivyText), planChanged(ivy)]);
      await store.append(`customer-${jo}`, [registered(jo, joText)]);
      const rawBefore = await read(store.readAll({ raw: true }));

      const result = await store.forget(ivy);
      assert.equal(result.subject, ivy);
      assert.equal(result.keysDestroyed, 1);
      assert.equal(result.alreadyForgotten, false);
      assert.ok(Number.isSafeInteger(result.position) && result.position > (rawBefore.at(-1)?.position ?? 0), 'forget returns the position of its event');

      const [registeredEvent, profile, plan] = await read(store.readStream(`customer-${ivy}`));
      const data = registeredEvent?.data as { customerId: string; email: unknown; address: { city: string; street: unknown }; plan: string };
      assert.ok(isRedacted(data.email), 'email is redacted');
      assert.ok(isRedacted(data.address.street), 'a nested field is redacted');
      assert.deepEqual(data.email, REDACTED, 'the marker is { $redacted: true }');
      assert.deepEqual({ customerId: data.customerId, city: data.address.city, plan: data.plan }, { customerId: ivy, city: 'Springfield', plan: 'basic' }, 'the other fields read as before');
      for (const field of ['profile', 'phones', 'age', 'vip']) assert.ok(isRedacted(profile?.data[field]), `${field} (a whole value) is redacted`);
      assert.equal(profile?.data.customerId, ivy);
      assert.deepEqual(plan?.data, { customerId: ivy, plan: 'gold' }, 'an event without personal data reads as before');
      // The registry's validate refuses the marker: the read above passed because redacted events skip it.
      assert.throws(() => customerRegistry().encode('CustomerRegistered', data), 'validate would refuse the redacted data');

      const log = await read(store.readAll());
      assertAbsent(log, ivyText, 'a typed read after forget');
      assertPresent(log, joText, 'another subject\'s events');
      assert.deepEqual(log.find((event) => event.data.customerId === jo)?.data, registered(jo, joText).data);
      const filtered = await read(store.readAll({ types: ['CustomerRegistered', 'ProfileUpdated'] }));
      assert.equal(filtered.filter((event) => event.data.customerId === ivy && (isRedacted(event.data.email) || isRedacted(event.data.profile))).length, 2);

      const rawAfter = await read(store.readAll({ raw: true }));
      assert.deepEqual(rawAfter.filter((event) => event.position < result.position), rawBefore, 'stored events never change');
      assertAbsent(rawAfter, ivyText, 'a raw read after forget');
    });

    test('$subject.forgotten is read by readers naming it, and not by an unfiltered typed read', async ({ customers }) => {
      const store = await customers();
      const kim = subjectId('kim');
      await store.append(`customer-${kim}`, [registered(kim, secret('kim'))]);
      const first = await store.forget(kim);
      const forgotten = await read(store.readAll({ types: [SUBJECT_FORGOTTEN] }));
      assert.equal(forgotten.length, 1);
      assert.deepEqual(
        { type: forgotten[0]?.type, streamId: forgotten[0]?.streamId, position: forgotten[0]?.position, data: forgotten[0]?.data },
        { type: SUBJECT_FORGOTTEN, streamId: subjectStreamId(kim), position: first.position, data: { subject: kim, keysDestroyed: 1 } },
      );
      assert.equal(subjectStreamId(kim), `$subject-${kim}`);
      const unfiltered = await read(store.readAll());
      assert.deepEqual(unfiltered.map((event) => event.type), ['CustomerRegistered'], 'an unfiltered typed read leaves it out');
      assert.ok((await read(store.readAll({ raw: true }))).some((event) => event.type === SUBJECT_FORGOTTEN), 'a raw read has it');
      const mixed = await read(store.readAll({ types: ['CustomerRegistered', SUBJECT_FORGOTTEN] }));
      assert.deepEqual(mixed.map((event) => event.type), ['CustomerRegistered', SUBJECT_FORGOTTEN]);

      const again = await store.forget(kim);
      assert.deepEqual({ keysDestroyed: again.keysDestroyed, alreadyForgotten: again.alreadyForgotten }, { keysDestroyed: 0, alreadyForgotten: true });
      const second = (await read(store.readAll({ types: [SUBJECT_FORGOTTEN] }))).find((event) => event.position === again.position);
      assert.deepEqual(second?.data, { subject: kim, keysDestroyed: 0 }, 'a second forget records that it destroyed nothing');

      const stranger = subjectId('stranger');
      const fenced = await store.forget(stranger);
      assert.deepEqual({ keysDestroyed: fenced.keysDestroyed, alreadyForgotten: fenced.alreadyForgotten }, { keysDestroyed: 0, alreadyForgotten: false });
      await expectCode(() => store.append(`customer-${stranger}`, [registered(stranger, secret('stranger'))]), ErrorCode.SubjectForgotten);
    });

    test('after forget, an append of the subject\'s personal data is refused and writes nothing; other events still append', async ({ customers }) => {
      const store = await customers();
      const [lee, max] = [subjectId('lee'), subjectId('max')];
      const stream = `customer-${lee}`;
      await store.append(stream, [registered(lee, secret('lee'))]);
      await store.forget(lee);
      const before = await snapshot(store, [stream, `customer-${max}`, 'messages']);
      const text = secret('lee-again');
      const error = await expectCode(() => store.append(stream, [registered(lee, text)]), ErrorCode.SubjectForgotten);
      assert.equal((error as { subject?: unknown }).subject, lee, 'the error names the subject');
      await expectCode(() => store.append(stream, [registered(lee, text)], { expectedVersion: 1 }), ErrorCode.SubjectForgotten);
      await expectCode(() => store.append(`customer-${max}`, [registered(max, secret('max')), profileOf(lee, text)]), ErrorCode.SubjectForgotten);
      await expectCode(() => store.append('messages', [message(max, lee, text, text)]), ErrorCode.SubjectForgotten);
      await assertUnchanged(store, before, 'an append of a forgotten subject\'s personal data');
      assertAbsent(await read(store.readAll({ raw: true })), text, 'the log');

      const plan = await store.append(stream, [planChanged(lee)], { expectedVersion: 1 });
      assert.equal(plan.nextExpectedVersion, 2, 'an event without personal data appends');
      await store.append(`customer-${max}`, [registered(max, secret('max'))]);
      const lee2 = await read(store.readStream(stream));
      assert.deepEqual(lee2.map((event) => event.type), ['CustomerRegistered', 'PlanChanged']);
    });

    test('allowNewKey: new personal data reads as written, what was written before forget stays redacted', async ({ customers }) => {
      const store = await customers();
      const ned = subjectId('ned');
      const stream = `customer-${ned}`;
      const [oldText, newText] = [secret('ned-old'), secret('ned-new')];
      await store.append(stream, [registered(ned, oldText)]);
      await store.forget(ned);
      await store.allowNewKey(ned);
      await store.append(stream, [registered(ned, newText)]);
      const [old, fresh] = await read(store.readStream(stream));
      assert.ok(isRedacted(old?.data.email), 'the old event stays redacted');
      assert.equal(fresh?.data.email, `${newText}@example.com`, 'the new one reads as written');
      assertAbsent(await read(store.readAll()), oldText, 'a typed read');
      const raw = await read(store.readStream(stream, { raw: true }));
      assert.notEqual(envelopeAt(raw[0]?.data, 'email').kid, envelopeAt(raw[1]?.data, 'email').kid, 'under a new key');
      assert.equal((await store.forget(ned)).keysDestroyed, 1, 'the new key is destroyed by the next forget');
      const after = await read(store.readStream(stream));
      assert.ok(after.every((event) => isRedacted(event.data.email)));
      assertAbsent(after, newText, 'a read after the second forget');
    });

    test('two subjects in one stream and in one event: forgetting one leaves the other readable', async ({ customers }) => {
      const store = await customers();
      const [oli, pam] = [subjectId('oli'), subjectId('pam')];
      const [oliText, pamText] = [secret('oli'), secret('pam')];
      await store.append('team-1', [registered(oli, oliText), registered(pam, pamText), message(oli, pam, `${oliText} note`, `${pamText} note`), message(pam, oli, pamText, oliText)]);
      await store.forget(oli);
      const events = await read(store.readStream('team-1'));
      assert.ok(isRedacted(events[0]?.data.email));
      assert.equal(events[1]?.data.email, `${pamText}@example.com`);
      assert.ok(isRedacted(events[2]?.data.fromNote), 'the forgotten subject\'s field of a shared event');
      assert.equal(events[2]?.data.toNote, `${pamText} note`, 'the other subject\'s field of the same event');
      assert.equal(events[2]?.data.topic, 'hello');
      assert.equal(events[3]?.data.fromNote, pamText);
      assert.ok(isRedacted(events[3]?.data.toNote));
      assertAbsent(events, oliText, 'the stream');
      assertPresent(events, pamText, 'the stream');
    });

    test('reads right after forget are redacted, whatever the store read or wrote of the subject before', async ({ customers }) => {
      const store = await customers();
      const quin = subjectId('quin');
      const stream = `customer-${quin}`;
      const text = secret('quin');
      await store.append(stream, [registered(quin, text)]);
      await read(store.readStream(stream));
      // allowNewKey of a live subject changes nothing in the key store (its live key stays); a store
      // that keeps keys for a while must still drop them all at forget.
      await store.allowNewKey(quin);
      assertPresent(await read(store.readStream(stream)), text, 'a read before forget');
      await store.forget(quin);
      const after = await read(store.readStream(stream));
      assertAbsent(after, text, 'a read right after forget');
      await expectCode(() => store.append(stream, [registered(quin, text)]), ErrorCode.SubjectForgotten);
    });

    test('forget and allowNewKey refuse an empty subject, writing nothing', async ({ customers }) => {
      const store = await customers();
      await store.append('customer-x', [registered(subjectId('rae'), secret('rae'))]);
      const before = await snapshot(store, ['customer-x']);
      for (const bad of ['', undefined]) {
        await expectCode(() => store.forget(bad as string), ErrorCode.InvalidArgument);
        await expectCode(() => store.allowNewKey(bad as string), ErrorCode.InvalidArgument);
      }
      await assertUnchanged(store, before, 'forget of an empty subject');
    });
  });
}
