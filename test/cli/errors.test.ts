// The CLI's help, usage errors and failure paths that need no application: wrong URLs, missing files,
// unreachable servers, unmigrated schemas, bad configs. Exit codes: 0 ok, 1 failed or refused, 2 usage.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { rebuildingText } from '../../src/cli/commands/status.js';
import { loadConfig } from '../../src/cli/config-loader.js';
import { ProgressBar } from '../../src/cli/progress.js';
import { DEFAULT_SCHEMA as CLI_DEFAULT_SCHEMA, parseTarget } from '../../src/cli/target.js';
import { SQLITE_MIGRATIONS } from '../../src/sqlite/migrations.js';
import { DEFAULT_SCHEMA } from '../../src/postgres/index.js';
import { POSTGRES_URL, createTestSchema, uniqueSchemaName } from '../support/postgres.js';
import { capture, cli } from './helpers.js';

const USAGE = 2;
const FAILED = 1;

describe('eskit CLI: help and usage errors', () => {
  it('--help lists every command, the options and the exit codes; no command is a usage error', async () => {
    const help = await cli(['--help']);
    assert.equal(help.code, 0);
    for (const command of ['migrate', 'status', 'dlq list', 'dlq show', 'dlq retry', 'dlq discard', 'events read', 'events tail', 'subscription reset', 'view rebuild']) {
      assert.ok(help.stdout.includes(`  ${command}`), `--help lists ${command}`);
    }
    assert.match(help.stdout, /Exit codes:\n {2}0 {2}done\n {2}1 {2}the operation failed or was refused/);
    assert.match(help.stdout, /DATABASE_URL/);
    assert.deepEqual(await cli(['help']), { ...help });

    const none = await cli([]);
    assert.equal(none.code, USAGE);
    assert.match(none.stderr, /Usage: eskit <command>/);
    assert.match(none.stderr, /eskit: no command given/);
  });

  it("each command and group has its own help, with the global options", async () => {
    for (const args of [['dlq', 'list', '--help'], ['help', 'subscription', 'reset'], ['view', 'rebuild', '-h'], ['status', '--help']]) {
      const result = await cli(args);
      assert.equal(result.code, 0, args.join(' '));
      assert.match(result.stdout, /^Usage: eskit /, args.join(' '));
      assert.match(result.stdout, /--db <url>/);
    }
    const group = await cli(['dlq', '--help']);
    assert.equal(group.code, 0);
    assert.match(group.stdout, /eskit dlq list\s+list dead letters/);
    assert.match(group.stdout, /eskit dlq discard <id>/);
  });

  it('--version prints the package version', async () => {
    const result = await cli(['--version']);
    const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    assert.deepEqual([result.code, result.stdout], [0, `${version}\n`]);
  });

  it('exits with 2 for unknown commands and options, missing or extra arguments, malformed values', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['frobnicate'], /^eskit: unknown command "frobnicate"\. Run `eskit --help`/],
      [['dlq'], /^eskit: "dlq" needs a command: list, show, retry, discard/],
      [['dlq', 'purge'], /^eskit: unknown command "dlq purge" \(dlq has: list, show, retry, discard\)/],
      [['status', '--frobnicate'], /^eskit: Unknown option '--frobnicate'\. Run `eskit status --help`/],
      [['dlq', 'list', '--db'], /^eskit: Option '--db <value>' argument missing/],
      [['events', 'read'], /^eskit: missing <stream>\. Usage: eskit events read <stream>/],
      [['dlq', 'show', 'a', 'b'], /^eskit: unexpected argument "b"/],
      [['dlq', 'list', '--limit', '0', '--db', 'sqlite:x.db'], /^eskit: --limit must be a positive integer, got "0"/],
      [['events', 'tail', '--from', 'x'], /^eskit: --from must be a positive integer/],
      [['events', 'tail', '--no-follow'], /^eskit: --no-follow needs --from/],
      [['events', 'read', 's', '--from', '-1'], /^eskit: option --from needs a value; for a value that starts with a dash, write --from=<value>\. Run `eskit events read --help`/],
      [['dlq', 'retry', 'abc', '--all'], /^eskit: give a dead letter id or --all, not both/],
      [['status'], /^eskit: no database given\. Pass --db sqlite:<file> or --db postgres:/],
      [['status', '--db', 'sqlite:x.db', '--schema', 'a'], /^eskit: --schema applies to PostgreSQL only/],
      [['status', '--db', POSTGRES_URL, '--schema', 'Bad-Name'], /^eskit: --schema must be a lower-case SQL identifier/],
    ];
    for (const [args, message] of cases) {
      const result = await cli(args);
      assert.equal(result.code, USAGE, `${args.join(' ')}: ${result.stderr}`);
      assert.match(result.stderr, message, args.join(' '));
      assert.equal(result.stderr.trim().split('\n').length, 1, `one line: ${result.stderr}`);
      assert.equal(result.stdout, '');
    }
  });
});

