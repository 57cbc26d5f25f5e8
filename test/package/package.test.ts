// eskit as a new user gets it: `npm pack` (its prepack builds), then one fresh project per database
// with only that database's driver. The SQLite project runs the README quick start, the PostgreSQL
// one an automation; both are compiled by `tsc --strict` first (without skipLibCheck, so eskit's
// published declarations are checked too). Nothing is built twice: the tarball is packed from a copy
// of the sources next to the repository's node_modules, npm installs from its cache where it can, and
// better-sqlite3 is linked from the repository's build instead of compiled again.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createTestSchema } from '../support/postgres.js';
import type { TestSchema } from '../support/postgres.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const TSC = join(REPO, 'node_modules', 'typescript', 'bin', 'tsc');

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The environment of a child: without what `npm test` and `node --test` set for their own children. */
function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const keep = new Set(['npm_config_cache', 'npm_config_registry', 'npm_config_userconfig']);
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key.startsWith('npm_') && !keep.has(key)) continue;
    if (key === 'NODE_TEST_CONTEXT' || key === 'NODE_OPTIONS' || key === 'INIT_CWD') continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

interface RunOptions {
  cwd: string;
  env?: Record<string, string>;
  timeoutMs?: number;
  /** Resolves the run early (the child is killed) once its stdout satisfies this. */
  until?: (stdout: string) => boolean;
}

function run(command: string, args: readonly string[], options: RunOptions): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: childEnv(options.env), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let reached = false;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${command} ${args.join(' ')} did not finish within ${options.timeoutMs ?? 60_000} ms\n${stdout}\n${stderr}`));
    }, options.timeoutMs ?? 60_000);
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      if (!reached && options.until?.(stdout)) {
        reached = true;
        child.kill('SIGTERM');
      }
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => void (stderr += chunk));
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (options.until && !reached) reject(new Error(`${command} ${args.join(' ')} exited (${code ?? signal}) before its expected output\n${stdout}\n${stderr}`));
      else resolve({ code, signal, stdout, stderr });
    });
  });
}

function ok(result: Run, what: string): Run {
  assert.equal(result.code, 0, `${what} failed (${result.code ?? result.signal})\n${result.stdout}\n${result.stderr}`);
  return result;
}

/** The version of a package in the repository's node_modules: npm finds it in its cache. */
function installed(name: string): string {
  const manifest = JSON.parse(readFileSync(join(REPO, 'node_modules', name, 'package.json'), 'utf8')) as { version: string };
  return `${name}@${manifest.version}`;
}

function npmInstall(cwd: string, specs: readonly string[]): Promise<Run> {
  // --ignore-scripts: the only package with an install script is better-sqlite3, which is linked built.
  return run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts', '--loglevel=error', ...specs], { cwd, timeoutMs: 120_000 });
}

/** `tsc --strict` on the given files, emitting to out/ (the test runs the output). */
function tscStrict(cwd: string, files: readonly string[]): Promise<Run> {
  return run(process.execPath, [TSC, '--strict', '--target', 'es2022', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--outDir', 'out', ...files], { cwd });
}

const APP_PACKAGE = JSON.stringify({ name: 'app', private: true, type: 'module' });

/** The README's quick start, as a user would copy it. */
function quickStart(): string {
  const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
  const code = /^## Quick start\n+```ts\n([\s\S]*?)^```/m.exec(readme)?.[1];
  assert.ok(code, 'the README has a ```ts block right under "## Quick start"');
  return code;
}

