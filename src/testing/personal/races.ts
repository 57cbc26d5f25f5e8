// forget racing appends, forget seen through a second store on the same storage (another process's
// key cache), and envelopes changed at rest.
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { ErrorCode, isEskitError } from '../../core/errors.js';
import { isRedacted } from '../../core/personal/types.js';
import { collect, expectCode } from '../conformance/context.js';
import { waitUntil } from '../wait.js';
import type { PersonalDataConformanceHarness, PersonalTest } from './context.js';
import { assertAbsent, assertPresent, customerRegistry, envelopeAt, read, registered, secret, subjectId } from './context.js';

/** How long a second store may take to hear of a forget (its key cache evicted by a notification). */
const HEAR_MS = 15_000;

export function raceTests(test: PersonalTest, harness: PersonalDataConformanceHarness): void {
  describe('races, other stores, tampering', () => {
    test('forget racing appends: each append is refused or reads redacted, and nothing is readable once forget returned', async ({ customers }) => {
      const store = await customers();
      // Round 0: the subject has no key yet when the race starts; round 1: it has one, already used.
      for (const round of [0, 1]) {
        const wes = subjectId(`wes${round}`);
        const text = secret(`wes${round}`);
        if (round === 1) await store.append(`race-${wes}`, [registered(wes, `${text}-before`)]);
        const append = (index: number) =>
          store.append(`race-${wes}-${index % 4}`, [registered(wes, `${text}-${index}`)]).then(
            (result) => ({ index, id: result.events[0]?.id as string }),
            (error: unknown) => {
              assert.ok(isEskitError(error, ErrorCode.SubjectForgotten), `an append racing forget fails only as forgotten, got ${String(error)}`);
              return { index, id: undefined };
            },
          );
        const first = Array.from({ length: 10 }, (_, index) => append(index));
        let readWhenForgot: unknown;
        const forgetting = store.forget(wes).then(async () => {
          readWhenForgot = await read(store.readAll());
        });
        const second = Array.from({ length: 10 }, (_, index) => append(10 + index));
        const outcomes = await Promise.all([...first, ...second]);
        await forgetting;
        assertAbsent(readWhenForgot, text, `round ${round}: a read as soon as forget returned`);
        const log = await read(store.readAll());
        assertAbsent(log, text, `round ${round}: a read once every append settled`);
        for (const { index, id } of outcomes) {
          if (id === undefined) continue;
          const event = log.find((candidate) => candidate.id === id);
          assert.ok(event !== undefined, `append ${index} succeeded, so its event is in the log`);
          assert.ok(isRedacted(event.data.email), `append ${index} was written under a destroyed key: it reads redacted`);
        }
        await expectCode(() => store.append(`race-${wes}`, [registered(wes, `${text}-after`)]), ErrorCode.SubjectForgotten);
      }
    });

    if (harness.openAnother) {
      test('forget through another store: this store\'s reads turn redacted and its appends are refused', async ({ customers, another }) => {
        const store = await customers();
        const other = await another(store, customerRegistry());
        const xia = subjectId('xia');
        const text = secret('xia');
        const stream = `customer-${xia}`;
        await store.append(stream, [registered(xia, `${text}-1`)]);
        assertPresent(await read(store.readStream(stream)), text, 'this store reads its append');
        assertPresent(await read(other.readStream(stream)), text, 'the other store reads it');
        await other.forget(xia);
        assertAbsent(await read(other.readStream(stream)), text, 'the store that forgot, at once');
        await waitUntil(async () => !JSON.stringify(await read(store.readStream(stream))).includes(text), {
          timeoutMs: HEAR_MS,
          message: 'this store to read the forgotten subject redacted',
        });
        await expectCode(() => store.append(stream, [registered(xia, `${text}-2`)]), ErrorCode.SubjectForgotten);
        await expectCode(() => other.append(stream, [registered(xia, `${text}-3`)]), ErrorCode.SubjectForgotten);
        await other.allowNewKey(xia);
        await store.append(stream, [registered(xia, `${text}-4`)]);
        const events = await read(other.readStream(stream));
        assert.deepEqual(events.map((event) => (isRedacted(event.data.email) ? 'redacted' : event.data.email)), ['redacted', `${text}-4@example.com`]);
      });

      test('a store that only read a subject\'s events, forgetting it: its reads right after are redacted', async ({ customers, another }) => {
        const writer = await customers();
        const reader = await another(writer, customerRegistry());
        const yan = subjectId('yan');
        const text = secret('yan');
        await writer.append(`customer-${yan}`, [registered(yan, text)]);
        assertPresent(await read(reader.readAll()), text, 'a read before forget');
        await reader.forget(yan);
        assertAbsent(await read(reader.readAll()), text, 'a read right after forget, by the store that forgot');
      });
    }

    const { tamper } = harness;
    if (tamper) {
      test('an envelope moved to another event or field, changed, or under another subject\'s key fails the read with ESKIT_CORRUPT_EVENT', async ({ customers }) => {
        const store = await customers();
        const [zed, amy] = [subjectId('zed'), subjectId('amy')];
        const stream = `customer-${zed}`;
        await store.append(stream, [registered(zed, secret('zed')), registered(zed, secret('zed'))]);
        await store.append(`customer-${amy}`, [registered(amy, secret('amy'))]);
        const [one, two] = await read(store.readStream(stream, { raw: true }));
        const amyEvent = (await read(store.readStream(`customer-${amy}`, { raw: true })))[0];
        const original = JSON.stringify(two?.data);
        const flipped = (() => {
          const envelope = envelopeAt(two?.data, 'email');
          const ct = Buffer.from(envelope.ct, 'base64');
          ct[0] = (ct[0] as number) ^ 1;
          return { ...envelope, ct: ct.toString('base64') };
        })();
        const address = two?.data.address as Record<string, unknown>;
        const cases: Array<[string, unknown]> = [
          ['the same field of another event', { ...two?.data, email: envelopeAt(one?.data, 'email') }],
          ['another field of the same event', { ...two?.data, email: envelopeAt(two?.data, 'address.street') }],
          ['a changed ciphertext', { ...two?.data, email: flipped }],
          ['another subject\'s key named', { ...two?.data, email: { ...envelopeAt(two?.data, 'email'), kid: envelopeAt(amyEvent?.data, 'email').kid } }],
          ['a field moved into a nested object', { ...two?.data, address: { ...address, street: envelopeAt(two?.data, 'email') } }],
        ];
        for (const [what, data] of cases) {
          await tamper(store, two?.position as number, JSON.stringify(data));
          await expectCode(() => collect(store.readStream(stream)), ErrorCode.CorruptEvent).catch((error: unknown) => assert.fail(`${what}: ${String(error)}`));
          await expectCode(() => collect(store.readAll()), ErrorCode.CorruptEvent);
          assert.equal((await read(store.readAll({ raw: true }))).length, 3, `${what}: a raw read does not decrypt, so it still reads`);
          await tamper(store, two?.position as number, original);
          assert.equal((await read(store.readStream(stream))).length, 2, `${what}: restored, the stream reads again`);
        }
      });

      test('an envelope naming a key the store never had fails the read with ESKIT_SUBJECT_KEY_MISSING', async ({ customers }) => {
        const store = await customers();
        const bea = subjectId('bea');
        await store.append(`customer-${bea}`, [registered(bea, secret('bea'))]);
        const [event] = await read(store.readStream(`customer-${bea}`, { raw: true }));
        const lost = { ...event?.data, email: { ...envelopeAt(event?.data, 'email'), kid: '00000000-0000-4000-8000-000000000000' } };
        await tamper(store, event?.position as number, JSON.stringify(lost));
        await expectCode(() => collect(store.readStream(`customer-${bea}`)), ErrorCode.SubjectKeyMissing);
        // Not mistaken for a forgotten subject: the subject is not forgotten, and personal data still appends.
        assert.equal(await store.personalData?.keys.isForgotten(bea), false);
        await store.append(`customer-${bea}`, [registered(bea, secret('bea'))]);
        await expectCode(() => collect(store.readAll()), ErrorCode.SubjectKeyMissing);
      });
    }
  });
}
