// Red team of personal data (issue 20): attacks that HELD, kept as regression tests. Forget seen
// through a second SQLite connection (snapshot cache), an automation redriving a letter of a
// forgotten subject, forget racing commands that write snapshots, odd subject ids and odd values on
// every backend, and on PostgreSQL: archives racing appends and a paging reader (no live event
// skipped), and another store's concurrent appends once it heard a forget.
import { collect } from '../../src/testing/conformance/context.js';
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { Automation, CommandHandler, ErrorCode, EventRegistry, isEskitError, isRedacted, SUBJECT_FORGOTTEN } from '../../src/index.js';
import type { Backend, Decider, Personal, Recorded } from '../../src/index.js';
import { silentLogger } from '../../src/core/logger.js';
import { memory } from '../../src/memory/index.js';
import { PostgresEventStore } from '../../src/postgres/index.js';
import { sqlite } from '../../src/sqlite/index.js';
import type { EventStoreBase } from '../../src/core/store-base.js';
import { waitUntil } from '../../src/testing/wait.js';
import { createTestSchema } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';
import { databasesAfterEach } from '../sqlite/helpers.js';

type Registered = { type: 'Registered'; data: { customerId: string; email: Personal<unknown> } };
type Noted = { type: 'Noted'; data: { customerId: string; n?: number } };
type E = Registered | Noted;
const registry = new EventRegistry<E>({ Registered: { personal: { subject: (data) => data.customerId, fields: ['email'] } }, Noted: {} });
const SECRET = 'sven.sentinel@example.org';

const { freshPath, closeAfterTest } = databasesAfterEach('personal-redteam');
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function pgSchema(): Promise<TestSchema> {
  const schema = await createTestSchema({ create: false, poolSize: 3 });
  cleanups.push(() => schema.drop());
  return schema;
}

function pgStore(schema: TestSchema, options: { pageSize?: number } = {}): PostgresEventStore<E> {
  const store = new PostgresEventStore<E>({ connectionString: schema.connectionString, schema: schema.name, registry, ...options });
  cleanups.push(() => store.close());
  return store;
}

function sqliteBackend(path = freshPath()): ReturnType<typeof sqlite<E>> {
  const backend = sqlite<E>({ path, registry });
  closeAfterTest(() => backend.close());
  return backend;
}

/** A store per backend on fresh storage (PostgreSQL: a schema of its own). */
const stores: Array<[string, () => Promise<EventStoreBase<E>>]> = [
  ['memory', async () => memory<E>({ registry }).store],
  ['sqlite', async () => sqliteBackend().store],
  ['postgres', async () => pgStore(await pgSchema())],
];

type State = { email: Personal<unknown> | null; notes: number };
const profile: Decider<State, { register?: string }, E> = {
  initialState: { email: null, notes: 0 },
  decide: (_state, command) =>
    command.register !== undefined ? { type: 'Registered', data: { customerId: 'c1', email: command.register } } : { type: 'Noted', data: { customerId: 'c1' } },
  evolve: (state, event) => (event.type === 'Registered' ? { ...state, email: event.data.email } : { ...state, notes: state.notes + 1 }),
};

