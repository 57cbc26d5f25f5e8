// eskit subjects forget|allow-new-key on SQLite and PostgreSQL, and personal data in what the CLI prints:
// events are read raw and their personal fields print as "[personal]" (never decrypted); dead letters
// are opened for the operator, and read as the marker once their subject is forgotten.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { EventRegistry } from '../../src/core/registry.js';
import type { Personal } from '../../src/core/personal/types.js';
import { isRedacted } from '../../src/core/personal/types.js';
import { encryptField, newDataKey, sealValue } from '../../src/core/personal/cipher.js';
import type { DeadLetterStore } from '../../src/core/dead-letter.js';
import { SealedDeadLetterStore } from '../../src/core/personal/sealed-dead-letters.js';
import { PostgresDeadLetterStore, PostgresEventStore } from '../../src/postgres/index.js';
import { SqliteDeadLetterStore, SqliteEventStore } from '../../src/sqlite/index.js';
import { printable, printableLetter } from '../../src/cli/personal-fields.js';
import { collect } from '../../src/testing/conformance/context.js';
import { waitUntil } from '../../src/testing/wait.js';
import { createTestSchema } from '../support/postgres.js';
import { removeDatabase, tempDatabasePath } from '../sqlite/helpers.js';
import { cli, parseJson } from './helpers.js';

type CustomerEvent = { type: 'CustomerRegistered'; data: { customerId: string; email: Personal<string>; country: string } };
const registry = new EventRegistry<CustomerEvent>({ CustomerRegistered: { personal: { subject: (data) => data.customerId, fields: ['email'] } } });
const registered = (customerId: string, email: string): CustomerEvent => ({ type: 'CustomerRegistered', data: { customerId, email, country: 'UK' } });

/** The data of a one-line `events read`/`events tail` output: the JSON after the timestamp. */
const dataOf = (line: string): unknown => JSON.parse(line.trim().split('  ').slice(4).join('  '));

/** The test's own store (with the registry), beside the CLI's (without one). */
interface Target {
  store: SqliteEventStore<CustomerEvent> | PostgresEventStore<CustomerEvent>;
  deadLetters: DeadLetterStore;
  db: string[];
  stop(): Promise<void>;
}

async function sqliteTarget(): Promise<Target> {
  const path = tempDatabasePath('cli-subjects');
  const store = new SqliteEventStore<CustomerEvent>({ path, registry });
  return {
    store,
    deadLetters: new SqliteDeadLetterStore({ store }),
    db: ['--db', `sqlite:${path}`],
    stop: async () => {
      await store.close();
      removeDatabase(path);
    },
  };
}

async function postgresTarget(): Promise<Target> {
  const schema = await createTestSchema({ create: false, prefix: 'eskit_cli_subjects' });
  const store = new PostgresEventStore<CustomerEvent>({ connectionString: schema.connectionString, schema: schema.name, registry });
  await store.migrate();
  return {
    store,
    deadLetters: new PostgresDeadLetterStore({ store }),
    db: ['--db', schema.connectionString, '--schema', schema.name],
    stop: async () => {
      await store.close();
      await schema.drop();
    },
  };
}

