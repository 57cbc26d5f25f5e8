import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// ---- layering (DESIGN.md §1) ---------------------------------------------------------------------
// What each folder of src/ may import besides itself. Imports flow one way: core imports nothing of
// ours; telemetry fills core's hook (so it imports core) and core never imports it; the engine imports
// core and telemetry (automation and view also subscription); adapters import core only; only the CLI
// (and examples, bench, tests, which lint leaves free) picks concrete adapters.
const LAYERS = {
  core: [],
  telemetry: ['core'],
  decider: ['core', 'telemetry'],
  subscription: ['core', 'telemetry'],
  automation: ['core', 'telemetry', 'subscription'],
  view: ['core', 'telemetry', 'subscription'],
  memory: ['core'],
  sqlite: ['core'],
  postgres: ['core'],
  testing: ['core', 'decider'],
  // `eskit/adapter` re-exports core for adapter authors.
  adapter: ['core'],
  // The CLI reaches sqlite and postgres through their entry files only (ADAPTER_ENTRIES below): it talks
  // to an adapter through what the adapter offers (its backend and admin surface), not its tables.
  // src/cli/dashboard (`eskit dashboard`, openDashboard) is part of it, built on its database, status
  // report and dead-letter helpers.
  cli: ['core', 'telemetry', 'decider', 'subscription', 'automation', 'view', 'memory'],
};
/** The folders whose entry (index.ts) the CLI may import, but nothing else in them. */
const ADAPTER_ENTRIES = { cli: ['sqlite', 'postgres'] };
/** The root entry (`eskit`) exports what applications write against; adapters with drivers have their own. */
const ROOT_ENTRY = ['core', 'telemetry', 'decider', 'subscription', 'automation', 'view', 'memory'];
/**
 * The folders whose index.ts is a package entry (package.json "exports"): besides re-exporting its
 * folder, such a file loads telemetry, which fills core's append hook (src/telemetry/install.ts).
 */
const PACKAGE_ENTRIES = ['sqlite', 'postgres', 'memory', 'adapter', 'testing', 'cli'];
/** A folder of src/ that is not in LAYERS is held to this until it gets its own list. */
const NEW_FOLDER = ['core'];
/** Deepest nesting below a folder that the rules cover (src/<folder>/a/b/file.ts is depth 3). */
const MAX_DEPTH = 3;

// The drivers are optional peers: only src/postgres/driver.ts and src/sqlite/driver.ts load them, so
// that a missing one fails with ESKIT_MISSING_DRIVER. Type imports cost nothing at run time.
const DRIVER_FILES = ['src/postgres/driver.ts', 'src/sqlite/driver.ts'];
const DRIVERS = ['pg', 'better-sqlite3'];
const driverPaths = DRIVERS.map((name) => ({
  name,
  allowTypeImports: true,
  message: `load ${name} through ${name === 'pg' ? 'src/postgres/driver.ts' : 'src/sqlite/driver.ts'} (an optional peer: a missing driver must fail with ESKIT_MISSING_DRIVER); type imports are fine.`,
}));

const escape = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * `no-restricted-imports` options for a file `depth` folders below src/ (0: src/index.ts) that may
 * import `allowed` (folder names, plus `own`, its own folder) and only the entry file of `entries`.
 * Import specifiers are relative, so the `../` that leave src/<own> say where an import lands.
 */
