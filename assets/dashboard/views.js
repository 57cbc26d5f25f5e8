// The views: their versions, tables and rebuilds.

import { el, setText, $, button, keyedRows, fmt, time } from './dom.js';
import { ui } from './ui.js';
import { act, notice } from './api.js';

// ---- views ---------------------------------------------------------------------------------------

export function renderViews(state) {
  const names = new Set(state.entries.filter((entry) => entry.kind === 'view').map((entry) => entry.name));
  for (const name of state.rebuildable) names.add(name);
  for (const rebuild of state.rebuilds) names.add(rebuild.view);
  const keys = [...names].sort();
  keyedRows($('views').tBodies[0], ui.viewRows, keys, createViewRow, (row, name) => updateViewRow(row, name, state));
  $('views-empty').hidden = keys.length > 0;
  $('views').hidden = keys.length === 0;
  const hint = $('views-hint');
  hint.hidden = keys.length === 0 || (state.rebuildable.length > 0 && !state.readOnly);
  setText(hint, state.readOnly ? 'Read-only: views are rebuilt from a dashboard started with --allow-actions and a --config.' : '--config gives the views to rebuild.');
}

function createViewRow(name) {
  const cells = { version: el('td', { class: 'num', data: { field: 'version' } }), generation: el('td', { class: 'num', data: { field: 'generation' } }), tables: el('td', { data: { field: 'tables' } }) };
  const progress = el('progress', { data: { testid: 'rebuild-progress' }, max: 1, value: 0, hidden: true });
  const progressText = el('span', { class: 'hint', data: { field: 'rebuild' } });
  const rebuildButton = button('Rebuild', 'rebuild', () => rebuild(name));
  const tr = el('tr', { data: { testid: 'view-row', name } }, el('td', {}, name), cells.version, cells.generation, cells.tables, el('td', { class: 'rebuild' }, rebuildButton, progress, progressText));
  return { trs: [tr], tr, cells, progress, progressText, rebuildButton };
}

function updateViewRow(row, name, state) {
  const entry = state.entries.find((candidate) => candidate.name === name);
  const view = entry?.view;
  setText(row.cells.version, fmt(view?.version ?? null));
  setText(row.cells.generation, fmt(view?.generation ?? null));
  const tables = entry?.viewTables;
  setText(row.cells.tables, tables ? tables.map((t) => `${t.table}: ${t.capped ? '≥ ' : ''}${fmt(t.rows)} rows`).join(' · ') || 'no tables' : '—');
  const job = state.rebuilds.find((candidate) => candidate.view === name);
  const running = job?.state === 'running' || (!job && view?.rebuilding);
  if (row.rebuildButton) {
    row.rebuildButton.hidden = !state.rebuildable.includes(name);
    row.rebuildButton.disabled = running;
  }
  row.progress.hidden = !job;
  row.tr.dataset.rebuild = job?.state ?? (view?.rebuilding ? 'running' : 'none');
  if (job) {
    row.progress.max = Math.max(1, job.total);
    row.progress.value = Math.min(job.done, Math.max(1, job.total));
    const percent = job.total > 0 ? Math.floor((job.done / job.total) * 100) : 0;
    setText(row.progressText, job.state === 'running'
      ? ` ${fmt(job.done)} of ${fmt(job.total)} events (${percent}%)`
      : job.state === 'done'
        ? ` done ${time(job.finishedAt)}: ${fmt(job.result?.events ?? job.done)} events, generation ${fmt(job.result?.generation ?? null)}`
        : ` failed: ${job.error ?? 'unknown error'}`);
    row.progressText.classList.toggle('error-text', job.state === 'failed');
  } else setText(row.progressText, view?.rebuilding ? ' a rebuild runs (elsewhere)' : '');
}

async function rebuild(name) {
  const question =
    `Rebuild view "${name}"? It is built again from the log into new tables, then swapped in. The view keeps serving from its live tables meanwhile. ` +
    `The node running it is fenced once, at the swap, and goes on: a "leadership lost … ViewFencedError" warning in its log is expected.`;
  if (!confirm(question)) return;
  const result = await act('Rebuild', `api/views/${encodeURIComponent(name)}/rebuild`, {});
  if (result) notice(`Rebuild of ${name} started.`);
}
