// `eskit events check` on a SQLite file that old code wrote: counts per (type, schema version), what
// each is read as, every event that no longer decodes, and the exit code a deploy pipeline checks.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { CheckReport } from '../../src/cli/commands/events-check.js';
import { SCHEMA_VERSION_KEY } from '../../src/core/registry.js';
import { sqlite } from '../../src/sqlite/index.js';
import { databasesAfterEach } from '../sqlite/helpers.js';
import { cli, parseJson } from './helpers.js';

const CONFIG = fileURLToPath(new URL('./fixtures/evolution.config.ts', import.meta.url));
const NO_REGISTRY = fileURLToPath(new URL('./fixtures/no-registry.config.ts', import.meta.url));
const files = databasesAfterEach('events-check');

type Raw = { type: string; data: unknown; metadata?: Record<string, unknown> };

/** A database holding `events` as old code (no registry) wrote them; returns its --db argument. */
async function database(events: Raw[]): Promise<string> {
  const path = files.freshPath();
  const backend = sqlite({ path });
  for (const [index, event] of events.entries()) await backend.store.append(`order-${index % 2}`, [event]);
  await backend.close();
  return `sqlite:${path}`;
}

const GOOD: Raw[] = [
  { type: 'ItemAdded', data: { sku: 'a' } },
  { type: 'ItemAdded', data: { sku: 'b', quantity: 2 }, metadata: { [SCHEMA_VERSION_KEY]: 2 } },
  { type: 'OrderCreated', data: { orderId: 'o1' } },
  { type: 'CheckedOut', data: { orderId: 'o2', amount: 5 } },
  { type: 'PaymentTaken', data: { orderId: 'o1', amount: 3 } },
];

describe('eskit events check', () => {
  it('a log that decodes: counts per type and version, what each is read as, exit 0', async () => {
    const db = await database(GOOD);
    const result = await cli(['events', 'check', '--config', CONFIG, '--db', db]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /Checked 5 stored events \(through position 5\).*6 events read/);
    assert.match(result.stdout, /CheckedOut\s+1\s+1\s+0\s+OrderPlaced, PaymentTaken/);
    assert.match(result.stdout, /ItemAdded\s+1\s+1\s+0\s+ItemAdded/);
    assert.match(result.stdout, /ItemAdded\s+2\s+1\s+0\s+ItemAdded/);
    assert.match(result.stdout, /OrderCreated\s+1\s+1\s+0\s+OrderPlaced/);
    assert.match(result.stdout, /Every event decodes/);
    const report = parseJson<CheckReport>(await cli(['events', 'check', '--config', CONFIG, '--db', db, '--json']));
    assert.deepEqual(
      report.types.map((t) => [t.type, t.version, t.events, t.failed, t.readAs]),
      [
        ['CheckedOut', 1, 1, 0, ['OrderPlaced', 'PaymentTaken']],
        ['ItemAdded', 1, 1, 0, ['ItemAdded']],
        ['ItemAdded', 2, 1, 0, ['ItemAdded']],
        ['OrderCreated', 1, 1, 0, ['OrderPlaced']],
        ['PaymentTaken', 1, 1, 0, ['PaymentTaken']],
      ],
    );
    assert.deepEqual([report.checked, report.decoded, report.failed, report.through], [5, 6, 0, 5]);
  });

  it('events that no longer decode are each reported (position, type, error), the check goes on, exit 1', async () => {
    const db = await database([
      ...GOOD,
      { type: 'ItemAdded', data: { quantity: 1 } },
      { type: 'Retired', data: {} },
      { type: 'ItemAdded', data: { sku: 'c', quantity: 1 }, metadata: { [SCHEMA_VERSION_KEY]: 3 } },
      { type: 'ItemAdded', data: { sku: 'd' } },
    ]);
    const result = await cli(['events', 'check', '--config', CONFIG, '--db', db]);
    assert.equal(result.code, 1);
    assert.match(result.stdout, /3 events no longer decode/);
    assert.match(result.stdout, /position 6 {2}order-1@3 {2}ItemAdded v1 {2}.*sku must be a string/);
    assert.match(result.stdout, /position 7 {2}order-0@4 {2}Retired v1 {2}.*not in the registry/);
    assert.match(result.stdout, /position 8 {2}order-1@4 {2}ItemAdded v3 {2}.*schema version 3/);
    const report = parseJson<CheckReport>(await cli(['events', 'check', '--config', CONFIG, '--db', db, '--json', '--details', '1']));
    assert.equal(report.checked, 9);
    assert.equal(report.failed, 3);
    assert.deepEqual(report.failures.map((f) => [f.position, f.type, f.code]), [[6, 'ItemAdded', 'ESKIT_EVENT_VALIDATION']]);
    const limited = await cli(['events', 'check', '--config', CONFIG, '--db', db, '--details', '1']);
    assert.match(limited.stdout, /\.\.\. and 2 more/);
  });

  it('a config without a registry is refused with a hint', async () => {
    const db = await database([]);
    const result = await cli(['events', 'check', '--config', NO_REGISTRY, '--db', db]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /defines no registry/);
    assert.match(result.stderr, /registry:/);
  });
});
