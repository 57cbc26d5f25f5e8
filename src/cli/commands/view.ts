import { isEskitError } from '../../core/errors.js';
import { loadConfig } from '../config-loader.js';
import { loadConfigViews } from '../config-views.js';
import { CliError, ExitCode, unknownName } from '../errors.js';
import type { CommandSpec } from '../command.js';
import { flag, integerOption, stringOption } from '../command.js';
import { duration, json } from '../format.js';
import { ProgressBar } from '../progress.js';
import { OPERATIONS_GUIDE } from '../docs.js';

const rebuild: CommandSpec = {
  name: 'view rebuild',
  summary: 'rebuild a view into shadow tables and swap it in',
  help: `Usage: eskit view rebuild <name> [--config <file>] [--batch-size <n>] [--fresh] [--json]

Replays every event of the view's types into shadow tables while the live view keeps serving (and
keeps being updated by whichever node leads it), then swaps them in and sets the checkpoint in one
transaction. A progress bar is drawn on stderr (a line per 10 % when stderr is not a terminal).
Ctrl-C stops the rebuild: its shadow tables are dropped and the live view stays as it was.

A rebuild whose process died (killed, crashed) leaves its shadow tables and their checkpoint: the
next one resumes from there when the view's setup, types and evolve source text are unchanged, and
says so. --fresh starts from the beginning instead (for an evolve whose behaviour changed in a way its
source text does not show, such as a helper it calls).

The CLI cannot know a view's evolve code, so it takes the views from a config module: --config, or
the first of eskit.config.js, eskit.config.mjs, eskit.config.ts, eskit.config.mts in the working
directory. Its default export is { registry?, views?: (context) => [views] } (see ${OPERATIONS_GUIDE});
a .ts config is loaded through tsx.

Options:
  --config <file>     the config module
  --batch-size <n>    events per shadow transaction (default 1000)
  --fresh             drop the shadow tables a dead rebuild left, and start from the beginning
  --json              print the result {view, position, events, generation, resumedFrom, durationMs}
`,
  options: { config: { type: 'string' }, 'batch-size': { type: 'string' }, fresh: { type: 'boolean' }, json: { type: 'boolean' } },
  positionals: { min: 1, max: 1, names: '<name>' },
  async run(context) {
    const name = context.args[0] as string;
    const batchSize = integerOption(context.values, 'batch-size', { min: 1 });
    const { path, config } = await loadConfig(stringOption(context.values, 'config'), context.cwd);
    if (config.views === undefined) throw new CliError(`the config ${path} defines no views`, { hint: `Add views: (context) => [...] to it (see ${OPERATIONS_GUIDE}).` });
    const db = await context.open({ registry: config.registry });
    const views = await loadConfigViews({ path, config }, db, context.logger);
    const view = views.find((candidate) => candidate.name === name);
    if (view === undefined) throw unknownName('view', name, views.map((candidate) => candidate.name), `The views come from ${path}.`);
    const bar = new ProgressBar(context.io.stderr, `rebuilding ${name}`);
    let result;
    try {
      result = await view.rebuild({ batchSize, fresh: flag(context.values, 'fresh'), signal: context.signal, onProgress: ({ done, total }) => bar.update(done, total) });
    } catch (error) {
      bar.abandon();
      if (context.signal.aborted) {
        throw new CliError(`the rebuild of "${name}" was interrupted; its shadow tables were dropped and the live view is unchanged`, { cause: error });
      }
      if (isEskitError(error, 'ESKIT_FENCED')) {
        throw new CliError(`the rebuild of "${name}" was taken over by another rebuild`, { hint: 'Only one rebuild per view runs at a time; let the other one finish.', cause: error });
      }
      throw error;
    }
    bar.finish(result.events, result.events);
    if (flag(context.values, 'json')) {
      context.out(json({ view: name, ...result, durationMs: Math.round(result.durationMs) }));
    } else {
      // The time is then that of the rest of a replay, not of a whole one.
      const resumed = result.resumedFrom > 0 ? `, resuming from position ${result.resumedFrom} (where the shadow tables of a rebuild that died had got)` : '';
      context.out(
        `Rebuilt view "${name}"${resumed}: ${result.events} events in ${duration(result.durationMs)}, swapped in at position ${result.position} (generation ${result.generation}).\n`,
      );
    }
    return ExitCode.Ok;
  },
};

export const viewCommands: CommandSpec[] = [rebuild];
