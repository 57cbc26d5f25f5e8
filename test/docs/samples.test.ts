// The code samples of the guides (docs/*.md) and of README.md type-check against eskit as it is now.
//
// The rule: a ```ts block that has an `import` line is a complete module, and is checked; a block
// without one is a fragment (part of a decider, a listing of a contract, lines quoted from the demo)
// and is only read. So a sample that imports must declare what it leaves out (`declare const mailer:
// ...`), and every name it imports must come from an entry that really exports it.
//
// A module whose first line is a comment naming a file (`// account.ts`, `// src/views.ts: ...`) is
// written under that name, so that the samples after it in the same guide can import it
// (`from './account.js'`); the others get a name of their own. Each guide's samples are in a folder of
// their own.
//
// How: each checked block is written as its own module into a temporary folder, and the repository's
// TypeScript checks them all in one run (`--strict`, `module`/`moduleResolution` `nodenext`, `target`
// es2022: what a user's project would use), with `eskit` and its subpaths mapped (tsconfig `paths`)
// to the sources each entry of package.json's `exports` is built from. Why the sources and not dist/:
// no build is needed (dist/ may be stale or missing in a checkout, and building it costs more than the
// check), the samples are checked against the code of this very checkout, and a name an entry does
// not export is an error exactly as it would be for a user. One tsc run checks eskit's sources and
// every sample in about 8 s on 2 cores. The folder's node_modules is a link to the repository's, for
// `pg`, `better-sqlite3`, `@opentelemetry/api` and the Node types. Packages a sample names that the
// repository does not install (pino, the OpenTelemetry Node SDK and exporters) are declared as
// modules of `any`: of such a sample, eskit's side is checked. KNOWN_ERRORS lists the samples of
// README.md (not edited with the guides) known not to compile yet.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { entryPaths, isModule, REPO, tsBlocks } from './markdown.js';
import type { Block } from './markdown.js';

const TSC = join(REPO, 'node_modules', 'typescript', 'bin', 'tsc');

/**
 * Packages samples import that the repository does not install, with the names they import: declared
 * as `any`, so that only eskit's side of such a sample is checked.
 */
const NOT_INSTALLED: Record<string, string[]> = {
  pino: ['default'],
  '@opentelemetry/sdk-node': ['NodeSDK'],
  '@opentelemetry/exporter-trace-otlp-http': ['OTLPTraceExporter'],
  '@opentelemetry/exporter-metrics-otlp-http': ['OTLPMetricExporter'],
};

/** `declare module` for each package of NOT_INSTALLED. */
function stubs(): string {
  return Object.entries(NOT_INSTALLED)
    .map(([name, exported]) => {
      const members = exported.map((member) => (member === 'default' ? '  const value: any;\n  export default value;' : `  export const ${member}: any;`));
      return `declare module '${name}' {\n${members.join('\n')}\n}\n`;
    })
    .join('');
}

/**
 * Samples in a file the guides' maintainers do not edit (README.md) that are known not to compile yet,
 * each with the one error it must still give. The test fails once such a sample compiles (remove it
 * here then) or fails in another way.
 */
const KNOWN_ERRORS: Array<{ doc: string; sample: string; error: string }> = [];

function docs(): Array<{ doc: string; markdown: string }> {
  const files = readdirSync(join(REPO, 'docs'))
    .filter((name) => name.endsWith('.md'))
    .sort()
    .map((name) => join('docs', name));
  return [...files, 'README.md'].map((doc) => ({ doc, markdown: readFileSync(join(REPO, doc), 'utf8') }));
}

/** Where a block goes in the temporary folder: its guide's folder, under the name it gives itself or its line. */
function fileName(block: Block): string {
  const folder = block.doc.replace(/\.md$/, '').replace(/[/.]/g, '_');
  const named = /^\/\/ ([\w./-]+\.ts)\b/.exec(block.code)?.[1];
  return `${folder}/${named ?? `L${block.line}.ts`}`;
}

interface Diagnostic {
  where: string;
  message: string;
  /** The sample it is in; undefined for a file that is not a sample. */
  block?: Block;
}

