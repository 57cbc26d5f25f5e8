// A second process for the SQLite tests, started by sqlite-specific.test.ts:
//   node --import tsx test/sqlite/child.ts <mode> <database path> [count] [name]
// It prints "ready" once loaded, waits for a line on stdin (so that several children start together,
// without sleeps), does its work, and prints one JSON line with the result.
import { createInterface } from 'node:readline';
import { isEskitError } from '../../src/core/errors.js';
import { SqliteEventStore } from '../../src/sqlite/index.js';

const [mode, path, countArg, name = 'child'] = process.argv.slice(2);
if (path === undefined) throw new Error('usage: child.ts <migrate|append> <path> [count] [name]');
const count = Number(countArg ?? 0);

/** Migrates `count` fresh files `<path>-0`, `<path>-1`, ... in turn: many races with the other children. */
async function migrate(): Promise<unknown> {
  const applied: number[][] = [];
  for (let i = 0; i < count; i++) {
    const store = new SqliteEventStore({ path: `${path as string}-${i}`, migrate: false });
    applied.push(await store.migrate());
    await store.close();
  }
  return { applied };
}

/** Appends `count` events to its own stream and `count` to a shared one, retrying shared conflicts. */
async function append(): Promise<unknown> {
  const store = new SqliteEventStore({ path: path as string });
  const own: number[] = [];
  const shared: number[] = [];
  let conflicts = 0;
  for (let i = 0; i < count; i++) {
    const mine = await store.append(`own-${name}`, [{ type: 'Own', data: { name, i } }], { expectedVersion: i });
    own.push(mine.position);
    for (;;) {
      const version = await store.streamVersion('shared');
      try {
        const result = await store.append('shared', [{ type: 'Shared', data: { name, i } }], { expectedVersion: version });
        shared.push(result.position);
        break;
      } catch (error) {
        if (!isEskitError(error, 'ESKIT_CONCURRENCY')) throw error;
        conflicts++;
      }
    }
  }
  await store.close();
  return { own, shared, conflicts };
}

const lines = createInterface({ input: process.stdin });
const go = new Promise<void>((resolve) => lines.once('line', () => resolve()));
process.stdout.write('ready\n');
await go;
lines.close();
const result = mode === 'migrate' ? await migrate() : await append();
process.stdout.write(`${JSON.stringify(result)}\n`);