const AUTOMATION = `
import { Automation, EventRegistry } from 'eskit';
import { postgres } from 'eskit/postgres';

type OrderEvent = { type: 'OrderPlaced'; data: { orderId: string; email: string } };

const connectionString = process.env.DATABASE_URL;
const schema = process.env.ESKIT_SCHEMA;
if (!connectionString || !schema) throw new Error('DATABASE_URL and ESKIT_SCHEMA are required');

const registry = new EventRegistry<OrderEvent>({ OrderPlaced: {} });
// One call: the store, checkpoints, dead letters, completion records, and leader election.
const backend = postgres({ connectionString, schema, registry });

const orders = ['order-1', 'order-2', 'order-3'];
for (const orderId of orders) {
  await backend.store.append(orderId, [{ type: 'OrderPlaced', data: { orderId, email: orderId + '@example.com' } }]);
}

const mailed: string[] = [];
let allMailed: () => void = () => undefined;
const done = new Promise<void>((resolve) => (allMailed = resolve));
const mailer = new Automation<OrderEvent, { to: string }>({
  backend,
  name: 'confirmations',
  types: ['OrderPlaced'],
  trigger: (event) => ({ key: event.data.orderId, payload: { to: event.data.email } }),
  execute: (item) => {
    mailed.push(item.payload.to);
    if (mailed.length === orders.length) allMailed();
  },
});
await mailer.start();
await done;
await mailer.stop();
await mailer.done;
const checkpoint = await backend.checkpoints.load('confirmations');
await backend.close();
console.log(JSON.stringify({ mailed: mailed.sort(), checkpoint }));
`;

/** Every entry point, a value and a type of each, in a project with both drivers. */
const EVERY_ENTRY = `
import { Subscription, memory } from 'eskit';
import type { Backend, Recorded } from 'eskit';
import { MemoryEventStore } from 'eskit/memory';
import type { MemoryBackend } from 'eskit/memory';
import { sqlite } from 'eskit/sqlite';
import type { SqliteBackend } from 'eskit/sqlite';
import { postgres } from 'eskit/postgres';
import type { PostgresBackend } from 'eskit/postgres';
import { EventStoreBase, MissingDriverError } from 'eskit/adapter';
import type { CheckpointStore } from 'eskit/adapter';
import { eventStoreConformance } from 'eskit/testing';
import { defineConfig } from 'eskit/cli';
import type { EskitConfig } from 'eskit/cli';

const backends: Array<Backend | MemoryBackend | SqliteBackend | PostgresBackend> = [memory()];
const checkpoints: CheckpointStore = backends[0].checkpoints;
const seen: Recorded[] = [];
const values = [Subscription, MemoryEventStore, sqlite, postgres, EventStoreBase, MissingDriverError, eventStoreConformance, defineConfig];
const config: EskitConfig | undefined = undefined;
console.log(JSON.stringify({ loaded: values.every((value) => typeof value === 'function'), checkpoints: typeof checkpoints.load, seen: seen.length, config: config ?? null }));
`;

/** An `eskit.config.ts` for the CLI's `view rebuild`, written against one adapter only. */
function viewConfig(adapter: 'sqlite' | 'postgres'): string {
  const Tx = adapter === 'sqlite' ? 'SqliteViewTx' : 'PostgresViewTx';
  return `
import { SqlView } from 'eskit';
import { defineConfig } from 'eskit/cli';
import type { ${Tx} } from 'eskit/${adapter}';

type CounterEvent = { type: 'Incremented'; data: { by: number } };

export default defineConfig<CounterEvent>({
  views: (context) => [
    new SqlView<CounterEvent, ${Tx}>({
      name: 'totals',
      backend: context,
      logger: context.logger,
      types: ['Incremented'],
      setup: { version: 1, statements: (t) => [\`CREATE TABLE \${t('totals')} (id TEXT PRIMARY KEY, total INTEGER NOT NULL)\`] },
      evolve: (event, { upsert }) => upsert('totals', { id: event.streamId, total: event.data.by }, { key: ['id'], increment: ['total'] }),
    }),
  ],
});
`;
}

/** Imports an entry point and prints how it failed, as JSON. */
const IMPORT_FAILURE = `
const [entry] = process.argv.slice(2);
const { isEskitError } = await import('eskit');
// The error classes are for adapter authors (eskit/adapter); applications check the code.
const { MissingDriverError } = await import('eskit/adapter');
try {
  await import(entry);
  console.log(JSON.stringify({ imported: true }));
} catch (error) {
  console.log(JSON.stringify({ code: error.code, message: error.message, typed: error instanceof MissingDriverError && isEskitError(error, 'ESKIT_MISSING_DRIVER') }));
}
`;

