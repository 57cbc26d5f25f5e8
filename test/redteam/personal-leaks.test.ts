// Red team of personal data (issue 20): ways plaintext of a subject survives forget, or data is
// misread, through paths the audit does not walk. Every test here FAILS (reported to the lead, not
// fixed when written); each FOUND note says what happens and what would make it pass.
import { collect } from '../../src/testing/conformance/context.js';
import { recordingLogger } from '../support/recording-logger.js';
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import pg from 'pg';
import { context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { existsSync, readFileSync } from 'node:fs';
import { CommandHandler, EventRegistry, isRedacted, SUBJECT_FORGOTTEN } from '../../src/index.js';
import type { Backend, Decider, Personal } from '../../src/index.js';
import { memory } from '../../src/memory/index.js';
import { openSqlite, sqlite } from '../../src/sqlite/index.js';
import { PostgresEventStore } from '../../src/postgres/index.js';
import { silentLogger } from '../../src/core/logger.js';
import { waitUntil } from '../../src/testing/wait.js';
import { createTestSchema } from '../support/postgres.js';
import { checkLog } from '../../src/cli/commands/events-check.js';
import { databasesAfterEach } from '../sqlite/helpers.js';

type Registered = { type: 'Registered'; data: { customerId: string; email: Personal<string> } };
type Noted = { type: 'Noted'; data: { customerId: string; note?: unknown } };
type E = Registered | Noted;
const SECRET = 'quinn.sentinel@example.org';
const registry = (): EventRegistry<E> =>
  new EventRegistry<E>({ Registered: { personal: { subject: (data) => data.customerId, fields: ['email'] } }, Noted: {} });

const { freshPath, closeAfterTest } = databasesAfterEach('personal-leaks');

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const spans = new InMemorySpanExporter();
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] }));
const spanText = (): string => JSON.stringify(spans.getFinishedSpans().map((span) => ({ name: span.name, status: span.status, attributes: span.attributes, events: span.events })));

type AnyBackend = Backend<E> & { close?: () => Promise<void> };
const backends: Array<[string, (registry: EventRegistry<E>) => AnyBackend]> = [
  ['memory', (r) => memory<E>({ registry: r })],
  [
    'sqlite',
    (r) => {
      const backend = sqlite<E>({ path: freshPath(), registry: r });
      closeAfterTest(() => backend.close());
      return backend;
    },
  ],
];

