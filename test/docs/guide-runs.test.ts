// The guides whose samples are programs, not only listings, run them: each ```ts block of such a guide
// that imports something is a whole program, run in a child process (tsx), and must exit 0; so do the
// examples the guides link to (examples/lifecycle/*.ts, examples/personal-data/*.ts). The
// samples assert what they show (node:assert), so a guide that stops telling the truth fails here.
// They run on memory() or SQLite ':memory:', so they need no server. `eskit` and its subpaths are
// rewritten to the sources package.json's `exports` builds them from, as samples.test.ts maps them.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { entryPaths, isModule, REPO, tsBlocks } from './markdown.js';

const RUNNABLE_GUIDES = ['docs/lifecycle.md', 'docs/personal-data.md'];
const TSX = join(REPO, 'node_modules', 'tsx', 'dist', 'cli.mjs');
const EXAMPLES = ['examples/lifecycle', 'examples/personal-data'];

/** Runs a TypeScript program with tsx; resolves with its exit code and output. */
function run(file: string, cwd: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [TSX, file], { cwd, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, output: `${stdout}${stderr}` });
    });
  });
}

/** The sample with `from 'eskit…'` pointing at the source files. */
function rewired(code: string, entries: Record<string, string[]>): string {
  return code.replace(/from '(eskit(?:\/[\w-]+)?)'/g, (whole, entry: string) => {
    const source = entries[entry]?.[0];
    assert.ok(source, `the sample imports ${entry}, which package.json does not export`);
    return `from '${pathToFileURL(source).href}'`;
  });
}

describe('the guides run their samples', { timeout: 120_000 }, () => {
  let dir = '';
  before(async () => {
    // Under the repository's node_modules, so that a sample's other imports (pg, better-sqlite3) resolve.
    const cache = join(REPO, 'node_modules', '.cache');
    await mkdir(cache, { recursive: true });
    dir = await mkdtemp(join(cache, 'eskit-guides-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  for (const doc of RUNNABLE_GUIDES) {
    const samples = tsBlocks(doc, readFileSync(join(REPO, doc), 'utf8')).filter((block) => isModule(block.code));
    it(`${doc} has samples to run`, () => assert.ok(samples.length > 0));
    for (const sample of samples) {
      it(`${doc}:${sample.line} runs and exits 0`, async () => {
        const file = join(dir, `${doc.replace(/\W/g, '_')}_L${sample.line}.mts`);
        await writeFile(file, rewired(sample.code, entryPaths()));
        const outcome = await run(file, dir);
        assert.equal(outcome.code, 0, `${doc}:${sample.line} failed:\n${outcome.output}`);
      });
    }
  }

  for (const folder of EXAMPLES) {
    for (const name of readdirSync(join(REPO, folder)).filter((file) => file.endsWith('.ts')).sort()) {
      it(`${folder}/${name} runs and exits 0`, async () => {
        const outcome = await run(join(REPO, folder, name), REPO);
        assert.equal(outcome.code, 0, `${folder}/${name} failed:\n${outcome.output}`);
      });
    }
  }
});
