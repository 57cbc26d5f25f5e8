// The event log's tail, and the viewer of a stream or a search by correlation or causation id.

import { el, fill, $, button, idLink, pre, json, clip, reveal, fmt, count, time, timeCell } from './dom.js';
import { ui } from './ui.js';
import { getJson } from './api.js';

const TAIL_MAX = 200;

// ---- the event log -------------------------------------------------------------------------------

export function onEvents(events) {
  const fresh = events.filter((event) => event.position > ui.lastPosition);
  if (fresh.length === 0) return;
  ui.lastPosition = fresh[fresh.length - 1].position;
  if (ui.paused) {
    ui.held.push(...fresh);
    if (ui.held.length > TAIL_MAX) ui.held.splice(0, ui.held.length - TAIL_MAX);
    updatePauseButton();
    return;
  }
  showTail(fresh);
}

function showTail(events) {
  const tbody = $('event-log').tBodies[0];
  const rows = events.slice(-TAIL_MAX).reverse().map(tailRow);
  tbody.prepend(...rows);
  while (tbody.children.length > TAIL_MAX) tbody.lastElementChild.remove();
}

function tailRow(event) {
  const meta = event.metadata ?? {};
  const data = json(event.data);
  return el('tr', { data: { testid: 'event-row', position: event.position } },
    el('td', { class: 'num' }, fmt(event.position)),
    timeCell(event.recordedAt),
    el('td', { data: { field: 'type' } }, event.type),
    el('td', {}, idLink(event.streamId, 'stream', () => showStream(event.streamId)), el('span', { class: 'hint' }, ` v${event.streamVersion}`)),
    el('td', {}, idLink(meta.correlationId, 'correlation', () => search('correlation', meta.correlationId))),
    el('td', {}, idLink(meta.causationId, 'causation', () => search('causation', meta.causationId))),
    el('td', { class: 'data', title: clip(data, 2000), data: { field: 'data' } }, clip(data, 160)),
  );
}

export function togglePause() {
  ui.paused = !ui.paused;
  if (!ui.paused && ui.held.length > 0) {
    showTail(ui.held);
    ui.held = [];
  }
  updatePauseButton();
}

function updatePauseButton() {
  const node = document.querySelector('[data-action="pause"]');
  node.setAttribute('aria-pressed', String(ui.paused));
  node.textContent = ui.paused ? `Resume${ui.held.length ? ` (${fmt(ui.held.length)} new)` : ''}` : 'Pause';
}

export function eventBlock(event) {
  const meta = event.metadata ?? {};
  return el('div', { class: 'event', data: { testid: 'event', position: event.position } },
    el('div', { class: 'event-head' },
      el('strong', {}, event.type),
      ` #${fmt(event.position)} · `,
      idLink(event.streamId, 'stream', () => showStream(event.streamId)),
      ` v${event.streamVersion} · ${time(event.recordedAt)} · `,
      el('span', { class: 'hint' }, event.id),
    ),
    meta.correlationId || meta.causationId
      ? el('div', { class: 'event-links' },
          meta.correlationId ? ['correlation ', idLink(meta.correlationId, 'correlation', () => search('correlation', meta.correlationId))] : null,
          meta.causationId ? [' causation ', idLink(meta.causationId, 'causation', () => search('causation', meta.causationId))] : null,
          ' ',
          idLink('effects of this event', 'caused', () => search('causation', event.id)),
        )
      : el('div', { class: 'event-links' }, idLink('effects of this event', 'caused', () => search('causation', event.id))),
    el('div', { class: 'event-body' }, el('div', {}, el('h5', {}, 'Data'), pre(event.data)), el('div', {}, el('h5', {}, 'Metadata'), pre(meta))),
  );
}

function viewer(title, ...content) {
  const panel = $('event-viewer');
  panel.hidden = false;
  const close = button('Close', 'close', () => {
    ui.viewerSeq++;
    panel.hidden = true;
    panel.replaceChildren();
  }, { act: false, cls: 'close' });
  fill(panel, close, el('h3', {}, title), ...content);
  // It opens far below the row clicked: brought up (with "Loading…", and again once the page is long enough).
  reveal(panel);
  return panel;
}

export async function showStream(streamId, from = 1) {
  const seq = ++ui.viewerSeq;
  const panel = viewer(`Stream ${streamId}`, el('p', { class: 'hint' }, 'Loading…'));
  panel.dataset.view = 'stream';
  panel.dataset.stream = streamId;
  try {
    const body = await getJson(`api/streams/${encodeURIComponent(streamId)}?from=${from}&limit=100`);
    if (seq !== ui.viewerSeq) return;
    const last = body.events[body.events.length - 1];
    viewer(
      `Stream ${body.streamId}`,
      el('p', { class: 'hint' }, `Version ${fmt(body.version)}${body.archived ? ' · archived (read from the archive)' : ''} · ${count(body.events.length, 'event')} from version ${fmt(from)}`),
      body.events.length === 0 ? el('p', { class: 'empty' }, 'No events.') : body.events.map(eventBlock),
      last && body.events.length === 100 ? button('Next page', 'next-page', () => showStream(streamId, last.streamVersion + 1), { act: false }) : null,
    ).dataset.view = 'stream';
  } catch (error) {
    if (seq !== ui.viewerSeq) return;
    viewer(`Stream ${streamId}`, el('p', { class: 'error-text' }, error.message));
  }
}

async function search(kind, id) {
  const seq = ++ui.viewerSeq;
  const title = `Events whose ${kind} id is ${id}`;
  viewer(title, el('p', { class: 'hint' }, 'Searching…')).dataset.view = 'search';
  try {
    const body = await getJson(`api/search?${new URLSearchParams({ [kind]: id })}`);
    if (seq !== ui.viewerSeq) return;
    viewer(
      title,
      el('p', { class: 'hint' }, `${body.events.length} found among the last ${fmt(body.scanned)} events of the log (from position ${fmt(body.from)}); older events are not searched.`),
      body.events.length === 0 ? el('p', { class: 'empty' }, 'None.') : body.events.map(eventBlock),
    ).dataset.view = 'search';
  } catch (error) {
    if (seq !== ui.viewerSeq) return;
    viewer(title, el('p', { class: 'error-text' }, error.message));
  }
}