describe('red team: personal data that survives forget, or is misread', () => {
  for (const [name, make] of backends) {
    // FOUND: a read opens anything shaped like an envelope, in any field of any type. Data a user
    // typed (a webhook body kept in a non-personal field) that has that shape appends fine and then
    // fails every typed read of the stream and of the log with ESKIT_SUBJECT_KEY_MISSING: every
    // subscription, view and automation stops there. fe830fc documents it ("do not store such
    // objects yourself"), but a value the application does not control cannot be kept out that way.
    // Expected: refused at append (the append has the data in hand), or read as appended.
    it(`${name}: data shaped like an envelope in a field that is not personal reads back as appended, or is refused`, async () => {
      const { store } = make(registry());
      const lookalike = { $enc: 1, kid: 'user-typed', iv: 'AAAA', ct: 'AAAA' };
      let appended = true;
      await store.append('note-1', [{ type: 'Noted', data: { customerId: 'c1', note: lookalike } }]).catch(() => {
        appended = false;
      });
      await store.append('customer-c2', [{ type: 'Registered', data: { customerId: 'c2', email: 'other@example.org' } }]);
      if (appended) {
        const [note] = await collect(store.readStream('note-1'));
        assert.deepEqual(note?.data, { customerId: 'c1', note: lookalike });
      }
      assert.equal((await collect(store.readAll())).length, appended ? 2 : 1, 'the log reads past it');
    });

    // FOUND: store.forget destroys the keys, then appends $subject.forgotten to $subject-<subject>;
    // that stream can be archived or deleted with appends: 'refuse' like any other, and then every
    // forget of the subject fails with ESKIT_STREAM_DELETED after destroying the keys: views keyed by
    // the subject are never told, and keep their plaintext rows. Expected: the $subject- streams'
    // lifecycle refused, or forget still appends its event.
    for (const how of ['archived', 'deleted with appends refused'] as const) {
      it(`${name}: forget still tells the views when the subject's $subject- stream was ${how}`, async () => {
        const { store } = make(registry());
        await store.append('customer-c1', [{ type: 'Registered', data: { customerId: 'c1', email: SECRET } }]);
        await store.append('$subject-c1', [{ type: 'Noted', data: { customerId: 'c1' } }]);
        let lifecycleRefused = false;
        const lifecycle = how === 'archived' ? store.archiveStream('$subject-c1') : store.deleteStream('$subject-c1', { appends: 'refuse' });
        await lifecycle.catch(() => {
          lifecycleRefused = true;
        });
        if (lifecycleRefused) return;
        const { position } = await store.forget('c1');
        const told = await collect(store.readAll({ types: [SUBJECT_FORGOTTEN] }));
        assert.deepEqual(told.map((event) => event.position), [position]);
      });
    }
  }

  // FOUND: `eskit events check` decodes events raw through the registry: validate runs on the
  // envelopes (and upcasters get envelopes), so every event with personal fields whose validate
  // checks them is reported as no longer decoding (exit 1), before and after forget, although every
  // reader reads it fine. Expected: checked as readers decode it (envelopes opened or redacted).
  it('eskit events check: events with personal fields decode as every reader decodes them', async () => {
    const strict = new EventRegistry<E>({
      Registered: {
        personal: { subject: (data) => data.customerId, fields: ['email'] },
        validate: (data) => {
          const d = data as Registered['data'];
          if (typeof d.email !== 'string') throw new Error('email must be a string');
          return d;
        },
      },
      Noted: {},
    });
    const { store } = memory<E>({ registry: strict });
    await store.append('customer-c1', [{ type: 'Registered', data: { customerId: 'c1', email: SECRET } }]);
    assert.equal((await collect(store.readAll())).length, 1, 'a reader reads it');
    const before = await checkLog(store, strict, { details: 5 });
    assert.equal(before.failed, 0, `events check: ${JSON.stringify(before.failures)}`);
    await store.forget('c1');
    const after = await checkLog(store, strict, { details: 5 });
    assert.equal(after.failed, 0, `events check after forget: ${JSON.stringify(after.failures)}`);
  });

  // FOUND: snapshots' fromJSON (and toJSON, and the policy) errors are logged with their message
  // ("could not decode the snapshot", "snapshot not written"): for a state folded from personal data
  // (a sealed snapshot) that message can quote it, as a handler's could, and logs are out of
  // forget's reach. Expected: withheld as handler errors are (PersonalDataWithheldError).
  it('a snapshot fromJSON that throws quoting a sealed state: the message is withheld from the logs', async () => {
    const backend = memory<E>({ registry: registry() });
    const { logger, text } = recordingLogger();
    type State = { email: Personal<string> | null };
    const decider: Decider<State, { register?: boolean }, E> = {
      initialState: { email: null },
      decide: (_state, command) =>
        command.register === true ? { type: 'Registered', data: { customerId: 'c1', email: SECRET } } : { type: 'Noted', data: { customerId: 'c1' } },
      evolve: (state, event) => (event.type === 'Registered' ? { email: event.data.email } : state),
    };
    const fromJSON = (json: unknown): State => {
      const state = json as State;
      if (typeof state.email === 'string' && !state.email.endsWith('.com')) throw new Error(`unexpected state ${JSON.stringify(json)}`);
      return state;
    };
    const handler = new CommandHandler({ backend, decider, snapshots: { version: 1, every: 1, logger, fromJSON } });
    await handler.handle('customer-c1', { register: true });
    await handler.handle('customer-c1', {});
    await handler.handle('customer-c1', {});
    await handler.flushSnapshots();
    await backend.store.forget('c1');
    assert.match(text(), /snapshot/, 'the failures were logged');
    assert.doesNotMatch(text(), /sentinel/, 'the logs quote the forgotten subject\'s email');
  });

  // FOUND: forget's wal_checkpoint(TRUNCATE) is skipped while another connection reads (busy), and
  // nothing retries it: SQLite's own (PASSIVE) checkpoints copy the new page into the file but leave
  // the old frames, the destroyed key among them, in the -wal file until the WAL wraps or the last
  // connection closes. Anyone who copies the -wal can decrypt the "forgotten" events. The class comment
  // says "SQLite's own checkpoints finish the job"; they do not. Expected: gone from the -wal once the
  // reader has finished and the store wrote again (e.g. a pending TRUNCATE retried on the next write).
  it('SQLite: after a reader held forget\'s checkpoint back, the destroyed key leaves the -wal once the reader is done and the store writes on', async () => {
    const path = freshPath();
    const backend = sqlite<E>({ path, registry: registry() });
    closeAfterTest(() => backend.close());
    await backend.store.append('customer-c1', [{ type: 'Registered', data: { customerId: 'c1', email: SECRET } }]);
    const other = openSqlite(path);
    closeAfterTest(() => other.open && other.close());
    const key = other.prepare<[], Buffer>("SELECT key FROM eskit_subject_keys WHERE subject = 'c1'").pluck().get() as Buffer;
    assert.equal(key.length, 32);
    const inFiles = (): string[] => [path, `${path}-wal`].filter((file) => existsSync(file) && readFileSync(file).includes(key));
    assert.ok(inFiles().length > 0, 'the search finds the live key');

    other.prepare('BEGIN').run();
    other.prepare('SELECT count(*) FROM eskit_events').get(); // another process in the middle of a read
    await backend.store.forget('c1');
    other.prepare('COMMIT').run(); // the read ends

    for (let n = 0; n < 20; n++) await backend.store.append('notes', [{ type: 'Noted', data: { customerId: 'c2', note: n } }]);
    // What SQLite's automatic checkpoints do: PASSIVE.
    other.pragma('wal_checkpoint(PASSIVE)');
    const [event] = await collect(backend.store.readStream('customer-c1'));
    assert.ok(isRedacted((event?.data as Registered['data']).email));
    assert.deepEqual(inFiles(), [], 'the destroyed key\'s bytes are still in these files');
  });
  // FOUND: eskit's own spans record the message of errors thrown on personal data outside the
  // runners: a decide that refuses a command quoting the state folded from personal fields (the
  // eskit.command span), and a validate refusing an append quoting the value (the eskit.append span).
  // Handler errors on such events are withheld from spans; these are not. Spans are exported to a
  // tracing backend forget cannot reach. Expected: withheld the same way (the error the caller gets
  // may keep its message).
  it('spans: a decide error quoting a state folded from personal data, and a validate error quoting a personal value, are withheld', async () => {
    const strict = new EventRegistry<E>({
      Registered: {
        personal: { subject: (data) => data.customerId, fields: ['email'] },
        validate: (data) => {
          const d = data as Registered['data'];
          if (typeof d.email === 'string' && d.email.includes('rejected')) throw new Error(`invalid email ${d.email}`);
          return d;
        },
      },
      Noted: {},
    });
    const backend = memory<E>({ registry: strict });
    type State = { email: Personal<string> | null };
    const decider: Decider<State, { register?: string }, E> = {
      initialState: { email: null },
      decide: (state, command) => {
        if (command.register === undefined) throw new Error(`nothing to do for ${String(state.email)}`);
        return { type: 'Registered', data: { customerId: 'c1', email: command.register } };
      },
      evolve: (_state, event) => (event.type === 'Registered' ? { email: event.data.email } : { email: null }),
    };
    const handler = new CommandHandler({ backend, decider });
    spans.reset();
    await handler.handle('customer-c1', { register: SECRET });
    await assert.rejects(handler.handle('customer-c1', {}), /nothing to do/);
    await assert.rejects(backend.store.append('customer-c2', [{ type: 'Registered', data: { customerId: 'c2', email: `rejected.${SECRET}` } }]), /invalid email/);
    await backend.store.forget('c1');
    assert.match(spanText(), /eskit/, 'spans were recorded');
    assert.doesNotMatch(spanText(), /sentinel/, 'a span quotes the personal data');
  });
  // FOUND: when a store's LISTEN connection is lost, its key cache is dropped only once LISTEN is back
  // (onListening → missed), not when it is lost. While it cannot reconnect (the server at its
  // connection limit, a proxy restarting, a network split between the LISTEN socket and the pool),
  // forgets made by other processes are not heard and the cached keys are used for up to keyCacheMs
  // (30 s): the forgotten subject's plaintext is read, and appends are written under a destroyed key.
  // The guide says a process that may have missed an announcement "drops every cached key".
  // Expected: drop the cache (and cache nothing) from the moment the LISTEN connection is lost.
  it('PostgreSQL: a store whose LISTEN connection is down does not read a subject another process forgot meanwhile', async () => {
    const schema = await createTestSchema({ create: false });
    cleanups.push(() => schema.drop());
    const forgetter = new PostgresEventStore<E>({ pool: schema.pool, schema: schema.name, registry: registry() });
    cleanups.push(() => forgetter.close());
    await forgetter.migrate();
    await forgetter.append('customer-c1', [{ type: 'Registered', data: { customerId: 'c1', email: SECRET } }]);

    const name = `rt-${schema.name}`;
    const pool = new pg.Pool({ connectionString: schema.connectionString, max: 2, application_name: name });
    pool.on('error', () => undefined);
    const options = pool.options as { connectionString?: string };
    const url = options.connectionString as string;
    cleanups.push(() => pool.end());
    const other = new PostgresEventStore<E>({ pool, schema: schema.name, registry: registry(), logger: silentLogger });
    cleanups.push(() => other.close());
    await collect(other.readStream('customer-c1')); // its first key read starts LISTEN, which drops the cache once in place
    await waitUntil(() => other.listening, { message: 'the other store to LISTEN for forgets' });
    const [before] = await collect(other.readStream('customer-c1'));
    assert.equal((before?.data as Registered['data']).email, SECRET, 'read, and its key cached');

    // Its LISTEN connection drops, and cannot come back for now (new connections of its pool would fail too).
    options.connectionString = url.replace(/:\d+\//, ':1/');
    assert.notEqual(options.connectionString, url);
    cleanups.push(() => void (options.connectionString = url));
    await schema.pool.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'LISTEN%'", [name]);
    await waitUntil(() => !other.listening, { message: 'the LISTEN connection to be lost' });

    await forgetter.forget('c1');
    const [after] = await collect(other.readStream('customer-c1')); // on the pool's connection, still up
    assert.ok(isRedacted((after?.data as Registered['data']).email), `read ${JSON.stringify(after?.data)} after the forget, with LISTEN down`);
  });
});

