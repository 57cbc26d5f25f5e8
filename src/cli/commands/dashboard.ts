import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import type { RebuildableView } from '../config.js';
import type { EskitConfig } from '../config.js';
import { CONFIG_NAMES, loadConfig } from '../config-loader.js';
import { loadConfigViews } from '../config-views.js';
import { CliError, errorLine, ExitCode, UsageError } from '../errors.js';
import type { CommandContext, CommandSpec } from '../command.js';
import { flag, integerOption, stringOption, stringsOption } from '../command.js';
import { OPERATIONS_GUIDE } from '../docs.js';
import { DEFAULT_HOST, DEFAULT_PORT, newToken, startDashboard } from '../dashboard/index.js';
import type { RunningDashboard } from '../dashboard/index.js';

/**
 * The config when --config names one or the working directory has one; undefined otherwise (no views
 * then). The dashboard needs a config only to rebuild views, so one it found by itself but cannot load
 * (a .ts config without tsx, say) is a warning, not a reason to show nothing; one named by --config is
 * an error.
 */
async function optionalConfig(file: string | undefined, context: CommandContext): Promise<{ path: string; config: EskitConfig } | undefined> {
  if (file !== undefined) return loadConfig(file, context.cwd);
  const found = CONFIG_NAMES.find((name) => existsSync(resolve(context.cwd, name)));
  if (found === undefined) return undefined;
  try {
    return await loadConfig(undefined, context.cwd);
  } catch (error) {
    context.err(`eskit: warning: ${errorLine(error)}\neskit: warning: going on without ${found}: the dashboard shows everything but cannot rebuild views.\n`);
    return undefined;
  }
}

function untilAborted(signal: AbortSignal): Promise<void> {
  return new Promise((done) => {
    if (signal.aborted) done();
    else signal.addEventListener('abort', () => done(), { once: true });
  });
}

export const dashboard: CommandSpec = {
  name: 'dashboard',
  summary: 'a live operator dashboard in the browser (Ctrl-C to stop)',
  help: `Usage: eskit dashboard [--host <host>] [--allowed-host <name>]... [--port <n>] [--allow-actions] [--config <file>] [--interval <ms>]

Serves a page that shows the whole system live: every subscription, automation and view with its
state, leader node and fencing token, checkpoint, lag, events per second and time since its last
event; automations' pending, running and retrying items; dead letters (filter, open, retry, discard,
redrive); the log as it grows, streams with their metadata; views with row counts and rebuilds.
It reads the database once per --interval, whatever the number of open pages, and runs until Ctrl-C.

Read-only unless --allow-actions. Then every action needs the token printed at start (or the one
given in $ESKIT_DASHBOARD_TOKEN, not printed), comes from the page itself (same origin, JSON), and is
printed as a JSON line on stdout with who did it. The page never gets the database password, nor the
plaintext of personal data (dead letters included: \`eskit dlq show\` opens those). It binds to 127.0.0.1 and
answers only requests that name it (127.0.0.1, localhost, [::1]); another --host makes it reachable
from other machines, with a warning.

Views are rebuilt from a config module as for \`eskit view rebuild\`: --config, or the first of
${CONFIG_NAMES.join(', ')} in the working directory, when there is one (see ${OPERATIONS_GUIDE}).

Options:
  --host <host>       the address to bind (default ${DEFAULT_HOST}; 0.0.0.0: every interface)
  --allowed-host <n>  another name it answers to (repeatable): a reverse proxy's name passed on as
                      Host, or this machine's name when bound beyond loopback (then the Host check,
                      against DNS rebinding, applies there too)
  --port <n>          the port (default ${DEFAULT_PORT}; 0: any free port, printed)
  --allow-actions     allow retry, discard, redrive and rebuild (with the printed token)
  --config <file>     the config module with the views to rebuild
  --interval <ms>     how often the database is read (default 1000, at least 50)
`,
  options: { host: { type: 'string' }, 'allowed-host': { type: 'string', multiple: true }, port: { type: 'string' }, 'allow-actions': { type: 'boolean' }, config: { type: 'string' }, interval: { type: 'string' } },
  positionals: { min: 0, max: 0, names: '' },
  async run(context) {
    const host = stringOption(context.values, 'host') ?? DEFAULT_HOST;
    if (host.trim() === '') throw new UsageError('--host needs an address, e.g. 127.0.0.1');
    const port = integerOption(context.values, 'port', { default: DEFAULT_PORT }) as number;
    if (port > 65535) throw new UsageError(`--port must be 0 to 65535, got ${port}`);
    const intervalMs = integerOption(context.values, 'interval', { min: 1, default: 1000 }) as number;
    if (intervalMs < 50) throw new UsageError(`--interval must be at least 50 ms, got ${intervalMs}`);
    const allowActions = flag(context.values, 'allow-actions');
    const loaded = await optionalConfig(stringOption(context.values, 'config'), context);
    const db = await context.open({ registry: loaded?.config.registry });
    const views: RebuildableView[] = loaded === undefined ? [] : await loadConfigViews(loaded, db, context.logger);
    const fromEnv = allowActions && (context.io.env.ESKIT_DASHBOARD_TOKEN ?? '') !== '';
    const token = allowActions ? context.io.env.ESKIT_DASHBOARD_TOKEN || newToken() : undefined;
    let running: RunningDashboard;
    try {
      running = await startDashboard({
        database: db,
        host,
        port,
        allowedHosts: stringsOption(context.values, 'allowed-host'),
        allowActions,
        token,
        views,
        intervalMs,
        logger: context.logger,
        onAction: (entry) => context.out(`${JSON.stringify(entry)}\n`),
      });
    } catch (error) {
      const code = (error as { code?: unknown } | null)?.code;
      if (code === 'EADDRINUSE') throw new CliError(`port ${port} on ${host} is in use`, { hint: 'Pass another --port (--port 0 picks a free one).', cause: error });
      if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND' || code === 'EAI_AGAIN') throw new CliError(`cannot bind to ${host}`, { hint: 'Check --host: an address of this machine.', cause: error });
      if (error instanceof RangeError) throw new UsageError(error.message.replace(/^dashboard: /, ''));
      throw error;
    }
    try {
      context.out(`eskit dashboard: ${db.target.display} at ${running.url} (${allowActions ? 'actions allowed' : 'read-only'}; Ctrl-C to stop)\n`);
      if (running.token !== undefined && fromEnv) {
        // A token the operator chose is theirs already: stdout is often a log (a service's journal).
        context.out(`Actions token: the one in $ESKIT_DASHBOARD_TOKEN (not printed). Open ${running.url}#token=<that token>\n`);
      } else if (running.token !== undefined) {
        context.out(`Actions token: ${running.token}\nOpen with the token: ${running.url}#token=${running.token}\n`);
      }
      if (views.length > 0) context.out(`Views to rebuild (from ${loaded?.path}): ${views.map((view) => view.name).join(', ')}\n`);
      await untilAborted(context.signal);
    } finally {
      await running.close();
    }
    return ExitCode.Ok;
  },
};
