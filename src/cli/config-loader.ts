import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { EskitConfig } from './config.js';
import { CliError, messageOf } from './errors.js';
import { OPERATIONS_GUIDE } from './docs.js';

/** Looked for in the working directory, in this order, when --config is not given. */
export const CONFIG_NAMES = ['eskit.config.js', 'eskit.config.mjs', 'eskit.config.ts', 'eskit.config.mts'] as const;

type TsImport = (specifier: string, options: { parentURL: string }) => Promise<unknown>;

/** How a TypeScript config is loaded when the process has no TypeScript loader yet (replaceable in tests). */
export type TsxLoader = (configPath: string) => Promise<TsImport | undefined>;

/**
 * tsx's `tsImport`, from the config's own node_modules first (the application's tsx), then from
 * eskit's; undefined when tsx is not installed.
 */
export const findTsx: TsxLoader = async (configPath) => {
  const candidates: Array<() => Promise<unknown>> = [async () => import(tsxEsmApi(configPath)), async () => import('tsx/esm/api' as string)];
  for (const load of candidates) {
    try {
      const api = (await load()) as { tsImport?: TsImport };
      if (typeof api.tsImport === 'function') return api.tsImport;
    } catch {
      // Not installed there; try the next place.
    }
  }
  return undefined;
};

/**
 * The ESM entry of `tsx/esm/api` as seen from `from`. require.resolve would give the CommonJS one
 * (its conditions), so the package is found through its package.json and the entry read from its exports.
 */
function tsxEsmApi(from: string): string {
  const manifest = createRequire(from).resolve('tsx/package.json');
  const { exports } = JSON.parse(readFileSync(manifest, 'utf8')) as { exports?: Record<string, { import?: { default?: string } | string }> };
  const entry = exports?.['./esm/api']?.import;
  const relative = typeof entry === 'string' ? entry : entry?.default;
  if (relative === undefined) throw new Error('tsx has no ./esm/api export');
  return pathToFileURL(resolve(dirname(manifest), relative)).href;
}

const TYPESCRIPT = /\.[mc]?ts$/;

async function importModule(path: string, tsx: TsxLoader): Promise<Record<string, unknown>> {
  const url = pathToFileURL(path).href;
  try {
    return (await import(url)) as Record<string, unknown>;
  } catch (error) {
    const code = (error as { code?: unknown } | null)?.code;
    if (!TYPESCRIPT.test(path) || code !== 'ERR_UNKNOWN_FILE_EXTENSION') {
      throw new CliError(`loading the config ${path} failed: ${messageOf(error)}`, { hint: 'Fix the config module (run it with node to see the whole error).', cause: error });
    }
  }
  // A TypeScript config in a process without a TypeScript loader: load it through tsx.
  const tsImport = await tsx(path);
  if (tsImport === undefined) {
    throw new CliError(`the config ${path} is TypeScript, and loading it needs tsx, which is not installed`, {
      hint: 'Install it (npm install --save-dev tsx), run eskit through it (npx tsx node_modules/.bin/eskit ...), or compile the config to .js.',
    });
  }
  try {
    return (await tsImport(url, { parentURL: import.meta.url })) as Record<string, unknown>;
  } catch (error) {
    throw new CliError(`loading the config ${path} failed: ${messageOf(error)}`, { hint: 'Fix the config module.', cause: error });
  }
}

/** Finds, loads and checks the config: `file` (relative to `cwd`), or the first of CONFIG_NAMES in `cwd`. */
export async function loadConfig(file: string | undefined, cwd: string, tsx: TsxLoader = findTsx): Promise<{ path: string; config: EskitConfig }> {
  let path: string | undefined;
  if (file !== undefined) {
    path = resolve(cwd, file);
    if (!existsSync(path)) throw new CliError(`no config file at ${path}`, { hint: 'Check --config.' });
  } else {
    path = CONFIG_NAMES.map((name) => resolve(cwd, name)).find((candidate) => existsSync(candidate));
    if (path === undefined) {
      throw new CliError(`no ${CONFIG_NAMES.join(', ')} in ${cwd}`, {
        hint: `Pass --config <file>: a module whose default export is defineConfig({ registry, views }) (the registry for events check, the views for view rebuild; see ${OPERATIONS_GUIDE}).`,
      });
    }
  }
  const module = await importModule(path, tsx);
  let config = (module.default ?? module.config) as unknown;
  // A config compiled as CommonJS (a .ts outside a "type": "module" package) arrives wrapped once more.
  const inner = (config as { default?: unknown } | null)?.default;
  if (typeof inner === 'object' && inner !== null && !('views' in (config as object)) && !('registry' in (config as object))) config = inner;
  if (typeof config !== 'object' || config === null) {
    throw new CliError(`the config ${path} has no default export object`, { hint: `export default defineConfig({ registry, views: (context) => [...] }) (see ${OPERATIONS_GUIDE}).` });
  }
  const { views, registry } = config as { views?: unknown; registry?: unknown };
  if (views !== undefined && typeof views !== 'function') {
    throw new CliError(`"views" in the config ${path} must be a function (context) => views`, { hint: `See ${OPERATIONS_GUIDE}.` });
  }
  if (registry !== undefined && typeof (registry as { decode?: unknown } | null)?.decode !== 'function') {
    throw new CliError(`"registry" in the config ${path} must be an EventRegistry`, { hint: `See ${OPERATIONS_GUIDE}.` });
  }
  return { path, config: config as EskitConfig };
}