describe('eskit CLI: database URLs', () => {
  it('parses sqlite: paths (relative to the working directory) and postgres URLs (password hidden)', () => {
    assert.deepEqual(parseTarget('sqlite:data/app.db', undefined, '/srv'), { kind: 'sqlite', path: '/srv/data/app.db', display: 'sqlite:/srv/data/app.db' });
    assert.equal((parseTarget('sqlite:///var/app.db', undefined, '/srv') as { path: string }).path, '/var/app.db');
    assert.deepEqual(parseTarget('data/app.db', undefined, '/srv'), { kind: 'sqlite', path: '/srv/data/app.db', display: 'sqlite:/srv/data/app.db' }, 'a plain path is a SQLite file');
    const pg = parseTarget('postgresql://app:secret@db:5433/shop', 'tenant_a', '/');
    assert.deepEqual(pg, {
      kind: 'postgres',
      connectionString: 'postgresql://app:secret@db:5433/shop',
      schema: 'tenant_a',
      safeUrl: 'postgresql://app:***@db:5433/shop',
      display: 'postgresql://app:***@db:5433/shop (schema tenant_a)',
    });
    assert.equal((parseTarget('postgres://db/shop', undefined, '/') as { schema: string }).schema, 'eskit');
    assert.equal(CLI_DEFAULT_SCHEMA, DEFAULT_SCHEMA, "the CLI's default schema is the adapter's (it does not import it: that would load pg)");
    const query = parseTarget('postgres://app@db/shop?password=secret&sslmode=require', undefined, '/') as { safeUrl: string; display: string };
    assert.equal(query.safeUrl, 'postgres://app@db/shop?password=***&sslmode=require', 'a password given as a query parameter is hidden too');
    assert.doesNotMatch(query.display, /secret/);
  });

  it('exits with 2 (usage) for a URL eskit cannot use, without showing the password', async () => {
    const mysql = await cli(['status', '--db', 'mysql://root:hunter2@db/app']);
    assert.equal(mysql.code, USAGE);
    assert.match(mysql.stderr, /^eskit: "mysql:\/\/root:\*\*\*@db\/app" is not a database URL eskit understands\. Use sqlite:<file> or postgres:/);
    const broken = await cli(['status', '--db', 'postgres://user:pw@[::1/db']);
    assert.equal(broken.code, USAGE);
    assert.match(broken.stderr, /is not a valid PostgreSQL URL/);
    assert.doesNotMatch(broken.stderr, /pw@/);
    const memory = await cli(['status', '--db', 'sqlite::memory:']);
    assert.equal(memory.code, USAGE);
  });
});

