// The eskit dashboard page: ES modules, no framework, no build step; this one wires them. It listens to
// GET /api/live (server-sent events `state`, `events`, `actions`) and asks the REST API when a person opens
// something. Every value that came from the database is put on the page as text (textContent,
// setAttribute, dataset), never as HTML: event data, stream ids and error texts are data, not markup.
//
// dom.js (elements, formatting) · ui.js (page state) · api.js (REST, token, notice) · live.js (/api/live,
// a new state) · runners.js · letters.js (dead letters) · log.js (event log, streams, search) · views.js ·
// actions-log.js

import { $ } from './dom.js';
import { setupCredentials, takeTokenFromUrl, notice } from './api.js';
import { connect, disconnect, setLive } from './live.js';
import { togglePause } from './log.js';
import { filterLetters } from './letters.js';

// ---- start ---------------------------------------------------------------------------------------

setupCredentials();
takeTokenFromUrl();
$('notice').addEventListener('click', (event) => (event.currentTarget.hidden = true));
window.addEventListener('hashchange', () => takeTokenFromUrl() && notice('Took the token from the link.'));
document.querySelector('[data-action="pause"]').addEventListener('click', togglePause);
$('letter-filter').addEventListener('change', (event) => filterLetters(event.target.value));
// A hidden tab holds no connection; it catches up (a fresh state, the last events) when shown.
document.addEventListener('visibilitychange', () => (document.hidden ? (disconnect(), setLive('paused', 'paused (tab hidden)')) : connect()));
connect();
