// Code quoted in docs/getting-started.md is the demo's code: each line of a quoted block is in one of
// the files the paragraph above it names, so that a reader who opens that file finds it (and the
// quote compiles, as the demo does). Lines with `...` are abridged and skipped.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { it } from 'node:test';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const EXAMPLES = join(REPO, 'examples', 'ticket-shop');

/** The paragraph that starts with `marker`, the files it names (`name.ts`) and its first code block. */
function quote(markdown: string, marker: string): { files: string[]; lines: string[] } {
  const start = markdown.indexOf(marker);
  assert.ok(start >= 0, `getting-started has "${marker}"`);
  const match = /^([\s\S]*?)```ts\n([\s\S]*?)```/.exec(markdown.slice(start));
  assert.ok(match, `a code block follows "${marker}"`);
  const [, prose = '', code = ''] = match;
  const files = [...prose.matchAll(/`([\w-]+\.ts)`/g)].map((m) => m[1] as string);
  const lines = code
    .split('\n')
    .map((line) => line.replace(/\s+\/\/.*$/, '').trim())
    .filter((line) => line !== '' && !line.startsWith('//') && !line.includes('...'));
  return { files, lines };
}

it('getting-started: the read-your-writes code is where the text says', () => {
  const { files, lines } = quote(readFileSync(join(REPO, 'docs', 'getting-started.md'), 'utf8'), '**Read your writes.**');
  assert.ok(files.length > 0, 'the paragraph names the files');
  assert.ok(lines.length >= 2, 'the block has code lines');
  const sources = files.map((file) => readFileSync(join(EXAMPLES, file), 'utf8'));
  const missing = lines.filter((line) => !sources.some((source) => source.includes(line)));
  assert.deepEqual(missing, [], `lines not in ${files.join(' or ')}`);
});
