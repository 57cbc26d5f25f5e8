// Dead letters about events with personal data: payload and error texts sealed with the event's
// subject keys in the store underneath, opened on the way out, erased by forget.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EventRegistry, isRedacted } from '../../src/index.js';
import type { Personal } from '../../src/index.js';
import { ERASED_ERROR, SealedDeadLetterStore } from '../../src/core/personal/sealed-dead-letters.js';
import type { NewDeadLetter } from '../../src/core/dead-letter.js';
import { memory } from '../../src/memory/index.js';

type E = { type: 'Registered'; data: { customerId: string; email: Personal<string> } } | { type: 'Visited'; data: { customerId: string } };
const registry = new EventRegistry<E>({ Registered: { personal: { subject: (data) => data.customerId, fields: ['email'] } }, Visited: {} });
const SENTINEL = 'bob.sentinel@example.com';

async function setup() {
  const backend = memory<E>({ registry });
  const letters = new SealedDeadLetterStore(backend.deadLetters, backend.store);
  const { events } = await backend.store.append('customer-c1', [{ type: 'Registered', data: { customerId: 'c1', email: SENTINEL } }]);
  const event = events[0]!;
  const letter: NewDeadLetter = {
    source: 'mailer',
    stage: 'execute',
    key: 'c1',
    payload: { to: SENTINEL },
    eventId: event.id,
    eventType: event.type,
    eventPosition: event.position,
    streamId: event.streamId,
    attempts: [{ at: new Date(), error: `SMTP refused ${SENTINEL}` }],
  };
  return { backend, letters, letter };
}

describe('dead letters of events with personal data', () => {
  it('are sealed underneath and read back in the clear while the subject lives', async () => {
    const { backend, letters, letter } = await setup();
    const added = await letters.add(letter);
    assert.deepEqual(added.payload, { to: SENTINEL });
    const [raw] = await backend.deadLetters.list();
    assert.doesNotMatch(JSON.stringify(raw), /sentinel/, 'the wrapped store holds no plaintext');
    const [read] = await letters.list();
    assert.deepEqual(read?.payload, { to: SENTINEL });
    assert.equal(read?.attempts[0]?.error, `SMTP refused ${SENTINEL}`);
    await letters.redrive({ id: added.id });
    await letters.settleRedrive(added.id, { ok: false, attempts: [{ at: new Date(), error: `again ${SENTINEL}` }] });
    assert.doesNotMatch(JSON.stringify(await backend.deadLetters.get(added.id)), /sentinel/, 'a redrive\'s new errors are sealed too');
    assert.deepEqual((await letters.get(added.id))?.attempts.map((a) => a.error), [`SMTP refused ${SENTINEL}`, `again ${SENTINEL}`]);
  });

  it('read as erased once the subject is forgotten; letters of other events pass through', async () => {
    const { backend, letters, letter } = await setup();
    const added = await letters.add(letter);
    const { events } = await backend.store.append('customer-c2', [{ type: 'Visited', data: { customerId: 'c2' } }]);
    const plain = await letters.add({ ...letter, payload: { n: 1 }, eventId: events[0]!.id, eventPosition: events[0]!.position, attempts: [{ at: new Date(), error: 'plain' }] });
    assert.deepEqual((await backend.deadLetters.get(plain.id))?.payload, { n: 1 }, 'no personal data: stored as it is');
    await backend.store.forget('c1');
    const read = await letters.get(added.id);
    assert.ok(isRedacted(read?.payload));
    assert.deepEqual(read?.attempts.map((a) => a.error), [ERASED_ERROR]);
    // A letter added after the forget keeps nothing of the event's personal data.
    const late = await letters.add(letter);
    assert.equal((await backend.deadLetters.get(late.id))?.payload, null);
    assert.doesNotMatch(JSON.stringify(await backend.deadLetters.list()), /sentinel/);
  });
});
