// Where personal data could slip into the clear beside the events, each closed: a personal path that
// runs through an array, a dead letter stored after its event left the log, a snapshot after a
// forget, SQLite's free pages, the reason of a decode failure, a forget that cannot record itself.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CommandHandler, ErrorCode, EventRegistry, isEskitError, isRedacted } from '../../src/index.js';
import type { Decider, Personal } from '../../src/index.js';
import type { SealedDeadLetterStore } from '../../src/core/personal/sealed-dead-letters.js';
import { deadLetterFor } from '../../src/core/dead-letter-checks.js';
import { memory } from '../../src/memory/index.js';
import { sqlite } from '../../src/sqlite/index.js';
import { removeDatabase, tempDatabasePath } from '../sqlite/helpers.js';

type Registered = { type: 'Registered'; data: { customerId: string; email: Personal<string> } };
type Visited = { type: 'Visited'; data: { customerId: string } };
type E = Registered | Visited;
const registry = new EventRegistry<E>({ Registered: { personal: { subject: (data) => data.customerId, fields: ['email'] } }, Visited: {} });
const SECRET = 'ivy.copies@example.com';

const isCode = (code: string) => (error: unknown): boolean => isEskitError(error, code);

describe('copies of personal data', () => {
  it('a personal path through an array or a plain value is refused on append, nothing written', async () => {
    type Team = { type: 'TeamFormed'; data: { ownerId: string; members: unknown } };
    // Typed paths refuse 'members.email' at compile time; a registry of unknown data reaches the check.
    const teams = new EventRegistry<Team>({ TeamFormed: { personal: { subject: (data) => data.ownerId, fields: ['members.email'] as never } } });
    const { store } = memory<Team>({ registry: teams });
    for (const members of [[{ email: SECRET }], SECRET]) {
      await assert.rejects(store.append('team-1', [{ type: 'TeamFormed', data: { ownerId: 'o1', members } }]), isCode(ErrorCode.EventValidation));
    }
    assert.equal(await store.streamVersion('team-1'), 0);
    await store.append('team-1', [{ type: 'TeamFormed', data: { ownerId: 'o1', members: null } }]);
  });

  it('a dead letter stored after its event left the log (archived) is still sealed, and erased by forget', async () => {
    const backend = memory<E>({ registry });
    const { events } = await backend.store.append('customer-c1', [{ type: 'Registered', data: { customerId: 'c1', email: SECRET } }]);
    let read;
    for await (const event of backend.store.readStream('customer-c1')) read = event;
    await backend.store.archiveStream('customer-c1');
    assert.ok(read && events[0]);
    const letter = deadLetterFor('mailer', 'execute', read, 1, new Error(`cannot mail ${SECRET}`), { key: 'c1', payload: { to: SECRET } });
    const added = await backend.deadLetters.add(letter);
    assert.deepEqual(added.payload, { to: SECRET });
    assert.doesNotMatch(JSON.stringify(await (backend.deadLetters as SealedDeadLetterStore).inner.list()), /ivy\.copies/);
    await backend.store.forget('c1');
    const [erased] = await backend.deadLetters.list();
    assert.ok(isRedacted(erased?.payload));
  });

  it('after a forget, commands go on writing snapshots (sealed with the keys still live, or plain)', async () => {
    type State = { email: Personal<string> | undefined; visits: number };
    const decider: Decider<State, 'register' | 'visit', E> = {
      initialState: { email: undefined, visits: 0 },
      decide: (_state, command) =>
        command === 'register' ? { type: 'Registered', data: { customerId: 'c1', email: SECRET } } : { type: 'Visited', data: { customerId: 'c1' } },
      evolve: (state, event) => (event.type === 'Registered' ? { ...state, email: event.data.email } : { ...state, visits: state.visits + 1 }),
    };
    const backend = memory<E>({ registry });
    const handler = new CommandHandler({ backend, decider, snapshots: { version: 1, every: 2 } });
    await handler.handle('customer-c1', 'register');
    await handler.handle('customer-c1', 'visit');
    await handler.flushSnapshots();
    await backend.store.forget('c1');
    for (let i = 0; i < 4; i++) await handler.handle('customer-c1', 'visit');
    await handler.flushSnapshots();
    const stored = await backend.snapshots.load('customer-c1', 'decider');
    assert.ok((stored?.streamVersion ?? 0) > 2, `a snapshot after the forget (version ${stored?.streamVersion})`);
    assert.doesNotMatch(JSON.stringify(stored?.state), /ivy\.copies/);
    const { state } = await handler.aggregate('customer-c1');
    assert.ok(isRedacted(state.email));
    assert.equal(state.visits, 5);
  });

  it('SQLite: secure_delete is on from open, on every connection eskit configures', async () => {
    const path = tempDatabasePath('secure-delete');
    const backend = sqlite<E>({ path, registry });
    try {
      assert.equal(backend.store.database.pragma('secure_delete', { simple: true }), 1);
    } finally {
      await backend.close();
      removeDatabase(path);
    }
  });

  it('an upcaster or validate that refuses an event with personal data: the reason is withheld', async () => {
    const path = tempDatabasePath('withheld-decode');
    const writer = sqlite<E>({ path, registry });
    // Another process on the same file, deployed with a stricter validate: it reads what was written.
    const strict = new EventRegistry<E>({
      Registered: {
        personal: { subject: (data) => data.customerId, fields: ['email'] },
        validate: (data) => {
          const value = data as Registered['data'];
          if (typeof value.email === 'string' && value.email.startsWith('ivy')) throw new Error(`refusing ${value.email}`);
          return value;
        },
      },
      Visited: {},
    });
    const reader = sqlite<E>({ path, registry: strict });
    try {
      await writer.store.append('customer-c1', [{ type: 'Registered', data: { customerId: 'c1', email: SECRET } }]);
      await assert.rejects(
        (async () => {
          for await (const _event of reader.store.readAll()) void _event;
        })(),
        (error: unknown) => {
          assert.ok(isEskitError(error, ErrorCode.EventValidation), `a validation error, got ${String(error)}`);
          assert.doesNotMatch((error as Error).message, /ivy\.copies/);
          assert.match((error as Error).message, /withheld/);
          return true;
        },
      );
    } finally {
      await reader.close();
      await writer.close();
      removeDatabase(path);
    }
  });

  it('forget refuses a subject no store can hold before destroying anything', async () => {
    const backend = memory<E>({ registry });
    await assert.rejects(backend.store.forget('a\u0000b'), isCode(ErrorCode.InvalidArgument));
    assert.equal(await backend.subjectKeys.isForgotten('a\u0000b'), false, 'no fence was written');
  });
});
