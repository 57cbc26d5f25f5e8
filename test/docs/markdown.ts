// Reading the code samples out of the guides: shared by the test that type-checks them all
// (samples.test.ts) and the one that runs a guide's samples (guide-runs.test.ts).
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));

export interface Block {
  /** The markdown file, relative to the repository. */
  doc: string;
  /** The line of the block's first code line in the markdown file (1-based). */
  line: number;
  code: string;
}

/** Every ```ts block of a markdown file (also indented ones, in lists), its indentation removed. */
export function tsBlocks(doc: string, markdown: string): Block[] {
  const blocks: Block[] = [];
  const lines = markdown.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,})\s*(\S*)/.exec(lines[i] as string);
    if (!open) continue;
    const [, indent = '', fence = '', lang = ''] = open;
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length; j++) {
      const text = lines[j] as string;
      if (text.trimStart().startsWith(fence) && text.trim().replace(/`/g, '') === '') break;
      body.push(text.startsWith(indent) ? text.slice(indent.length) : text.trimStart());
    }
    if (lang === 'ts' || lang === 'typescript') blocks.push({ doc, line: i + 2, code: body.join('\n') });
    i = j;
  }
  return blocks;
}

/** A block with an `import` line is a whole module; the others are fragments. */
export const isModule = (code: string): boolean => /^\s*import[\s{*'"]/m.test(code);

/** `eskit` and `eskit/<x>` → the source file package.json's `exports` builds that entry from. */
export function entryPaths(): Record<string, string[]> {
  const manifest = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { exports: Record<string, { types: string }> };
  const paths: Record<string, string[]> = {};
  for (const [subpath, target] of Object.entries(manifest.exports)) {
    const source = join(REPO, target.types.replace(/^\.\/dist\//, 'src/').replace(/\.d\.ts$/, '.ts'));
    assert.ok(existsSync(source), `${subpath} is built from ${source}`);
    paths[subpath === '.' ? 'eskit' : `eskit/${subpath.slice(2)}`] = [source];
  }
  return paths;
}