for (const [kind, open] of [['sqlite', sqliteTarget], ['postgres', postgresTarget]] as const) {
  describe(`eskit subjects on ${kind}`, () => {
    let target: Target;
    const run = (...args: string[]) => cli([...args, ...target.db]);
    /** The email as the test's store reads it (typed: decrypted, or the marker). */
    const emailOf = async (stream: string): Promise<unknown> => (await collect(target.store.readStream(stream))).at(-1)?.data.email;

    before(async () => {
      target = await open();
    });
    after(async () => {
      await target?.stop();
    });

    it('events read and events tail print personal fields as "[personal]", never the plaintext', async () => {
      await target.store.append('customer-c-1', [registered('c-1', 'ada@example.com')]);
      const read = await run('events', 'read', 'customer-c-1');
      assert.equal(read.code, 0, read.stderr);
      // The line ends with the data as JSON (PostgreSQL returns its keys sorted).
      assert.deepEqual(dataOf(read.stdout), { customerId: 'c-1', email: '[personal]', country: 'UK' });
      const tail = await run('events', 'tail', '--from', '1', '--no-follow', '--json');
      assert.equal(tail.code, 0, tail.stderr);
      assert.deepEqual((JSON.parse(tail.stdout.trim()) as { data: unknown }).data, { customerId: 'c-1', email: '[personal]', country: 'UK' });
      for (const output of [read.stdout, tail.stdout]) assert.ok(!output.includes('ada@example.com') && !output.includes('$enc'), output);
    });

    it('forget without --yes says what it would do, exits 1 and forgets nothing', async () => {
      const result = await run('subjects', 'forget', 'c-1');
      assert.equal(result.code, 1);
      assert.match(result.stderr, /this would forget subject "c-1" for good: its keys are destroyed.*Add --yes to do it: eskit subjects forget c-1 --yes/);
      assert.equal(await emailOf('customer-c-1'), 'ada@example.com');
    });

    it('forget --yes destroys the key: the field reads as the marker, appends of personal data are refused', async () => {
      const result = await run('subjects', 'forget', 'c-1', '--yes');
      assert.equal(result.code, 0, result.stderr);
      assert.match(
        result.stdout,
        /^Forgot subject "c-1": 1 key destroyed; \$subject\.forgotten at position \d+\. Its personal fields read as redacted from now on, and appends of personal data for it are refused until `eskit subjects allow-new-key c-1`\.\n$/,
      );
      // PostgreSQL: the test's store cached the key, and evicts it when the forget's NOTIFY arrives.
      await waitUntil(async () => isRedacted(await emailOf('customer-c-1')), { message: 'the email reads as redacted' });
      await assert.rejects(target.store.append('customer-c-1', [registered('c-1', 'ada@example.com')]), (error: unknown) => (error as { code?: string }).code === 'ESKIT_SUBJECT_FORGOTTEN');
      const [record] = await collect(target.store.readStream('$subject-c-1', { raw: true }));
      assert.deepEqual(record?.data, { subject: 'c-1', keysDestroyed: 1 });
      const tail = await run('events', 'tail', '--from', '1', '--no-follow', '--type', '$subject.forgotten');
      assert.equal(tail.code, 0, tail.stderr);
      assert.match(tail.stdout, /\$subject-c-1@1 {2}\$subject\.forgotten /);
      assert.deepEqual(dataOf(tail.stdout), { subject: 'c-1', keysDestroyed: 1 });
    });

    it('forget of a forgotten subject: says so without --yes; with --yes --json destroys nothing', async () => {
      const unconfirmed = await run('subjects', 'forget', 'c-1');
      assert.equal(unconfirmed.code, 1);
      assert.match(unconfirmed.stderr, /subject "c-1" is forgotten already: forgetting it again destroys nothing/);
      const result = await run('subjects', 'forget', 'c-1', '--yes', '--json');
      assert.equal(result.code, 0, result.stderr);
      const outcome = parseJson<{ subject: string; keysDestroyed: number; alreadyForgotten: boolean; position: number }>(result);
      assert.deepEqual({ ...outcome, position: typeof outcome.position }, { subject: 'c-1', keysDestroyed: 0, alreadyForgotten: true, position: 'number' });
      const text = await run('subjects', 'forget', 'c-1', '--yes');
      assert.match(text.stdout, /^Subject "c-1" was forgotten already \(0 keys destroyed now\); \$subject\.forgotten at position \d+\./);
    });

    it('allow-new-key lets the subject have personal data again; the old data stays erased', async () => {
      const result = await run('subjects', 'allow-new-key', 'c-1');
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /^Subject "c-1" may have personal data again, under a new key; its personal data from before the erasure stays unreadable\.\n$/);
      // PostgreSQL: the test's store may still hold the forgotten answer for a moment; it asks the key store again after.
      await waitUntil(() => target.store.append('customer-c-1', [registered('c-1', 'ada@new.example')]).then(() => true), { message: 'the append is accepted' });
      const emails = (await collect(target.store.readStream('customer-c-1'))).map((event) => event.data.email);
      assert.deepEqual(emails, [{ $redacted: true }, 'ada@new.example']);
    });

    it('allow-new-key of a subject that is not forgotten changes nothing', async () => {
      await target.store.append('customer-c-2', [registered('c-2', 'grace@example.com')]);
      const result = await run('subjects', 'allow-new-key', 'c-2', '--json');
      assert.equal(result.code, 0, result.stderr);
      assert.deepEqual(parseJson(result), { subject: 'c-2', wasForgotten: false });
      assert.equal(await emailOf('customer-c-2'), 'grace@example.com');
      const text = await run('subjects', 'allow-new-key', 'c-2');
      assert.match(text.stdout, /Subject "c-2" is not forgotten: appends of personal data for it work already\. Nothing changed\./);
    });

    it('dlq show opens a sealed dead letter; once its subject is forgotten the payload reads as the marker, the errors as erased', async () => {
      const { position } = await target.store.append('customer-c-3', [registered('c-3', 'ann@example.com')]);
      const [event] = await collect(target.store.readStream('customer-c-3'));
      assert.ok(event);
      const letter = await new SealedDeadLetterStore(target.deadLetters, target.store).add({
        source: 'mailer',
        stage: 'execute',
        key: 'c-3',
        payload: { to: 'ann@example.com' },
        eventId: event.id,
        eventType: event.type,
        eventPosition: position,
        streamId: 'customer-c-3',
        attempts: [{ at: new Date(), error: 'cannot mail ann@example.com' }],
      });
      assert.ok(!JSON.stringify(await target.deadLetters.get(letter.id)).includes('ann@'), 'stored sealed');

      const shown = await run('dlq', 'show', letter.id);
      assert.equal(shown.code, 0, shown.stderr);
      assert.match(shown.stdout, /"to": "ann@example\.com"/);
      assert.match(shown.stdout, /cannot mail ann@example\.com/);
      assert.match(shown.stdout, /Event data:\n(.|\n)*"email": "\[personal\]"/, 'the event is read raw');
      const listed = await run('dlq', 'list', '--json');
      assert.deepEqual((parseJson<Array<{ payload: unknown }>>(listed))[0]?.payload, { to: 'ann@example.com' });

      assert.equal((await run('subjects', 'forget', 'c-3', '--yes')).code, 0);
      const erased = await run('dlq', 'show', letter.id, '--json');
      assert.equal(erased.code, 0, erased.stderr);
      const opened = parseJson<{ payload: unknown; attempts: Array<{ error: string }>; event: { data: unknown } }>(erased);
      assert.deepEqual(opened.payload, { $redacted: true });
      assert.match(opened.attempts[0]?.error ?? '', /^\[erased: /);
      assert.deepEqual(opened.event.data, { customerId: 'c-3', email: '[personal]', country: 'UK' });
      assert.ok(!erased.stdout.includes('ann@'), erased.stdout);
    });

    it('an empty subject is a usage error', async () => {
      const result = await run('subjects', 'forget', '', '--yes');
      assert.equal(result.code, 2);
      assert.match(result.stderr, /the subject is empty/);
    });
  });
}

