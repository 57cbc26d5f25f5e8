import type { Figure } from './measure.js';
import { significant } from './stats.js';

/** A plain text table; columns whose header starts with '>' are right-aligned (the '>' is dropped). */
export function formatTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const right = headers.map((h) => h.startsWith('>'));
  const names = headers.map((h) => (h.startsWith('>') ? h.slice(1) : h));
  const widths = names.map((name, col) => Math.max(name.length, ...rows.map((row) => (row[col] ?? '').length)));
  const cell = (text: string, col: number): string =>
    right[col] ? text.padStart(widths[col] as number) : text.padEnd(widths[col] as number);
  const line = (cells: readonly string[]): string => names.map((_, col) => cell(cells[col] ?? '', col)).join('  ').trimEnd();
  return [line(names), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

const count = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

function ms(value: number): string {
  return String(significant(value, 2));
}

/** The comparison table of a run, with the notes of figures that carry one. */
export function figuresTable(figures: readonly Figure[]): string {
  const rows = figures.map((f) => {
    const ratio = f.ratio.toFixed(3);
    let verdict = '';
    if (f.target !== undefined) verdict = f.ratio >= f.target ? `>= ${f.target} ok` : `>= ${f.target} BELOW`;
    return [
      f.bench,
      count.format(f.value),
      count.format(f.baseline),
      f.unit,
      ratio,
      verdict,
      `${ms(f.p50Ms)} / ${ms(f.p99Ms)}`,
      `${ms(f.baselineP50Ms)} / ${ms(f.baselineP99Ms)}`,
      f.baselineLabel,
    ];
  });
  const table = formatTable(
    ['figure', '>eskit', '>baseline', 'unit', '>ratio', 'target', '>eskit p50/p99 ms', '>base p50/p99 ms', 'baseline is'],
    rows,
  );
  const notes = figures.filter((f) => f.note !== undefined).map((f) => `  ${f.bench}: ${f.note as string}`);
  return notes.length === 0 ? table : `${table}\nnotes:\n${notes.join('\n')}`;
}
