// The auditor's test of forget: after the scenario (audit-scenario.ts), search everything eskit wrote
// for the person's email and street. SQLite: every table, then the bytes of the database file and its
// -wal (free pages included: the store runs with secure_delete, and forget checkpoints the WAL).
// PostgreSQL: every table of the schema. Both: the log lines and the spans. And the destroyed key:
// its bytes must be gone from the file too.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { isRedacted } from '../../src/index.js';
import { postgres } from '../../src/postgres/index.js';
import { sqlite } from '../../src/sqlite/index.js';
import { createTestSchema } from '../support/postgres.js';
import { removeDatabase, tempDatabasePath } from '../sqlite/helpers.js';
import { auditRegistry, runScenario, sentinels } from './audit-scenario.js';
import { recordingLogger } from '../support/recording-logger.js';
import type { AuditEvent } from './audit-scenario.js';

const spans = new InMemorySpanExporter();
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] }));

const spanText = (): string =>
  JSON.stringify(spans.getFinishedSpans().map((span) => ({ name: span.name, status: span.status, attributes: span.attributes, events: span.events, links: span.links })));

function assertAbsent(where: string, text: string, secret: ReturnType<typeof sentinels>): void {
  for (const value of Object.values(secret)) assert.ok(!text.includes(value), `${where} holds "${value}"`);
}

/** What the person's stream reads as now: their fields as the marker, the rest as written. */
async function assertReadsRedacted(store: { readStream(id: string): AsyncIterable<{ type: string; data: unknown }> }): Promise<void> {
  const events = [];
  for await (const event of store.readStream('customer-c1')) events.push(event);
  const registered = events.find((event) => event.type === 'CustomerRegistered')?.data as AuditEvent['data'] & { email: unknown; address: unknown };
  assert.ok(isRedacted(registered.email) && isRedacted(registered.address), 'the person\'s fields read as the marker');
  assert.equal(events.filter((event) => event.type === 'OrderPlaced').length, 1, 'their other events read as written');
}

describe('forget, audited', () => {
  it('SQLite: no table, no byte of the database file or its -wal, no log line or span holds the person\'s data; the key is gone', { timeout: 60_000 }, async () => {
    const path = tempDatabasePath('audit');
    const secret = sentinels();
    const { logger, text } = recordingLogger();
    const backend = sqlite<AuditEvent>({ path, registry: auditRegistry });
    try {
      await backend.migrate();
      const kid = (await backend.subjectKeys.keyFor('c1')).kid;
      const key = Buffer.from((await backend.subjectKeys.keysById([kid])).get(kid) as Uint8Array);
      assert.ok(readFileSync(path).includes(key) || (existsSync(`${path}-wal`) && readFileSync(`${path}-wal`).includes(key)), 'the live key is in the file (the search can find bytes)');
      // The view cleared its row after forget's own checkpoint: the WAL still has the page it changed.
      const checkpoint = (): void => void backend.store.database.pragma('wal_checkpoint(TRUNCATE)');
      await runScenario(backend, { afterViews: checkpoint }, logger, secret);
      await assertReadsRedacted(backend.store);
      assert.equal((await backend.subjectKeys.keysById([kid])).get(kid), null);

      const db = backend.store.database;
      const tables = db.prepare<[], string>("SELECT name FROM sqlite_master WHERE type = 'table'").pluck().all();
      assert.ok(tables.includes('eskit_archived_events') && tables.includes('eskit_deleted_events') && tables.includes('contacts'));
      for (const table of tables) assertAbsent(`table ${table}`, JSON.stringify(db.prepare(`SELECT * FROM "${table}"`).all()), secret);
      for (const file of [path, `${path}-wal`]) {
        if (!existsSync(file)) continue;
        const bytes = readFileSync(file);
        for (const value of Object.values(secret)) assert.equal(bytes.includes(Buffer.from(value)), false, `${file} holds "${value}"`);
        assert.equal(bytes.includes(key), false, `${file} still holds the destroyed key's bytes`);
      }
      assertAbsent('the logs', text(), secret);
      assertAbsent('the spans', spanText(), secret);
    } finally {
      await backend.close();
      removeDatabase(path);
    }
  });

  it('PostgreSQL: no table of the schema, no log line or span holds the person\'s data; the key row holds no key', { timeout: 60_000 }, async () => {
    const schema = await createTestSchema({ create: false });
    const secret = sentinels();
    const { logger, text } = recordingLogger();
    const backend = postgres<AuditEvent>({ pool: schema.pool, schema: schema.name, registry: auditRegistry, logger, leaderElection: false });
    try {
      await backend.migrate();
      await runScenario(backend, {}, logger, secret);
      await assertReadsRedacted(backend.store);
      const tables = (await schema.pool.query<{ table_name: string }>('SELECT table_name FROM information_schema.tables WHERE table_schema = $1', [schema.name])).rows.map((row) => row.table_name);
      assert.ok(tables.includes('archived_events') && tables.includes('deleted_events') && tables.includes('contacts') && tables.includes('subject_keys'));
      for (const table of tables) {
        const { rows } = await schema.pool.query(`SELECT t::text AS row FROM "${schema.name}"."${table}" t`);
        assertAbsent(`table ${table}`, rows.map((row: { row: string }) => row.row).join('\n'), secret);
      }
      const keys = await schema.pool.query(`SELECT key FROM "${schema.name}".subject_keys WHERE subject = 'c1'`);
      assert.ok(keys.rows.length > 0 && keys.rows.every((row: { key: unknown }) => row.key === null), 'the fence stays, the key is gone');
      assertAbsent('the logs', text(), secret);
      assertAbsent('the spans', spanText(), secret);
    } finally {
      await backend.close();
      await schema.drop();
    }
  });
});