describe('eskit subjects: help, and personal data in what the CLI prints', () => {
  it('--help lists both commands under subjects', async () => {
    const result = await cli(['subjects', '--help']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /eskit subjects forget <subject>/);
    assert.match(result.stdout, /eskit subjects allow-new-key <subject>/);
    assert.match((await cli(['--help'])).stdout, /subjects forget <subject> +erase a person's personal data/);
  });

  it('printable replaces envelopes and sealed values anywhere in the data, and copies only what it changes', () => {
    const key = newDataKey();
    const envelope = encryptField('ada@example.com', 'kid-1', key, 'event-1', 'contact.email');
    const sealed = sealValue({ email: 'ada@example.com' }, new Map([['kid-1', key]]), 'test');
    const data = { id: 7, contact: { email: envelope, city: 'London' }, history: [sealed, 'plain'], untouched: { a: 1 } };
    const shown = printable(data) as typeof data;
    assert.deepEqual(shown, { id: 7, contact: { email: '[personal]', city: 'London' }, history: ['[personal]', 'plain'], untouched: { a: 1 } });
    assert.equal(shown.untouched, data.untouched);
    assert.deepEqual(data.contact.email, envelope, 'the data itself is not changed');
    const plain = { a: [1, { b: 2 }] };
    assert.equal(printable(plain), plain);
    assert.equal(printable(sealed), '[personal]');
    assert.equal(printable(null), null);
  });

  it('what is still sealed in a dead letter (keys the store cannot read) prints as "[personal]"', () => {
    const sealed = sealValue({ to: 'ada@example.com' }, new Map([['kid-1', newDataKey()]]), 'dead-letter:event-1');
    const at = new Date();
    const letter = { id: 'l-1', payload: sealed, attempts: [{ at, error: `$sealed:${JSON.stringify(sealed)}` }, { at, error: 'timeout after 5000 ms' }] };
    assert.deepEqual(printableLetter(letter), {
      id: 'l-1',
      payload: '[personal]',
      attempts: [
        { at, error: '[personal]' },
        { at, error: 'timeout after 5000 ms' },
      ],
    });
  });
});
