// Dead letters: the sources, the list, an open letter, the actions on them, and what came of a retry or redrive.

import { el, fill, setText, $, button, idLink, pre, json, clip, reveal, fmt, count, time, timeCell } from './dom.js';
import { ui } from './ui.js';
import { HttpError, getJson, post, notice, failed, act } from './api.js';
import { eventBlock, showStream } from './log.js';

// ---- dead letters --------------------------------------------------------------------------------

export function renderLetterSources(state) {
  // Built again only when the counts change: a button replaced under the pointer loses its click.
  const signature = json([state.deadLetters, state.readOnly]);
  if (signature === ui.sourcesSignature) return;
  ui.sourcesSignature = signature;
  const { total, bySource } = state.deadLetters;
  setText($('letters-total'), total > 0 ? `(${fmt(total)})` : '');
  const tbody = $('letter-sources').tBodies[0];
  fill(tbody,
    ...bySource.map(({ source, dead, redrive }) =>
      el('tr', { data: { testid: 'letter-source', source } },
        el('td', {}, idLink(source, 'filter', () => filterLetters(source))),
        el('td', { class: 'num' }, fmt(dead)),
        el('td', { class: 'num' }, fmt(redrive)),
        el('td', { class: 'buttons' },
          dead > 0 ? button('Redrive all', 'redrive-all', () => redriveAll(source)) : null,
          button('Discard all', 'discard-all', () => discardAll(source)),
        ),
      ),
    ),
  );
  if (bySource.length === 0) tbody.append(el('tr', {}, el('td', { colspan: 4, class: 'empty' }, 'No dead letters.')));
  const select = $('letter-filter');
  const sources = bySource.map((entry) => entry.source);
  if (ui.letterSource && !sources.includes(ui.letterSource)) sources.push(ui.letterSource);
  const current = [...select.options].slice(1).map((option) => option.value);
  if (json(current) !== json(sources)) {
    fill(select, el('option', { value: '' }, 'All sources'), ...sources.map((source) => el('option', { value: source }, source)));
    select.value = ui.letterSource;
  }
}

export function filterLetters(source) {
  ui.letterSource = source;
  $('letter-filter').value = source;
  void loadLetters();
}

export async function loadLetters(after) {
  const seq = ++ui.letterSeq;
  // Newest first: the letters an operator came for are the ones that just failed.
  const query = new URLSearchParams({ limit: '50', order: 'newest' });
  if (ui.letterSource) query.set('source', ui.letterSource);
  if (after) query.set('after', after);
  const tbody = $('letter-list').tBodies[0];
  const more = $('letters-more');
  try {
    const body = await getJson(`api/dead-letters?${query}`);
    if (seq !== ui.letterSeq) return;
    const rows = body.letters.map(letterRow);
    if (after) tbody.append(...rows);
    else fill(tbody, ...rows);
    if (tbody.children.length === 0) tbody.append(el('tr', {}, el('td', { colspan: 9, class: 'empty' }, ui.letterSource ? `No dead letters of ${ui.letterSource}.` : 'No dead letters.')));
    fill(more,
      body.next ? button(`Show more (${fmt(body.total - tbody.children.length)} left)`, 'more-letters', () => loadLetters(body.next), { act: false }) : null,
      el('span', { class: 'hint' }, `${fmt(body.total)} in all`),
    );
  } catch (error) {
    if (seq !== ui.letterSeq) return;
    fill(tbody, el('tr', {}, el('td', { colspan: 9, class: 'error-text' }, `Could not list the dead letters: ${error.message}`)));
  }
}

function letterRow(letter) {
  const last = letter.attempts[letter.attempts.length - 1];
  return el('tr', { class: letter.id === ui.openLetter ? 'selected' : undefined, data: { testid: 'letter-row', id: letter.id, source: letter.source, status: letter.status } },
    timeCell(letter.createdAt),
    el('td', { class: 'time', title: letter.updatedAt, data: { field: 'updated' } }, time(letter.updatedAt)),
    el('td', {}, letter.source),
    el('td', {}, letter.stage),
    el('td', {}, `${letter.eventType} #${fmt(letter.eventPosition)}`, el('br'), idLink(letter.streamId, 'stream', () => showStream(letter.streamId))),
    el('td', { class: 'num' }, fmt(letter.attempts.length)),
    el('td', { data: { field: 'status' } }, letter.status === 'redrive' ? 'being redriven' : 'dead'),
    el('td', { class: 'error-text', title: last ? clip(last.error, 2000) : undefined }, last ? clip(last.error, 120) : '—'),
    el('td', { class: 'buttons' },
      button('Open', 'open', () => openLetter(letter.id), { act: false }),
      letter.status === 'dead' ? button('Retry', 'retry', () => retryLetter(letter)) : null,
      button('Discard', 'discard', () => discardLetter(letter.id)),
    ),
  );
}