describe('the package, installed in a new project', { timeout: 240_000 }, () => {
  let root = '';
  let tarball = '';
  let packed: string[] = [];
  let sqliteApp = '';
  let postgresApp = '';
  let bothApp = '';
  let everyEntryTsc: Run | undefined;
  let schema: TestSchema | undefined;
  let quickStartTsc: Run | undefined;
  let automationTsc: Run | undefined;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'eskit-package-'));
    // A copy of what a fresh clone has, so that prepack builds there and not in the working tree.
    const source = join(root, 'eskit');
    await mkdir(source);
    for (const entry of ['package.json', 'README.md', 'LICENSE', '.gitignore', '.npmignore', 'tsconfig.json', 'tsconfig.build.json', 'bin', 'src', 'docs', 'scripts', 'assets']) {
      if (existsSync(join(REPO, entry))) await cp(join(REPO, entry), join(source, entry), { recursive: true });
    }
    await symlink(join(REPO, 'node_modules'), join(source, 'node_modules'), 'dir');
    sqliteApp = join(root, 'sqlite-app');
    postgresApp = join(root, 'postgres-app');
    bothApp = join(root, 'both-app');
    for (const app of [sqliteApp, postgresApp, bothApp]) {
      await mkdir(app);
      await writeFile(join(app, 'package.json'), APP_PACKAGE);
    }

    // Each project's driver and types install while the tarball builds; eskit itself goes in after.
    const [pack, sqliteDriver, postgresDriver, bothDrivers] = await Promise.all([
      run('npm', ['pack', '--json', '--pack-destination', root, '--loglevel=error'], { cwd: source, timeoutMs: 120_000 }),
      npmInstall(sqliteApp, [join(REPO, 'node_modules', 'better-sqlite3'), installed('@types/better-sqlite3'), installed('@types/node')]),
      npmInstall(postgresApp, [installed('pg'), installed('@types/pg'), installed('@types/node')]),
      npmInstall(bothApp, [
        join(REPO, 'node_modules', 'better-sqlite3'),
        installed('@types/better-sqlite3'),
        installed('pg'),
        installed('@types/pg'),
        installed('@types/node'),
      ]),
    ]);
    ok(pack, 'npm pack');
    ok(sqliteDriver, 'npm install of better-sqlite3 in the SQLite project');
    ok(postgresDriver, 'npm install of pg in the PostgreSQL project');
    ok(bothDrivers, 'npm install of both drivers in the third project');
    const report = JSON.parse(pack.stdout.slice(pack.stdout.indexOf('['))) as Array<{ filename: string; files: Array<{ path: string }> }>;
    const first = report[0];
    assert.ok(first, `npm pack --json printed no package\n${pack.stdout}`);
    tarball = join(root, first.filename);
    packed = first.files.map((file) => file.path);
    const [sqliteInstall, postgresInstall, bothInstall] = await Promise.all([
      npmInstall(sqliteApp, [tarball]),
      npmInstall(postgresApp, [tarball]),
      npmInstall(bothApp, [tarball]),
    ]);
    ok(sqliteInstall, 'npm install of eskit in the SQLite project');
    ok(postgresInstall, 'npm install of eskit in the PostgreSQL project');
    ok(bothInstall, 'npm install of eskit in the third project');

    // Both compilations at once: they are the slow part, and independent.
    // Each project also has a CLI config that names its adapter only: eskit/cli must not need the
    // other adapter's driver types.
    await writeFile(join(sqliteApp, 'quickstart.ts'), quickStart());
    await writeFile(join(sqliteApp, 'eskit.config.ts'), viewConfig('sqlite'));
    await writeFile(join(postgresApp, 'automation.ts'), AUTOMATION);
    await writeFile(join(postgresApp, 'eskit.config.ts'), viewConfig('postgres'));
    await writeFile(join(bothApp, 'every-entry.ts'), EVERY_ENTRY);
    await writeFile(join(bothApp, 'quickstart.ts'), quickStart());
    [quickStartTsc, automationTsc, everyEntryTsc] = await Promise.all([
      tscStrict(sqliteApp, ['quickstart.ts', 'eskit.config.ts']),
      tscStrict(postgresApp, ['automation.ts', 'eskit.config.ts']),
      tscStrict(bothApp, ['every-entry.ts', 'quickstart.ts']),
    ]);
  });

  after(async () => {
    await schema?.drop();
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('ships the build, the sources its maps point at, the docs, and no tests', () => {
    for (const file of ['package.json', 'README.md', 'bin/eskit.js', 'dist/index.js', 'dist/index.d.ts', 'dist/sqlite/index.js', 'dist/postgres/index.js', 'dist/cli/main.js', 'docs/operations.md', 'assets/dashboard/index.html', 'assets/dashboard/app.js', 'assets/dashboard/app.css']) {
      assert.ok(packed.includes(file), `${file} is in the tarball`);
    }
    assert.deepEqual(packed.filter((file) => file.startsWith('test/') || file.includes('.test.')), [], 'no tests');
    const maps = packed.filter((file) => file.endsWith('.map'));
    assert.ok(maps.length > 20, 'source maps and declaration maps');
    const missing: string[] = [];
    for (const map of maps) {
      const { sources } = JSON.parse(readFileSync(join(sqliteApp, 'node_modules', 'eskit', map), 'utf8')) as { sources: string[] };
      for (const source of sources) {
        const target = join(map, '..', source);
        if (!packed.includes(target)) missing.push(`${map} -> ${target}`);
      }
    }
    assert.deepEqual(missing, [], 'every source a map names is in the tarball');
  });

  it('SQLite: the README quick start and a CLI config compile under tsc --strict, and the quick start runs, counting on across runs', async () => {
    ok(quickStartTsc as Run, 'tsc --strict quickstart.ts eskit.config.ts');
    const following = (count: number) => (stdout: string) => stdout.includes(`count is ${count}, written at position ${count / 3}`) && /counter-1 Incremented \{ by: 3 \}/.test(stdout);
    // The quick start follows the log until stopped: each run ends once its subscription printed.
    await run(process.execPath, ['out/quickstart.js'], { cwd: sqliteApp, until: following(3) });
    await run(process.execPath, ['out/quickstart.js'], { cwd: sqliteApp, until: following(6) });

    const status = ok(await run(process.execPath, ['node_modules/eskit/bin/eskit.js', 'status', '--db', 'sqlite:counter.db', '--json'], { cwd: sqliteApp }), 'eskit status');
    assert.equal((JSON.parse(status.stdout) as { head: number }).head, 2, 'the CLI reads the database without pg installed');
  });

  it('SQLite: eskit dashboard serves its page, script and state from the installed package', async () => {
    const child = spawn(process.execPath, ['node_modules/eskit/bin/eskit.js', 'dashboard', '--db', 'sqlite:counter.db', '--port', '0'], {
      cwd: sqliteApp,
      env: childEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`eskit dashboard printed no URL within 30 s\n${output}`)), 30_000);
        const seen = (chunk: string): void => {
          output += chunk;
          const found = /at (http:\/\/\S+\/) /.exec(output)?.[1];
          if (found) {
            clearTimeout(timer);
            resolve(found);
          }
        };
        child.stdout.setEncoding('utf8').on('data', seen);
        child.stderr.setEncoding('utf8').on('data', seen);
        void exited.then((code) => reject(new Error(`eskit dashboard exited (${code}) before serving\n${output}`)));
      });
      const page = await fetch(url);
      assert.equal(page.status, 200);
      assert.match(await page.text(), /<script type="module" src="[^"]*app\.js"/);
      const script = await fetch(new URL('app.js', url));
      assert.equal(script.status, 200, 'the page\'s script is found where the built server looks for it');
      assert.match(script.headers.get('content-type') ?? '', /javascript/);
      // app.js is the entry of the page's ES modules: each one it imports (and they import) loads too.
      const modules = new Set(['app.js']);
      const pending = [await script.text()];
      for (let source = pending.pop(); source !== undefined; source = pending.pop()) {
        for (const [, name] of source.matchAll(/^import [^;]*? from '\.\/([a-z0-9_-]+\.js)';$/gm)) {
          if (name === undefined || modules.has(name)) continue;
          modules.add(name);
          const served = await fetch(new URL(name, url));
          assert.equal(served.status, 200, `${name} (imported by the page) is served from the installed package`);
          assert.match(served.headers.get('content-type') ?? '', /javascript/, name);
          pending.push(await served.text());
        }
      }
      const shipped = readdirSync(join(REPO, 'assets', 'dashboard')).filter((file) => file.endsWith('.js'));
      assert.deepEqual([...modules].sort(), shipped.sort(), 'the page loads every module of assets/dashboard/');
      const state = (await (await fetch(new URL('api/state', url))).json()) as { head?: number; readOnly?: boolean };
      assert.deepEqual([state.head, state.readOnly], [2, true]);
    } finally {
      child.kill('SIGINT');
    }
    assert.equal(await exited, 0, `eskit dashboard stops cleanly on Ctrl-C\n${output}`);
  });

  it('PostgreSQL: an automation and a CLI config compile under tsc --strict, and the automation runs its side effects', async () => {
    schema = await createTestSchema({ create: false, prefix: 'eskit_pkg' });
    ok(automationTsc as Run, 'tsc --strict automation.ts eskit.config.ts');
    const result = ok(
      await run(process.execPath, ['out/automation.js'], { cwd: postgresApp, env: { DATABASE_URL: schema.connectionString, ESKIT_SCHEMA: schema.name }, timeoutMs: 30_000 }),
      'the automation',
    );
    assert.deepEqual(JSON.parse(result.stdout), { mailed: ['order-1@example.com', 'order-2@example.com', 'order-3@example.com'], checkpoint: 3 });
  });

  it('with both drivers installed, every entry point imports and type-checks, and so does the README quick start', async () => {
    ok(everyEntryTsc as Run, 'tsc --strict every-entry.ts quickstart.ts');
    const result = ok(await run(process.execPath, ['out/every-entry.js'], { cwd: bothApp }), 'every entry point');
    assert.equal((JSON.parse(result.stdout.trim().split('\n')[0] ?? '{}') as { loaded?: boolean }).loaded, true);
  });

  it('a missing driver is a typed error that names the package to install', async () => {
    await writeFile(join(sqliteApp, 'import.mjs'), IMPORT_FAILURE);
    await writeFile(join(postgresApp, 'import.mjs'), IMPORT_FAILURE);
    const [withoutPg, withoutSqlite] = await Promise.all([
      run(process.execPath, ['import.mjs', 'eskit/postgres'], { cwd: sqliteApp }),
      run(process.execPath, ['import.mjs', 'eskit/sqlite'], { cwd: postgresApp }),
    ]);
    const pgFailure = JSON.parse(ok(withoutPg, 'import eskit/postgres').stdout) as { code?: string; message?: string; typed?: boolean };
    assert.equal(pgFailure.code, 'ESKIT_MISSING_DRIVER', withoutPg.stdout);
    assert.equal(pgFailure.typed, true, 'a MissingDriverError');
    assert.match(pgFailure.message ?? '', /npm install pg\b/);
    const sqliteFailure = JSON.parse(ok(withoutSqlite, 'import eskit/sqlite').stdout) as { code?: string; message?: string; typed?: boolean };
    assert.equal(sqliteFailure.code, 'ESKIT_MISSING_DRIVER', withoutSqlite.stdout);
    assert.equal(sqliteFailure.typed, true, 'a MissingDriverError');
    assert.match(sqliteFailure.message ?? '', /npm install better-sqlite3@/);
  });

  it("the CLI's help names its guide where the package has it", async () => {
    const help = ok(await run(process.execPath, ['node_modules/eskit/bin/eskit.js', '--help'], { cwd: postgresApp }), 'eskit --help');
    const guide = /^See (\S+operations\.md)/m.exec(help.stdout)?.[1];
    assert.ok(guide, `the help names the operations guide\n${help.stdout}`);
    assert.ok(existsSync(guide), `${guide} exists`);
    assert.match(await readFile(guide, 'utf8'), /^# /);
  });
});
