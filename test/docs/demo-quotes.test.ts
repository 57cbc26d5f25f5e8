// docs/getting-started.md walks through the demo (examples/): its ```ts blocks without an import line
// quote the demo's code, and each of their lines is in a file of examples/ as it is now, so that a
// reader who opens the file finds it. Lines abridged with `...` and comment lines are skipped, and a
// trailing `// comment` is the guide's, not the demo's. (The quotes compile: the demo does, with
// `npm run typecheck`. test/package/docs.test.ts also checks that the read-your-writes quote is in
// the files its paragraph names.)
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { it } from 'node:test';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sources(path);
    return name.endsWith('.ts') ? [readFileSync(path, 'utf8')] : [];
  });
}

it('getting-started quotes the demo as it is', () => {
  const markdown = readFileSync(join(REPO, 'docs', 'getting-started.md'), 'utf8');
  const demo = sources(join(REPO, 'examples')).join('\n');
  const blocks = [...markdown.matchAll(/^```ts\n([\s\S]*?)^```/gm)].map((match) => ({ code: match[1] as string, line: markdown.slice(0, match.index).split('\n').length + 1 }));
  const quotes = blocks.filter(({ code }) => !/^\s*import[\s{*'"]/m.test(code));
  assert.ok(quotes.length >= 8, `only ${quotes.length} quotes of the demo`);
  const missing: string[] = [];
  for (const { code, line } of quotes) {
    code.split('\n').forEach((text, index) => {
      const quoted = text.replace(/\s+\/\/ .*$/, '').trim();
      if (quoted === '' || quoted.startsWith('//') || quoted.includes('...') || quoted.includes('…')) return;
      if (!demo.includes(quoted)) missing.push(`docs/getting-started.md:${line + index}: ${quoted}`);
    });
  }
  assert.deepEqual(missing, [], 'lines quoted from the demo that are in none of its files');
});
