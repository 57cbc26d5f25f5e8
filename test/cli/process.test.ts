// The CLI as a real process (`node --import tsx src/cli/main.ts`): exit codes, one-line errors, and
// `events tail` following live appends until SIGINT, on both backends.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { EventStore } from '../../src/core/store.js';
import { PostgresEventStore } from '../../src/postgres/index.js';
import { SqliteEventStore } from '../../src/sqlite/index.js';
import { ChildNode } from '../support/processes.js';
import { createTestSchema } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

function eskit(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

interface TailLine {
  position: number;
  streamId: string;
  type: string;
  data: { n: number };
}

describe('eskit as a process', () => {
  let dir: string;
  let schema: TestSchema;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'eskit-cli-process-'));
    schema = await createTestSchema({ create: false, prefix: 'eskit_cli' });
  });
  after(async () => {
    rmSync(dir, { recursive: true, force: true });
    await schema?.drop();
  });

  it('exits 0 on success, 1 with one line and no stack on failure, 2 on a usage error', async () => {
    const help = await eskit(['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^eskit: operate the event store/);
    const missing = await eskit(['status', '--db', `sqlite:${join(dir, 'absent.db')}`]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^eskit: no SQLite database at .*absent\.db\. Check --db; .*\n$/);
    const usage = await eskit(['status', '--bogus']);
    assert.equal(usage.code, 2);
    assert.equal(usage.stderr, "eskit: Unknown option '--bogus'. Run `eskit status --help`.\n");
  });

  for (const backend of ['sqlite', 'postgres'] as const) {
    it(`events tail follows appends live on ${backend} and stops cleanly on SIGINT`, async () => {
      let store: EventStore<{ type: 'Counted'; data: { n: number } }>;
      let db: string[];
      if (backend === 'sqlite') {
        const path = join(dir, 'tail.db');
        store = new SqliteEventStore({ path });
        db = ['--db', `sqlite:${path}`];
      } else {
        store = new PostgresEventStore({ connectionString: schema.connectionString, schema: schema.name });
        db = ['--db', schema.connectionString, '--schema', schema.name];
      }
      try {
        await store.append('before', [{ type: 'Counted', data: { n: 0 } }]);
        const head = await store.headPosition();
        // From the next position on: whatever the process has read by the time of the appends, each
        // new event is printed (an event before it is not).
        const tail = new ChildNode<TailLine>(`tail ${backend}`, MAIN, ['events', 'tail', '--from', String(head + 1), '--json', '--interval', '100', ...db]);
        try {
          await store.append('live', [{ type: 'Counted', data: { n: 1 } }]);
          const first = await tail.waitFor((line) => line.data.n === 1, 'the first live event', { timeoutMs: 15_000 });
          assert.deepEqual([first.position, first.streamId, first.type], [head + 1, 'live', 'Counted']);
          await store.append('live', [{ type: 'Counted', data: { n: 2 } }, { type: 'Counted', data: { n: 3 } }]);
          await tail.waitFor((line) => line.data.n === 3, 'the later events', { timeoutMs: 15_000 });
          tail.kill('SIGINT');
          const exit = await tail.waitForExit(10_000);
          assert.equal(exit.code, 0, tail.output());
          assert.deepEqual(tail.lines.map((line) => line.data.n), [1, 2, 3], 'each event once, in order, none from before');
        } finally {
          tail.kill('SIGKILL');
          await tail.exited;
        }
      } finally {
        await store.close();
      }
    });
  }
});
