// A PostgreSQL server of the test's own: initdb in a temporary directory, started with pg_ctl on a
// Unix socket in that directory (no TCP, so it cannot clash with the shared server on 5432), and
// crashed with `pg_ctl stop -m immediate`. For what a shared server cannot do: lose its WAL buffers.
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { appendFile, chown, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** The OS user that runs the server when the tests run as root (initdb refuses root). */
const SERVER_USER = 'postgres';

export interface PrivatePostgresOptions {
  /** Server settings appended to postgresql.conf: numbers as they are, booleans as on/off, strings quoted. */
  settings?: Record<string, string | number | boolean>;
  /** The directory of initdb and pg_ctl (default: findPostgresBinaries()). */
  binDir?: string;
}

export interface PrivatePostgres {
  /** A URL for pg (and eskit) to the `postgres` database as the `postgres` superuser. */
  readonly connectionString: string;
  readonly dataDir: string;
  readonly binDir: string;
  /** Whether the server was started and not stopped since (as far as this object knows). */
  readonly running: boolean;
  /** `pg_ctl stop -m immediate`: every server process quits at once, nothing is written or flushed. */
  crash(): Promise<void>;
  /** `pg_ctl start -w` (crash recovery included); resolves when the server accepts connections. Nothing if running. */
  start(): Promise<void>;
  /** Stops the server (immediately) if it runs and removes its directory. Safe to call twice. */
  destroy(): Promise<void>;
  /** The server's log so far (for failure messages). */
  log(): string;
}

/**
 * Where initdb and pg_ctl are: ESKIT_TEST_PG_BINDIR, else the newest /usr/lib/postgresql/<version>/bin,
 * else `pg_config --bindir`. undefined when none has them.
 */
export function findPostgresBinaries(): string | undefined {
  const has = (dir: string): boolean => existsSync(path.join(dir, 'initdb')) && existsSync(path.join(dir, 'pg_ctl'));
  const fromEnv = process.env.ESKIT_TEST_PG_BINDIR;
  if (fromEnv) return has(fromEnv) ? fromEnv : undefined;
  const root = '/usr/lib/postgresql';
  if (existsSync(root)) {
    const versions = readdirSync(root)
      .filter((name) => /^\d+(\.\d+)?$/.test(name))
      .sort((a, b) => Number(b) - Number(a));
    for (const version of versions) {
      const dir = path.join(root, version, 'bin');
      if (has(dir)) return dir;
    }
  }
  const pgConfig = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8' });
  const dir = pgConfig.status === 0 ? pgConfig.stdout.trim() : '';
  return dir !== '' && has(dir) ? dir : undefined;
}

export const MISSING_BINARIES =
  'PostgreSQL server binaries (initdb, pg_ctl) were not found in /usr/lib/postgresql/<version>/bin nor by `pg_config --bindir`. ' +
  'Install the PostgreSQL server package or point ESKIT_TEST_PG_BINDIR at the directory that holds them.';

/** How to run a server binary: as the postgres user when we are root, directly otherwise. */
function commandPrefix(): { prefix: string[]; owner: { uid: number; gid: number } | undefined } {
  if (process.getuid?.() !== 0) return { prefix: [], owner: undefined };
  const id = (flag: string): number => {
    const result = spawnSync('id', [flag, SERVER_USER], { encoding: 'utf8' });
    if (result.status !== 0) throw new Error(`Running as root, the test server needs an OS user "${SERVER_USER}" (initdb refuses root): ${result.stderr.trim()}`);
    return Number(result.stdout.trim());
  };
  const owner = { uid: id('-u'), gid: id('-g') };
  const onPath = (name: string): boolean =>
    [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin', '/usr/bin', '/bin'].some((dir) => dir !== '' && existsSync(path.join(dir, name)));
  if (onPath('runuser')) return { prefix: ['runuser', '-u', SERVER_USER, '--'], owner };
  if (onPath('setpriv')) return { prefix: ['setpriv', `--reuid=${owner.uid}`, `--regid=${owner.gid}`, '--init-groups', '--'], owner };
  throw new Error(`Running as root, the test server must run as "${SERVER_USER}", but neither runuser nor setpriv was found.`);
}

function settingLine(name: string, value: string | number | boolean): string {
  if (!/^[a-z_.]+$/.test(name)) throw new Error(`not a setting name: ${name}`);
  const text = typeof value === 'boolean' ? (value ? 'on' : 'off') : typeof value === 'number' ? String(value) : `'${value.replace(/'/g, "''")}'`;
  return `${name} = ${text}\n`;
}

/**
 * initdb, then start. The directory is removed by `destroy()`, which the caller must reach (an
 * after/afterEach hook); a process that exits without it still stops the server (exit hook).
 */
export async function startPrivatePostgres(options: PrivatePostgresOptions = {}): Promise<PrivatePostgres> {
  const binDir = options.binDir ?? findPostgresBinaries();
  if (binDir === undefined) throw new Error(MISSING_BINARIES);
  const { prefix, owner } = commandPrefix();
  const dir = await mkdtemp(path.join(tmpdir(), 'eskit-pg-'));
  const dataDir = path.join(dir, 'data');
  const logFile = path.join(dir, 'server.log');
  // Only the socket's file name carries the port, and the socket lives in this directory: any port will do.
  const port = 20_000 + Math.floor(Math.random() * 40_000);
  let running = false;
  let destroyed = false;

  const log = (): string => {
    try {
      return readFileSync(logFile, 'utf8');
    } catch {
      return '(no server log)';
    }
  };
  const argv = (bin: string, args: string[]): [string, string[]] => {
    const command = [...prefix, path.join(binDir, bin), ...args];
    return [command[0] as string, command.slice(1)];
  };
  const run = async (bin: string, args: string[]): Promise<void> => {
    const [command, rest] = argv(bin, args);
    try {
      await execFileAsync(command, rest, { cwd: dir, timeout: 60_000 });
    } catch (error) {
      const { stderr, stdout, message } = error as { stderr?: string; stdout?: string; message: string };
      throw new Error(`${bin} ${args.join(' ')} failed: ${(stderr || stdout || message).trim()}\n--- server log ---\n${log().slice(-4000)}`);
    }
  };
  // If the process ends without destroy() (a crash of the test runner), neither the server nor its
  // directory must outlive it.
  const onExit = (): void => {
    if (running) {
      const [command, rest] = argv('pg_ctl', ['-D', dataDir, 'stop', '-m', 'immediate']);
      spawnSync(command, rest, { cwd: dir, stdio: 'ignore', timeout: 10_000 });
    }
    rmSync(dir, { recursive: true, force: true });
  };

  const server: PrivatePostgres = {
    connectionString: `postgresql://postgres@localhost:${port}/postgres?host=${encodeURIComponent(dir)}`,
    dataDir,
    binDir,
    get running() {
      return running;
    },
    async crash() {
      await run('pg_ctl', ['-D', dataDir, '-w', '-t', '60', 'stop', '-m', 'immediate']);
      running = false;
    },
    async start() {
      if (running) return;
      if (destroyed) throw new Error('the private PostgreSQL server was destroyed');
      await run('pg_ctl', ['-D', dataDir, '-l', logFile, '-w', '-t', '60', 'start']);
      running = true;
    },
    async destroy() {
      if (destroyed) return;
      destroyed = true;
      try {
        if (running || existsSync(path.join(dataDir, 'postmaster.pid'))) {
          await run('pg_ctl', ['-D', dataDir, '-w', '-t', '60', 'stop', '-m', 'immediate']).catch(() => killPostmaster(dataDir));
          running = false;
        }
      } finally {
        process.removeListener('exit', onExit);
        await rm(dir, { recursive: true, force: true });
      }
    },
    log,
  };

  process.on('exit', onExit);
  try {
    if (owner) await chown(dir, owner.uid, owner.gid);
    await run('initdb', ['-D', dataDir, '-U', 'postgres', '--auth=trust', '--no-sync', '--encoding=UTF8', '--locale=C']);
    const settings: Record<string, string | number | boolean> = {
      listen_addresses: '',
      port,
      unix_socket_directories: dir,
      ...options.settings,
    };
    await appendFile(path.join(dataDir, 'postgresql.conf'), `\n# eskit test settings\n${Object.entries(settings).map(([name, value]) => settingLine(name, value)).join('')}`);
    await server.start();
  } catch (error) {
    await server.destroy().catch(() => undefined);
    throw error;
  }
  return server;
}

/** The last resort when pg_ctl cannot stop it: SIGKILL to the postmaster named in postmaster.pid. */
function killPostmaster(dataDir: string): void {
  try {
    const pid = Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    if (Number.isSafeInteger(pid) && pid > 0) process.kill(pid, 'SIGKILL');
  } catch {
    // Gone already.
  }
}
