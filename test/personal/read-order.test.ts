// A personal field that cannot be opened (a key the store never had) fails its own event's turn:
// the events before it on the same page are delivered first, as for any read failure.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { EventRegistry } from '../../src/index.js';
import { memory } from '../../src/memory/index.js';
type E = { type: 'R'; data: { id: string; email: string } };
it('a row that cannot be opened fails when its turn comes, after the events before it', async () => {
  const registry = new EventRegistry<E>({ R: { personal: { subject: (d) => d.id, fields: ['email'] } } });
  const { store } = memory<E>({ registry });
  await store.append('a', [{ type: 'R', data: { id: 'a', email: 'x' } }]);
  const { position } = await store.append('b', [{ type: 'R', data: { id: 'b', email: 'y' } }]);
  let raw = '';
  for await (const e of store.readAll({ raw: true })) if (e.position === position) raw = JSON.stringify(e.data).replace(/"kid":"[^"]+"/, '"kid":"00000000-0000-0000-0000-000000000000"');
  store.corruptForTesting(position, { data: raw });
  const seen: number[] = [];
  await assert.rejects(async () => { for await (const e of store.readAll()) seen.push(e.position); }, (e: { code?: string }) => e.code === 'ESKIT_SUBJECT_KEY_MISSING');
  assert.deepEqual(seen, [1]);
});