describe('eskit CLI: SQLite files', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'eskit-cli-errors-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('refuses a missing file (and does not create it), except for migrate, which creates it', async () => {
    const path = join(dir, 'new.db');
    const missing = await cli(['status', '--db', `sqlite:${path}`]);
    assert.equal(missing.code, FAILED);
    assert.equal(missing.stderr, `eskit: no SQLite database at ${path}. Check --db; \`eskit migrate --db sqlite:${path}\` creates a new one.\n`);
    assert.equal(existsSync(path), false, 'no file was created');

    const migrate = await cli(['migrate'], { env: { DATABASE_URL: `sqlite:${path}` } });
    assert.equal(migrate.code, 0, migrate.stderr);
    const latest = SQLITE_MIGRATIONS.length;
    const all = SQLITE_MIGRATIONS.map((m) => m.version).join(', ');
    assert.ok(migrate.stdout.includes(`applied migrations ${all} (schema version 0 -> ${latest})`), migrate.stdout);
    const status = await cli(['status', '--db', 'sqlite:new.db'], { cwd: dir });
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /head 0/);

    const noDirectory = await cli(['migrate', '--db', `sqlite:${join(dir, 'no', 'such', 'dir', 'x.db')}`]);
    assert.equal(noDirectory.code, FAILED);
    assert.match(noDirectory.stderr, /the directory .*no\/such\/dir does not exist/);
  });

  it('refuses a SQLite file that was never migrated, and a file that is not SQLite', async () => {
    const plain = join(dir, 'plain.db');
    const database = new Database(plain);
    database.exec('CREATE TABLE other (x INTEGER)');
    database.close();
    const unmigrated = await cli(['dlq', 'list', '--db', `sqlite:${plain}`]);
    assert.equal(unmigrated.code, FAILED);
    assert.match(unmigrated.stderr, /^eskit: .*plain\.db has no eskit tables \(it was never migrated\)\. Run `eskit migrate --db sqlite:.*plain\.db` first\.$/m);

    const text = join(dir, 'notes.txt');
    writeFileSync(text, 'not a database, just some text that is long enough to have a header of its own\n'.repeat(20));
    const notSqlite = await cli(['status', '--db', `sqlite:${text}`]);
    assert.equal(notSqlite.code, FAILED);
    assert.match(notSqlite.stderr, /^eskit: cannot read .*notes\.txt as a SQLite database: file is not a database\. Is --db pointing at an eskit SQLite file\?/);
  });

  it('--verbose adds the stack trace; without it there is none', async () => {
    const args = ['status', '--db', `sqlite:${join(dir, 'absent.db')}`];
    assert.doesNotMatch((await cli(args)).stderr, /\n\s+at /);
    assert.match((await cli([...args, '--verbose'])).stderr, /^eskit: no SQLite database[^\n]*\nCliError: no SQLite database[^\n]*\n\s+at /);
  });
});

describe('eskit CLI: PostgreSQL servers and schemas', () => {
  it('an unreachable server fails quickly with what to check', async () => {
    const result = await cli(['status', '--db', 'postgres://postgres@127.0.0.1:1/test']);
    assert.equal(result.code, FAILED);
    assert.equal(result.stderr, 'eskit: cannot connect to PostgreSQL at 127.0.0.1:1: connection refused. Is the server running, and are host and port in --db right?\n');
  });

  it('a database that does not exist', async () => {
    const url = new URL(POSTGRES_URL);
    url.pathname = '/eskit_no_such_database';
    const result = await cli(['status', '--db', url.toString()]);
    assert.equal(result.code, FAILED);
    assert.match(result.stderr, /^eskit: database "eskit_no_such_database" does not exist \(at .*\)\. Check the database name in --db\./);
  });

  it('a schema that does not exist or was never migrated is refused; migrate creates it', async () => {
    const missing = uniqueSchemaName('eskit_cli');
    const absent = await cli(['status', '--db', POSTGRES_URL, '--schema', missing]);
    assert.equal(absent.code, FAILED);
    assert.match(absent.stderr, new RegExp(`^eskit: schema "${missing}" does not exist\\. Check --schema, or run \`eskit migrate --db 'postgres://\\S+' --schema ${missing}\` first`));

    const schema = await createTestSchema({ prefix: 'eskit_cli' });
    try {
      const empty = await cli(['dlq', 'list', '--db', POSTGRES_URL, '--schema', schema.name]);
      assert.equal(empty.code, FAILED);
      assert.match(empty.stderr, new RegExp(`^eskit: schema "${schema.name}" has no eskit tables \\(it was never migrated\\)`));
      const migrate = await cli(['migrate', '--db', POSTGRES_URL, '--schema', schema.name, '--json']);
      assert.equal(migrate.code, 0, migrate.stderr);
      assert.ok((JSON.parse(migrate.stdout) as { applied: number[] }).applied.length >= 4);
      const status = await cli(['status', '--schema', schema.name, '--json'], { env: { DATABASE_URL: POSTGRES_URL } });
      assert.equal(status.code, 0, status.stderr);
      assert.deepEqual((JSON.parse(status.stdout) as { entries: unknown[] }).entries, []);
    } finally {
      await schema.drop();
    }
  });
});