describe('red team: personal data, attacks that held', () => {
  it('SQLite, two connections on one file: a handler\'s cached snapshot is not used once the other connection forgot the subject', async () => {
    const path = freshPath();
    const one = sqliteBackend(path);
    const two = sqliteBackend(path);
    const handler = new CommandHandler({ backend: two, decider: profile, snapshots: { version: 1, every: 1 } });
    await handler.handle('customer-c1', { register: SECRET });
    await handler.handle('customer-c1', {});
    await handler.flushSnapshots();
    assert.equal((await handler.aggregate('customer-c1')).state.email, SECRET, 'read from its cache while the key lives');
    await one.store.forget('c1'); // another process
    const after = await handler.handle('customer-c1', {});
    assert.ok(isRedacted(after.state.email), `the next command decided on ${JSON.stringify(after.state)}`);
    await handler.flushSnapshots();
    assert.doesNotMatch(JSON.stringify(await two.snapshots.load('customer-c1', 'decider')), /sentinel/);
  });

  for (const [name, make] of [
    ['memory', () => memory<E>({ registry })],
    ['sqlite', () => sqliteBackend()],
  ] as const) {
    it(`${name}: forget racing commands that write snapshots leaves no snapshot that opens, and the state reads redacted`, async () => {
      const backend: Backend<E> = make();
      const handler = new CommandHandler({ backend, decider: profile, snapshots: { version: 1, every: 1 } });
      await handler.handle('customer-c1', { register: SECRET });
      const commands = Array.from({ length: 12 }, () => handler.handle(`customer-c1`, {}).catch((error: unknown) => error));
      const forgetting = backend.store.forget('c1');
      await Promise.all([...commands, forgetting]);
      await handler.flushSnapshots();
      const snapshot = await backend.snapshots?.load('customer-c1', 'decider');
      assert.doesNotMatch(JSON.stringify(snapshot), /sentinel/, 'a snapshot holds the plaintext');
      const fresh = new CommandHandler({ backend, decider: profile, snapshots: { version: 1, every: 1 } });
      assert.ok(isRedacted((await fresh.aggregate('customer-c1')).state.email));
      assert.ok(isRedacted((await handler.aggregate('customer-c1')).state.email));
    });
  }

  it('memory: a redrive of a letter whose subject was forgotten runs nothing and keeps no plaintext', async () => {
    const backend = memory<E>({ registry });
    const executed: unknown[] = [];
    let fail = true;
    const mailer = new Automation<E, { to: Personal<unknown> }>({
      name: 'mailer',
      backend,
      logger: silentLogger,
      retry: { maxAttempts: 1, initialDelayMs: 1, maxDelayMs: 1 },
      pollIntervalMs: 5,
      trigger: (event) => (event.type === 'Registered' ? { key: event.data.customerId, payload: { to: event.data.email } } : undefined),
      execute: (item) => {
        executed.push(item.payload.to);
        if (fail) throw new Error(`SMTP 550: mailbox ${String(item.payload.to)} refused`);
      },
    });
    await backend.store.append('customer-c1', [{ type: 'Registered', data: { customerId: 'c1', email: SECRET } }]);
    await mailer.start();
    try {
      await waitUntil(async () => (await backend.deadLetters.count({ source: 'mailer' })) === 1, { message: 'the dead letter' });
      const [letter] = await backend.deadLetters.list({ source: 'mailer' });
      assert.deepEqual(letter?.payload, { to: SECRET }, 'opened while the subject lives');
      await backend.store.forget('c1');
      fail = false;
      await backend.deadLetters.redrive({ id: letter?.id as string });
      await waitUntil(async () => (await backend.deadLetters.get(letter?.id as string))?.status !== 'redrive', { message: 'the redrive to be settled' });
    } finally {
      await mailer.stop();
    }
    assert.deepEqual(executed, [SECRET], 'execute ran again after the forget');
    const [after] = await backend.deadLetters.list({ source: 'mailer' });
    assert.ok(after !== undefined && isRedacted(after.payload));
    const inner = (backend.deadLetters as unknown as { inner: { list(): Promise<unknown[]> } }).inner;
    assert.doesNotMatch(JSON.stringify(await inner.list()), /sentinel/);
    assert.doesNotMatch(JSON.stringify(after), /sentinel/);
  });

  for (const [name, open] of stores) {
    it(`${name}: odd subject ids are kept apart: forgetting one leaves the others, including look-alikes, readable`, async () => {
      const store = await open();
      // Quotes, separators, LIKE wildcards, a backslash, emoji, NFC and NFD forms of one name, a
      // prefix of another id, a leading $, and a long one.
      const subjects = ["o'brien", 'a,b', '100%_x', 'back\\slash', '🙂 ü', 'caf\u00e9', 'cafe\u0301', 'c1', 'c1-x', '$subject-c1', 'x'.repeat(600)];
      for (const [index, subject] of subjects.entries()) {
        await store.append(`s-${index}`, [{ type: 'Registered', data: { customerId: subject, email: `${index}.${SECRET}` } }]);
      }
      for (const forgotten of ['caf\u00e9', 'c1', '$subject-c1', "o'brien"]) {
        const { position } = await store.forget(forgotten);
        const [told] = await collect(store.readStream(`$subject-${forgotten}`, { direction: 'backward', limit: 1 }));
        assert.equal(told?.position, position);
      }
      const emails = new Map<string, unknown>();
      for (const [index, subject] of subjects.entries()) {
        const [event] = await collect(store.readStream(`s-${index}`));
        emails.set(subject, (event?.data as Registered['data']).email);
      }
      for (const [index, subject] of subjects.entries()) {
        const gone = ['caf\u00e9', 'c1', '$subject-c1', "o'brien"].includes(subject);
        const email = emails.get(subject);
        if (gone) assert.ok(isRedacted(email), `${JSON.stringify(subject)} reads ${JSON.stringify(email)}`);
        else assert.equal(email, `${index}.${SECRET}`, `${JSON.stringify(subject)} was erased with another subject`);
      }
      const told = await collect(store.readAll({ types: [SUBJECT_FORGOTTEN] }));
      assert.equal(told.length, 4);
    });

    it(`${name}: values that look like envelopes or the marker, huge and non-ASCII values round-trip exactly, and read redacted once forgotten`, async () => {
      const store = await open();
      const values: unknown[] = [
        { $enc: 1, kid: 'not-a-key', iv: 'AAAA', ct: 'AAAA' },
        { $sealed: 1, kids: ['x'], iv: 'AAAA', ct: 'AAAA' },
        { $redacted: false, note: 'not the marker' },
        [{ $enc: 1, kid: 'in an array', iv: '', ct: '' }],
        `🙂 ${'ü'.repeat(100_000)} \u2028 "quoted" \\ ${SECRET}`,
        0,
        false,
        '',
      ];
      for (const [index, email] of values.entries()) await store.append(`v-${index}`, [{ type: 'Registered', data: { customerId: `v${index}`, email } }]);
      for (const [index, email] of values.entries()) {
        const [event] = await collect(store.readStream(`v-${index}`));
        assert.deepEqual((event?.data as Registered['data']).email, email, `value ${index}`);
      }
      const raw = JSON.stringify(await collect(store.readAll({ raw: true })));
      assert.doesNotMatch(raw, /sentinel|not the marker|not-a-key/, 'a raw read shows a value in the clear');
      for (const index of values.keys()) await store.forget(`v${index}`);
      for (const index of values.keys()) {
        const [event] = await collect(store.readStream(`v-${index}`));
        assert.ok(isRedacted((event?.data as Registered['data']).email), `value ${index} reads ${JSON.stringify(event?.data).slice(0, 80)}`);
      }
    });
  }

  it('PostgreSQL: archives racing appends of other stores never make a paging reader skip a live event; the archive reads back whole', async () => {
    const schema = await pgSchema();
    const setup = pgStore(schema);
    await setup.migrate();
    const writers = [pgStore(schema), pgStore(schema)];
    const archiver = pgStore(schema);
    const reader = pgStore(schema, { pageSize: 5 });
    const appended = new Map<string, Array<{ id: string; position: number }>>();
    const archived: string[] = [];
    let stop = false;
    const failures: unknown[] = [];
    const write = async (store: PostgresEventStore<E>, seed: number): Promise<void> => {
      for (let round = 0; round < 40; round++) {
        // A live stream (never archived) and a finished one (archived below), several at once so
        // that group commit sends append_group as well as the lone statement.
        const streams = [`live-${seed}-${round % 3}`, `done-${seed}-${round}`];
        const results = await Promise.all(
          streams.map((stream, k) =>
            store.append(stream, [
              { type: 'Registered', data: { customerId: `c${seed}`, email: `${round}.${k}.${SECRET}` } },
              { type: 'Noted', data: { customerId: `c${seed}`, n: round } },
            ]),
          ),
        ).catch((error: unknown) => {
          failures.push(error);
          return [];
        });
        results.forEach((result, k) => {
          const stream = streams[k] as string;
          appended.set(stream, [...(appended.get(stream) ?? []), ...result.events.map(({ id, position }) => ({ id, position }))]);
        });
      }
    };
    const archive = async (): Promise<void> => {
      while (!stop) {
        const candidates = [...appended.keys()].filter((stream) => stream.startsWith('done-') && !archived.includes(stream));
        const next = candidates[0];
        if (next === undefined) {
          await waitUntil(() => stop || [...appended.keys()].some((stream) => stream.startsWith('done-') && !archived.includes(stream)), { timeoutMs: 20_000 });
          continue;
        }
        await archiver.archiveStream(next).then(
          () => archived.push(next),
          (error: unknown) => failures.push(error),
        );
      }
    };
    const seen: Recorded[] = [];
    let last = 0;
    const read = async (): Promise<void> => {
      while (!stop) {
        for await (const event of reader.readAll({ after: last, raw: true })) {
          assert.ok(event.position > last, `went back: ${event.position} after ${last}`);
          last = event.position;
          seen.push(event);
        }
        const head = last;
        await waitUntil(async () => stop || (await reader.headPosition()) > head, { timeoutMs: 20_000 });
      }
    };
    const running = [archive(), read()];
    await Promise.all([write(writers[0] as PostgresEventStore<E>, 0), write(writers[1] as PostgresEventStore<E>, 1)]);
    const remaining = (): string[] => [...appended.keys()].filter((stream) => stream.startsWith('done-') && !archived.includes(stream));
    await waitUntil(() => remaining().length === 0 || failures.length > 0, { timeoutMs: 20_000, message: 'every finished stream archived' });
    const head = await setup.headPosition();
    await waitUntil(() => last >= head || failures.length > 0, { timeoutMs: 20_000, message: 'the reader to reach the head' });
    stop = true;
    await Promise.all(running);
    assert.deepEqual(failures, []);

    const seenIds = new Set(seen.map((event) => event.id));
    for (const [stream, events] of appended) {
      if (stream.startsWith('live-')) {
        const missed = events.filter((event) => !seenIds.has(event.id));
        assert.deepEqual(missed, [], `the reader skipped live events of ${stream}`);
      } else {
        const back = await collect(setup.readArchived(stream));
        assert.deepEqual(back.map((event) => event.id), events.map((event) => event.id), `${stream} reads back from the archive`);
        assert.equal(await setup.streamVersion(stream), 0);
      }
    }
    assert.equal(archived.length, 80);
    const positions = seen.map((event) => event.position);
    assert.equal(new Set(positions).size, positions.length, 'a position was delivered twice');
  });

  it('PostgreSQL: once another store heard a forget, its concurrent appends of the subject\'s personal data are all refused and write nothing; others\' go through', async () => {
    const schema = await pgSchema();
    const one = pgStore(schema);
    const two = pgStore(schema);
    await one.migrate();
    await two.append('customer-c1', [{ type: 'Registered', data: { customerId: 'c1', email: SECRET } }]); // two caches c1's key
    const heard: number[] = [];
    two.onAppend((position) => heard.push(position));
    await waitUntil(() => two.listening, { message: 'the second store to LISTEN' });
    const { position } = await one.forget('c1');
    await waitUntil(() => heard.includes(position), { message: 'the second store to hear the forget' });
    const outcomes = await Promise.all(
      Array.from({ length: 24 }, (_, i) =>
        two
          .append(`customer-c${i % 2 === 0 ? 1 : 2}`, [{ type: 'Registered', data: { customerId: `c${i % 2 === 0 ? 1 : 2}`, email: `${i}.${SECRET}` } }])
          .then(
            () => 'written',
            (error: unknown) => (isEskitError(error, ErrorCode.SubjectForgotten) ? 'refused' : String(error)),
          ),
      ),
    );
    assert.deepEqual(outcomes, Array.from({ length: 24 }, (_, i) => (i % 2 === 0 ? 'refused' : 'written')));
    assert.equal(await one.streamVersion('customer-c1'), 1, 'nothing of a refused append was written');
    assert.equal(await one.streamVersion('customer-c2'), 12);
  });
});