export async function openLetter(id, { quiet = false } = {}) {
  ui.openLetter = id;
  for (const row of document.querySelectorAll('[data-testid="letter-row"]')) row.classList.toggle('selected', row.dataset.id === id);
  const panel = $('letter-detail');
  panel.hidden = false;
  panel.dataset.id = id;
  const close = button('Close', 'close', () => {
    ui.openLetter = null;
    panel.hidden = true;
    panel.replaceChildren();
  }, { act: false, cls: 'close' });
  if (!quiet) {
    fill(panel, close, el('p', { class: 'hint' }, 'Loading…'));
    reveal(panel);
  }
  try {
    const { letter, event } = await getJson(`api/dead-letters/${encodeURIComponent(id)}`);
    if (ui.openLetter !== id) return;
    panel.dataset.status = letter.status;
    fill(panel,
      close,
      el('h3', {}, `Dead letter of ${letter.source}`),
      el('dl', { class: 'pairs' },
        pair('Id', letter.id), pair('Stage', letter.stage), pair('Status', letter.status === 'redrive' ? 'being redriven' : 'dead'),
        pair('Key', letter.key === '' ? '—' : letter.key), pair('Event', `${letter.eventType} #${fmt(letter.eventPosition)} (${letter.eventId})`),
        pair('Stream', idLink(letter.streamId, 'stream', () => showStream(letter.streamId))),
        pair('Stored', time(letter.createdAt)), pair('Updated', time(letter.updatedAt)),
      ),
      el('div', { class: 'buttons' },
        letter.status === 'dead' ? button('Retry', 'retry', () => retryLetter(letter)) : null,
        button('Discard', 'discard', () => discardLetter(letter.id)),
      ),
      el('h4', {}, 'Payload'),
      pre(letter.payload),
      el('h4', {}, 'Event'),
      event ? eventBlock(event) : el('p', { class: 'hint' }, 'The event is no longer in the log (deleted, archived or forgotten).'),
      el('h4', {}, `Attempts (${letter.attempts.length})`),
      el('ol', { class: 'attempts', data: { testid: 'letter-attempts' } },
        letter.attempts.map((attempt) => el('li', {}, el('span', { class: 'when' }, time(attempt.at)), el('pre', { class: 'error-text' }, attempt.error))),
      ),
    );
    if (!quiet) reveal(panel);
  } catch (error) {
    if (ui.openLetter !== id) return;
    panel.dataset.status = 'gone';
    const gone = error instanceof HttpError && error.status === 404;
    // A letter that is gone stays gone: no more refreshes of it.
    if (gone) ui.openLetter = null;
    fill(panel, close, el('p', { class: gone ? 'hint' : 'error-text' }, gone ? 'This letter is gone: its retry succeeded, or it was discarded.' : `Could not open the letter: ${error.message}`));
  }
}

function pair(label, value) {
  return el('div', {}, el('dt', {}, label), el('dd', {}, value));
}

// ---- what came of a retry or redrive -------------------------------------------------------------

/**
 * Letters marked for a retry are followed until a node ran them again: back dead with more attempts,
 * they "failed again"; gone, their redrive succeeded. Checked when the letter counts change and every
 * second (5 s after the first 30 s), for 10 minutes at most.
 */
export const follows = new Set();
let followTimer = null;
let checking = false;

function follow(item) {
  follows.add({ ...item, since: Date.now() });
  void checkFollows();
}

export async function checkFollows() {
  if (checking) return;
  checking = true;
  clearTimeout(followTimer);
  for (const item of [...follows]) {
    const done = await (item.source ? checkSource(item) : checkLetter(item)).catch(() => false);
    if (done || Date.now() - item.since > 600_000) follows.delete(item);
  }
  checking = false;
  const young = [...follows].some((item) => Date.now() - item.since < 30_000);
  if (follows.size > 0) followTimer = setTimeout(checkFollows, young ? 1000 : 5000);
}

const lastError = (letter) => clip(letter.attempts[letter.attempts.length - 1]?.error ?? '', 300);
const letters = (query) => getJson(`api/dead-letters?${new URLSearchParams({ limit: '200', ...query })}`);

