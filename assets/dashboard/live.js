// GET /api/live (server-sent events `state`, `events`, `actions`), and what a new state updates.

import { $, setText, json, fmt, age, time } from './dom.js';
import { ui } from './ui.js';
import { markTokenMissing } from './api.js';
import { renderRunners } from './runners.js';
import { renderLetterSources, loadLetters, openLetter, follows, checkFollows } from './letters.js';
import { renderViews } from './views.js';
import { onEvents } from './log.js';
import { onActions } from './actions-log.js';

// ---- live connection -----------------------------------------------------------------------------

export function setLive(status, text) {
  const node = $('live');
  node.dataset.status = status;
  setText(node.querySelector('.live-text'), text);
}

export function connect() {
  if (ui.live) return;
  clearTimeout(ui.retryTimer);
  const source = new EventSource('api/live');
  ui.live = source;
  setLive('connecting', 'connecting');
  source.addEventListener('open', () => setLive('connected', 'live'));
  source.addEventListener('error', () => {
    if (source.readyState === EventSource.CLOSED) {
      // The server refused or is gone for good: EventSource gives up, so try again ourselves.
      source.close();
      if (ui.live === source) ui.live = null;
      setLive('reconnecting', 'disconnected, retrying');
      ui.retryTimer = setTimeout(connect, 3000);
    } else setLive('reconnecting', 'reconnecting');
  });
  source.addEventListener('state', (event) => onState(JSON.parse(event.data)));
  source.addEventListener('events', (event) => onEvents(JSON.parse(event.data)));
  source.addEventListener('actions', (event) => onActions(JSON.parse(event.data)));
}

export function disconnect() {
  clearTimeout(ui.retryTimer);
  ui.live?.close();
  ui.live = null;
}

// ---- state: header, runners, letters summary, views ----------------------------------------------

function onState(state) {
  const first = ui.state === null;
  const readOnlyChanged = state.readOnly !== ui.readOnly;
  ui.state = state;
  ui.readOnly = state.readOnly;
  renderHeader(state);
  if (readOnlyChanged && !first) {
    // Buttons are made for one mode only: build what holds them again.
    for (const row of ui.viewRows.values()) row.tr.remove();
    ui.viewRows.clear();
  }
  renderRunners(state);
  renderLetterSources(state);
  renderViews(state);
  const signature = json(state.deadLetters);
  if (first || readOnlyChanged || signature !== ui.letterSignature) {
    ui.letterSignature = signature;
    void loadLetters();
    if (ui.openLetter) void openLetter(ui.openLetter, { quiet: true });
    if (follows.size > 0) void checkFollows();
  }
}

function renderHeader(state) {
  document.body.classList.toggle('read-only', state.readOnly);
  document.title = `eskit · ${state.database}`;
  setText($('database'), state.database);
  $('database').title = state.database;
  setText($('backend'), state.backend);
  setText($('schema-version'), `v${state.schemaVersion}`);
  setText($('head'), fmt(state.head));
  setText($('sampled-at'), `${time(state.at)} (every ${age(state.intervalMs)})`);
  $('readonly-badge').hidden = !state.readOnly;
  $('actions-badge').hidden = state.readOnly;
  $('credentials').hidden = state.readOnly;
  markTokenMissing();
  const actionsHint = $('actions-hint');
  actionsHint.hidden = !state.readOnly;
  setText(actionsHint, state.readOnly ? 'Read-only: start with --allow-actions to retry, discard and redrive; views are rebuilt with a --config.' : '');

  const banner = $('state-error');
  banner.hidden = state.error === null;
  setText(banner, state.error === null ? '' : `The last sample failed: ${state.error}. Showing the one before.`);
}