function restrictions({ depth, own, allowed, entries = [], drivers = true, label }) {
  const up = depth === 0 ? '\\./' : `(?:\\.\\./){${depth}}`;
  const free = [...new Set([...allowed, ...(own ? [own] : [])])].map(escape);
  const entryOnly = entries.map(escape);
  const lookahead = [
    ...free.map((folder) => `${folder}(?:/|$)`),
    ...entryOnly.map((folder) => `${folder}/index(?:\\.js)?$`),
  ].join('|');
  const allowedText = [...allowed, ...entries.map((folder) => `${folder} (its index.ts only)`)].join(', ');
  const patterns = [
    {
      regex: lookahead === '' ? `^${up}[^.]` : `^${up}(?!${lookahead})[^.]`,
      message: allowedText === '' ? `${label} imports nothing of ours (DESIGN.md §1, eslint.config.js LAYERS).` : `${label} may import only ${allowedText} (DESIGN.md §1, eslint.config.js LAYERS).`,
    },
    {
      regex: depth === 0 ? '^\\.\\./' : `^${up}\\.\\./`,
      message: `${label} imports nothing outside src/.`,
    },
  ];
  return ['error', { paths: drivers ? driverPaths : [], patterns }];
}

/** Config objects for the files of src/<folder> (`undefined`: any folder missing from LAYERS), nested or not. */
function folderRules(folder, allowed) {
  const configs = [];
  const entries = (folder && ADAPTER_ENTRIES[folder]) ?? [];
  const label = folder ? `src/${folder}` : 'a folder missing from LAYERS';
  for (let depth = 1; depth <= MAX_DEPTH; depth++) {
    const config = { files: [`src/${folder ?? '*'}/${'*/'.repeat(depth - 1)}*.ts`] };
    if (!folder) config.ignores = Object.keys(LAYERS).map((known) => `src/${known}/**`);
    config.rules = { 'no-restricted-imports': restrictions({ depth, own: folder, allowed, entries, label }) };
    configs.push(config);
  }
  if (PACKAGE_ENTRIES.includes(folder)) {
    const options = { depth: 1, own: folder, allowed: [...allowed, 'telemetry'], entries, label: `src/${folder}/index.ts` };
    configs.push({ files: [`src/${folder}/index.ts`], rules: { 'no-restricted-imports': restrictions(options) } });
  }
  return configs;
}

function layering() {
  const configs = [
    { files: ['src/index.ts'], rules: { 'no-restricted-imports': restrictions({ depth: 0, allowed: ROOT_ENTRY, label: 'the root entry src/index.ts' }) } },
    ...folderRules(undefined, NEW_FOLDER),
    ...Object.entries(LAYERS).flatMap(([folder, allowed]) => folderRules(folder, allowed)),
  ];
  for (const file of DRIVER_FILES) {
    const folder = file.split('/')[1];
    const options = { depth: 1, own: folder, allowed: LAYERS[folder], drivers: false, label: file };
    configs.push({ files: [file], rules: { 'no-restricted-imports': restrictions(options) } });
  }
  // require() and import() slip past no-restricted-imports; the drivers' files are the only callers.
  const driverCall = 'load the driver through src/postgres/driver.ts or src/sqlite/driver.ts (an optional peer).';
  configs.push({
    files: ['src/**/*.ts'],
    ignores: DRIVER_FILES,
    rules: {
      'no-restricted-syntax': [
        'error',
        { selector: "CallExpression[callee.name='require'][arguments.0.value=/^(pg|better-sqlite3)$/]", message: driverCall },
        { selector: 'ImportExpression[source.value=/^(pg|better-sqlite3)$/]', message: driverCall },
      ],
    },
  });
  return configs;
}

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'data/', '.eskit/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', setImmediate: 'readonly', URL: 'readonly', AbortController: 'readonly', AbortSignal: 'readonly', performance: 'readonly', structuredClone: 'readonly', Buffer: 'readonly', queueMicrotask: 'readonly' } },
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
    },
  },
  ...layering(),
  // The dashboard's page (assets/dashboard/*.js, ES modules loaded by app.js) runs in the browser, not in Node.
  {
    files: ['assets/**/*.js'],
    languageOptions: {
      globals: {
        window: 'readonly', document: 'readonly', location: 'readonly', history: 'readonly', sessionStorage: 'readonly', localStorage: 'readonly',
        EventSource: 'readonly', fetch: 'readonly', confirm: 'readonly', URLSearchParams: 'readonly', Intl: 'readonly', Node: 'readonly',
      },
    },
  },
);