async function checkLetter({ id, attempts }) {
  const letter = await getJson(`api/dead-letters/${encodeURIComponent(id)}`).then((body) => body.letter, (error) => {
    if (error instanceof HttpError && error.status === 404) return null;
    throw error;
  });
  if (letter === null) notice('Retried: the letter is gone (its redrive succeeded).');
  else if (letter.status === 'dead' && letter.attempts.length > attempts) notice(`Retry of ${id} failed again (attempt ${letter.attempts.length}): ${lastError(letter)}`, 'error');
  else return false;
  return true;
}

/** A "Redrive all": told once none of its letters is marked any more. */
async function checkSource({ source, followed }) {
  const marked = await letters({ source, status: 'redrive' });
  if (marked.next !== null || marked.letters.some((letter) => followed.has(letter.id))) return false;
  const dead = await letters({ source, status: 'dead' });
  const back = dead.letters.filter((letter) => followed.has(letter.id));
  const again = back.filter((letter) => letter.attempts.length > followed.get(letter.id));
  // Past the first 200 the list cannot tell gone from still there.
  const gone = dead.next === null ? followed.size - back.length : 0;
  const parts = [gone > 0 ? `${count(gone, 'letter')} gone (redriven)` : null, again[0] ? `${fmt(again.length)} failed again, e.g. ${again[0].id} (attempt ${again[0].attempts.length}): ${lastError(again[0])}` : null];
  if (gone > 0 || again[0]) notice(`Redrive of ${source}: ${parts.filter(Boolean).join('; ')}.`, again[0] ? 'error' : 'ok');
  return true;
}

// ---- actions on letters --------------------------------------------------------------------------

async function retryLetter(letter) {
  const { id } = letter;
  const result = await act('Retry', `api/dead-letters/${encodeURIComponent(id)}/retry`, {}, { forceable: true });
  if (result) {
    notice(`Marked ${count(result.marked, 'letter')} for retry. ${result.note ?? ''}`);
    follow({ id, attempts: letter.attempts.length });
  }
  void loadLetters();
  if (ui.openLetter === id) void openLetter(id, { quiet: true });
}

async function discardLetter(id) {
  if (!confirm('Discard this dead letter for good? Its event will not be handled again.')) return;
  const result = await act('Discard', `api/dead-letters/${encodeURIComponent(id)}/discard`, {});
  if (result) notice(`Discarded ${count(result.removed, 'letter')}.`);
  void loadLetters();
  if (ui.openLetter === id) void openLetter(id, { quiet: true });
}

/**
 * Asks, then acts on all of a source's letters (`status`: those) with the count the person confirmed:
 * when it changed meanwhile, the server answers 409 with the new one, and the person is asked again.
 */
async function onAll(what, source, status, question, path, forceable = false) {
  let reason = '';
  for (;;) {
    const listed = await letters(status ? { source, status } : { source, limit: '1' }).catch((error) => failed(what, error));
    if (!listed || !confirm(reason + question(listed.total))) return null;
    const body = { source, expected: listed.total };
    try {
      return { result: await post(path, body), listed };
    } catch (error) {
      const conflict = error instanceof HttpError && error.status === 409;
      if (conflict && /^".*" has \d+ dead letters?\b/.test(error.message)) {
        reason = `${error.message}. ${error.hint ?? ''}\n\n`;
        continue;
      }
      // Redrive: letters of a handler stage, which the server lets force.
      if (conflict && forceable && confirm(`${error.message}\n\nDo it anyway (force)?`)) {
        const result = await post(path, { ...body, force: true }).catch((again) => failed(what, again));
        return result ? { result, listed } : null;
      }
      failed(what, error);
      return null;
    }
  }
}

async function redriveAll(source) {
  const done = await onAll('Redrive all', source, 'dead', (n) => `Redrive all ${count(n, 'dead letter')} of "${source}"? The node running it handles them again.`, 'api/dead-letters/redrive', true);
  if (done) {
    notice(`Marked ${count(done.result.marked, 'letter')} of ${source} for redrive. ${done.result.note ?? ''}`);
    if (done.result.marked > 0) follow({ source, followed: new Map(done.listed.letters.map((letter) => [letter.id, letter.attempts.length])) });
  }
  void loadLetters();
}

async function discardAll(source) {
  const done = await onAll('Discard all', source, null, (n) => `Discard all ${count(n, 'dead letter')} of "${source}" for good? This cannot be undone.`, 'api/dead-letters/discard');
  if (done) notice(`Discarded ${count(done.result.removed, 'letter')} of ${source}.`);
  void loadLetters();
}