describe('the samples in docs/ and README.md', { timeout: 60_000 }, () => {
  let dir = '';
  let checked: Block[] = [];
  let fragments = 0;
  let diagnostics: Diagnostic[] = [];
  let output = '';

  before(async () => {
    const blocks = docs().flatMap(({ doc, markdown }) => tsBlocks(doc, markdown));
    checked = blocks.filter((block) => isModule(block.code));
    fragments = blocks.length - checked.length;
    dir = await mkdtemp(join(tmpdir(), 'eskit-doc-samples-'));
    await symlink(join(REPO, 'node_modules'), join(dir, 'node_modules'), 'dir');
    await writeFile(join(dir, 'package.json'), JSON.stringify({ type: 'module', private: true }));
    await writeFile(join(dir, 'not-installed.d.ts'), stubs());
    const byFile = new Map<string, Block>();
    for (const block of checked) {
      const file = fileName(block);
      const other = byFile.get(file);
      assert.ok(!other, `${block.doc}:${block.line} and line ${other?.line} are both ${file}`);
      byFile.set(file, block);
      await mkdir(dirname(join(dir, file)), { recursive: true });
      await writeFile(join(dir, file), block.code);
    }
    await writeFile(
      join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          noEmit: true,
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2022',
          // eskit's sources are part of the program here (not its declarations): they need what the
          // repository's tsconfig gives them (String.prototype.isWellFormed is ES2024).
          lib: ['es2023', 'es2024.string'],
          types: ['node'],
          skipLibCheck: true,
          paths: entryPaths(),
        },
        files: ['not-installed.d.ts', ...byFile.keys()],
      }),
    );
    output = await new Promise<string>((resolve, reject) => {
      execFile(process.execPath, [TSC, '-p', join(dir, 'tsconfig.json'), '--pretty', 'false'], { cwd: dir, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
        // tsc exits 2 when it found errors: those are the result. Anything else is a broken run.
        if (error && error.code !== 2) reject(new Error(`tsc failed to run (${String(error.code)}): ${stderr}${stdout}`));
        else resolve(stdout + stderr);
      });
    });
    diagnostics = [];
    for (const line of output.split('\n')) {
      const match = /^(.+?)\((\d+),(\d+)\): error (TS\d+: .*)$/.exec(line);
      if (!match) {
        if (/error TS\d+/.test(line)) diagnostics.push({ where: '(tsc)', message: line });
        else if (diagnostics.length > 0 && line.startsWith('  ')) (diagnostics[diagnostics.length - 1] as Diagnostic).message += `\n${line}`;
        continue;
      }
      const [, file = '', row = '0', column = '0', message = ''] = match;
      const block = byFile.get(relative(dir, resolve(dir, file)).replace(/\\/g, '/'));
      const where = block ? `${block.doc}:${block.line + Number(row) - 1}:${column}` : `${relative(REPO, resolve(dir, file))}:${row}:${column}`;
      diagnostics.push({ where, message, block });
    }
  });

  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('finds the samples (blocks with an import line are modules, the others fragments)', (t) => {
    t.diagnostic(`${checked.length} modules type-checked, ${fragments} fragments only read`);
    assert.ok(checked.length >= 20, `only ${checked.length} ts blocks with an import line`);
  });

  it('type-checks every sample under tsc --strict (nodenext, es2022)', () => {
    const known = (d: Diagnostic) => KNOWN_ERRORS.find((k) => d.block?.doc === k.doc && d.block.code.includes(k.sample) && d.message === k.error);
    const unexpected = diagnostics.filter((d) => !known(d));
    const report = unexpected.map((d) => `${d.where}: ${d.message}`).join('\n');
    assert.equal(unexpected.length, 0, `samples that do not type-check against eskit:\n${report || output}`);
    const fixed = KNOWN_ERRORS.filter((k) => !diagnostics.some((d) => known(d) === k));
    assert.deepEqual(fixed, [], 'samples in KNOWN_ERRORS that no longer give their error: remove them from the list');
  });
});