describe('eskit CLI: config modules', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'eskit-cli-config-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const write = (name: string, text: string): string => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };

  it('loads the first eskit.config.* of the directory, or --config; refuses what is not a config', async () => {
    write('eskit.config.mjs', 'export default { views: () => [] };\n');
    const found = await loadConfig(undefined, dir);
    assert.equal(found.path, join(dir, 'eskit.config.mjs'));
    assert.equal(typeof found.config.views, 'function');

    await assert.rejects(loadConfig('absent.js', dir), /no config file at .*absent\.js/);
    await assert.rejects(loadConfig(undefined, join(dir, '..')), /no eskit\.config\.js, eskit\.config\.mjs/);
    await assert.rejects(loadConfig(write('empty.mjs', 'export const x = 1;\n'), dir), /has no default export object/);
    await assert.rejects(loadConfig(write('views.mjs', 'export default { views: [] };\n'), dir), /"views" in the config .* must be a function/);
    await assert.rejects(loadConfig(write('registry.mjs', 'export default { registry: {} };\n'), dir), /"registry" in the config .* must be an EventRegistry/);
    await assert.rejects(loadConfig(write('broken.mjs', 'export default {\n'), dir), /loading the config .*broken\.mjs failed/);
  });

  it('view rebuild: a config without views, views() that throws, an unknown view, all exit 1', async () => {
    const db = join(dir, 'app.db');
    assert.equal((await cli(['migrate', '--db', `sqlite:${db}`])).code, 0);
    const run = (config: string) => cli(['view', 'rebuild', 'carts', '--db', `sqlite:${db}`, '--config', config]);
    const noViews = await run(write('no-views.mjs', 'export default {};\n'));
    assert.equal(noViews.code, FAILED);
    assert.match(noViews.stderr, /defines no views/);
    const throws = await run(write('throws.mjs', "export default { views: () => { throw new Error('no such table'); } };\n"));
    assert.equal(throws.code, FAILED);
    assert.match(throws.stderr, /views\(\) in the config .* threw: no such table/);
    const wrong = await run(write('wrong.mjs', 'export default { views: () => [{ name: 1 }] };\n'));
    assert.equal(wrong.code, FAILED);
    assert.match(wrong.stderr, /must return an array of views/);
    const none = await run(write('none.mjs', 'export default { views: () => [] };\n'));
    assert.equal(none.code, FAILED);
    assert.match(none.stderr, /no view "carts" \(there are none\)/);
  });
});

describe('eskit CLI: progress bar', () => {
  it('one line per 10 % when the output is not a terminal', () => {
    const out = capture(false);
    const bar = new ProgressBar(out, 'rebuilding v');
    for (let done = 0; done <= 1000; done += 50) bar.update(done, 1000);
    bar.finish(1000, 1000);
    assert.deepEqual(out.text.trim().split('\n'), [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100].map((p) => `rebuilding v: ${p}% (${(p * 10)}/1000 events)`));
  });

  it('redraws one line on a terminal and ends it', () => {
    const out = capture(true);
    const bar = new ProgressBar(out, 'rebuilding v');
    bar.update(0, 10);
    bar.finish(10, 10);
    const clearLine = '\u001b[K';
    assert.equal(out.text, `\rrebuilding v [${'-'.repeat(30)}]   0% 0/10 events${clearLine}\rrebuilding v [${'#'.repeat(30)}] 100% 10/10 events${clearLine}\n`);
  });
});

describe('eskit CLI: status of a view being rebuilt', () => {
  it("STATE says where the shadow tables' checkpoint is and when it last moved", () => {
    const now = new Date('2025-01-01T12:00:00.000Z');
    const view = { version: 1, generation: 3, rebuilding: true, shadow: { position: 1234, updatedAt: '2025-01-01T11:59:57.000Z' } };
    assert.equal(rebuildingText(view, now), ', rebuilding (shadow at 1,234, 3.0 s ago)');
    assert.equal(rebuildingText({ ...view, shadow: null }, now), ', rebuilding', 'a rebuilder that keeps no checkpoint');
    assert.equal(rebuildingText({ ...view, rebuilding: false, shadow: null }, now), '');
    assert.equal(rebuildingText(null, now), '');
  });
});
