// The eskit dashboard page: one ES module, no framework, no build step. It listens to GET /api/live
// (server-sent events `state`, `events`, `actions`) and asks the REST API when a person opens
// something. Every value that came from the database is put on the page as text (textContent,
// setAttribute, dataset), never as HTML: event data, stream ids and error texts are data, not markup.

const SVG = 'http://www.w3.org/2000/svg';
const TAIL_MAX = 200;
const ACTIONS_MAX = 100;
const TOKEN_KEY = 'eskit-dashboard-token';
const OPERATOR_KEY = 'eskit-dashboard-operator';

// ---- DOM helpers ---------------------------------------------------------------------------------

/** An element: props set as properties/attributes (never HTML), children appended as nodes or text. */
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = String(value);
    else if (key === 'data') for (const [name, v] of Object.entries(value)) node.dataset[name] = String(v);
    else if (key === 'on') for (const [name, listener] of Object.entries(value)) node.addEventListener(name, listener);
    else if (key.startsWith('on') || key === 'style') throw new Error(`el(): set ${key} through "on" or a class`);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  add(node, children);
  return node;
}

function add(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces a node's children (nested arrays flattened, null/false left out). */
function fill(node, ...children) {
  node.replaceChildren();
  add(node, children);
  return node;
}

function setText(node, text) {
  const value = String(text);
  if (node.textContent !== value) node.textContent = value;
}

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);

/** A `<button>`; null on a read-only dashboard when it is an action (so none is ever shown there). */
function button(label, action, onClick, { act = true, cls, title, data } = {}) {
  if (act && ui.readOnly) return null;
  return el('button', { type: 'button', class: cls, title, data: { action, ...data }, on: { click: onClick } }, label);
}

/** A link-looking button for an id (stream, correlation, causation). */
function idLink(text, action, onClick) {
  if (text === undefined || text === null || text === '') return '—';
  return el('button', { type: 'button', class: 'link', title: String(text), data: { action, value: text }, on: { click: onClick } }, String(text));
}

function pre(value) {
  return el('pre', { class: 'json' }, json(value, 2));
}

function json(value, indent) {
  try {
    return JSON.stringify(value, null, indent) ?? String(value);
  } catch {
    return String(value);
  }
}

function clip(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

// ---- formatting ----------------------------------------------------------------------------------

const number = new Intl.NumberFormat('en-US');
const fmt = (n) => (n === null || n === undefined ? '—' : number.format(n));
const count = (n, one, many = `${one}s`) => `${fmt(n)} ${n === 1 ? one : many}`;

function age(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = s / 60;
  if (m < 60) return `${Math.floor(m)} min ${Math.floor(s % 60)} s`;
  const h = m / 60;
  return h < 48 ? `${Math.floor(h)} h ${Math.floor(m % 60)} min` : `${Math.floor(h / 24)} d`;
}

function rate(r) {
  if (r === null || r === undefined) return '—';
  return r === 0 ? '0' : r < 10 ? r.toFixed(1) : number.format(Math.round(r));
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const pad = (n) => String(n).padStart(2, '0');

/** Local, 24-hour: "23:59:39" today, "Dec 5 23:59:39" before ("Dec 5 2025 23:59:39" another year). */
function time(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const now = new Date();
  const clock = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  if (date.toDateString() === now.toDateString()) return clock;
  return `${MONTHS[date.getMonth()]} ${date.getDate()}${date.getFullYear() === now.getFullYear() ? '' : ` ${date.getFullYear()}`} ${clock}`;
}

const timeCell = (iso) => el('td', { class: 'time', title: iso || undefined }, time(iso));

/** As `eskit status`: "-" for none (0: never leased). */
const tokenText = (n) => (n === null || n === undefined || n === 0 ? '-' : fmt(n));

// The words of `eskit status` (src/cli/commands/status.ts).
const STATE_TEXT = { leading: 'leading', 'no-leader': 'no leader', unelected: 'no election', unknown: 'unknown' };
const STATE_TITLE = {
  leading: 'A node holds its lock right now (LEADER says which)',
  'no-leader': 'Leader election is on, but no node holds the lock (stopped, or failing over)',
  unelected: 'No lock, and a live node says it runs without leader election',
  unknown: 'No lock row and no live status row: the database cannot tell whether a node runs it',
};
const ROLE_TEXT = { leader: 'leader', unelected: 'no election', standby: 'standby', 'denied-standby': 'denied standby', none: '—' };

const isLive = (node) => !node.stale && (node.state === 'running' || node.state === 'stopping');

// ---- page state ----------------------------------------------------------------------------------

const ui = {
  state: null,
  readOnly: true,
  expanded: new Set(),
  runnerRows: new Map(),
  viewRows: new Map(),
  tail: [],
  held: [],
  paused: false,
  lastPosition: -1,
  actions: [],
  actionKeys: new Set(),
  letterSource: '',
  letterSignature: null,
  sourcesSignature: null,
  openLetter: null,
  letterSeq: 0,
  viewerSeq: 0,
  live: null,
  retryTimer: null,
};

// ---- token and operator --------------------------------------------------------------------------

/**
 * `#token=` from the address into sessionStorage and the token field, out of the address bar and the
 * history: at load, on `hashchange` (a link opened in a tab that shows the page: no reload), and
 * before each action. True when it took one.
 */
function takeTokenFromUrl() {
  if (!location.hash.startsWith('#')) return false;
  const value = new URLSearchParams(location.hash.slice(1)).get('token');
  if (value === null) return false;
  const taken = value.trim();
  if (taken !== '') sessionStorage.setItem(TOKEN_KEY, taken);
  history.replaceState(null, '', location.pathname + location.search);
  $('token-input').value = token();
  markTokenMissing();
  return taken !== '';
}

const token = () => sessionStorage.getItem(TOKEN_KEY) ?? '';
/** The name for X-Eskit-Operator: header values must be Latin-1, the server keeps 64 characters. */
const operator = () => (localStorage.getItem(OPERATOR_KEY) ?? '').replace(/[^\x20-\x7e\u00a0-\u00ff]/g, '').trim().slice(0, 64);

function setupCredentials() {
  const form = $('credentials');
  const tokenInput = $('token-input');
  const operatorInput = $('operator-input');
  tokenInput.value = token();
  operatorInput.value = localStorage.getItem(OPERATOR_KEY) ?? '';
  form.addEventListener('submit', (event) => event.preventDefault());
  tokenInput.addEventListener('change', () => {
    const value = tokenInput.value.trim();
    if (value === '') sessionStorage.removeItem(TOKEN_KEY);
    else sessionStorage.setItem(TOKEN_KEY, value);
    markTokenMissing();
  });
  operatorInput.addEventListener('change', () => localStorage.setItem(OPERATOR_KEY, operatorInput.value));
}

function markTokenMissing() {
  $('token-input').classList.toggle('missing', !ui.readOnly && token() === '');
}

// ---- HTTP ----------------------------------------------------------------------------------------

class HttpError extends Error {
  constructor(status, message, hint) {
    super(message);
    this.status = status;
    this.hint = hint;
  }
}

async function reply(res) {
  const body = await res.json().catch(() => null);
  if (!res.ok) throw new HttpError(res.status, body?.error ?? `${res.status} ${res.statusText}`, body?.hint);
  return body;
}

const getJson = async (path) => reply(await fetch(path, { headers: { accept: 'application/json' } }));

async function post(path, body) {
  takeTokenFromUrl();
  const headers = { 'Content-Type': 'application/json', Authorization: `Bearer ${token()}` };
  const name = operator();
  if (name !== '') headers['X-Eskit-Operator'] = name;
  return reply(await fetch(path, { method: 'POST', headers, body: JSON.stringify(body ?? {}) }));
}

let noticeTimer = null;
function notice(text, kind = 'ok') {
  const node = $('notice');
  node.textContent = text;
  node.dataset.kind = kind;
  node.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => (node.hidden = true), kind === 'error' ? 15000 : 6000);
}

function failed(what, error) {
  if (error instanceof HttpError && error.status === 401) {
    notice(`${what}: the token was refused. Paste the token that eskit dashboard printed.`, 'error');
    $('token-input').focus();
    return;
  }
  const hint = error instanceof HttpError && error.hint ? ` ${error.hint}` : '';
  notice(`${what}: ${error instanceof Error ? error.message : String(error)}${hint}`, 'error');
}

/** Runs an action; a 409 the server lets force (the handler stage) is offered with the server's words. */
async function act(what, path, body, { forceable = false } = {}) {
  try {
    return await post(path, body);
  } catch (error) {
    if (forceable && error instanceof HttpError && error.status === 409 && confirm(`${error.message}\n\nDo it anyway (force)?`)) {
      try {
        return await post(path, { ...body, force: true });
      } catch (again) {
        failed(what, again);
        return null;
      }
    }
    failed(what, error);
    return null;
  }
}

// ---- live connection -----------------------------------------------------------------------------

function setLive(status, text) {
  const node = $('live');
  node.dataset.status = status;
  setText(node.querySelector('.live-text'), text);
}

function connect() {
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

function disconnect() {
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

// Dead letters next to the lag (the columns an operator needs most come first; the rest scroll).
const RUNNER_FIELDS = ['kind', 'state', 'leader', 'token', 'lag', 'dead', 'position', 'head', 'rate', 'work', 'last'];
const NUMERIC = new Set(['token', 'position', 'head', 'lag', 'dead']);

/** Puts the rows of `keys` in `tbody` in that order (creating, updating, removing), keeping each row's nodes. */
function keyedRows(tbody, rows, keys, create, update) {
  const wanted = new Set(keys);
  for (const [key, row] of rows) {
    if (wanted.has(key)) continue;
    for (const tr of row.trs) tr.remove();
    rows.delete(key);
  }
  let index = 0;
  for (const key of keys) {
    let row = rows.get(key);
    if (!row) rows.set(key, (row = create(key)));
    update(row, key);
    for (const tr of row.trs) {
      if (tbody.children[index] !== tr) tbody.insertBefore(tr, tbody.children[index] ?? null);
      index++;
    }
  }
}

function createRunnerRow(name) {
  const toggle = el('button', { type: 'button', class: 'toggle', 'aria-expanded': 'false', title: 'Nodes and partitions', data: { action: 'expand' } }, '▸');
  const cells = {};
  for (const field of RUNNER_FIELDS) cells[field] = el('td', { class: NUMERIC.has(field) ? 'num' : undefined, data: { field } });
  const rateText = el('span', { class: 'rate-value' });
  const spark = document.createElementNS(SVG, 'svg');
  spark.setAttribute('class', 'spark');
  spark.setAttribute('viewBox', '0 0 90 22');
  spark.setAttribute('aria-hidden', 'true');
  cells.rate.append(rateText, spark);
  const leaderText = el('span', { data: { field: 'leader' } });
  const nodesText = el('span', { class: 'hint', data: { field: 'nodes' } });
  cells.leader = el('td', { class: 'leader' }, leaderText, nodesText);
  // The name opens the row too (the ▸'s click comes here).
  const nameCell = el('td', { class: 'name', title: 'Nodes and partitions', data: { field: 'name' } }, toggle, el('span', {}, name));
  const tr = el('tr', { data: { testid: 'runner-row', name } }, nameCell, RUNNER_FIELDS.map((field) => cells[field]));
  const detailCell = el('td', { colspan: RUNNER_FIELDS.length + 1 });
  const detail = el('tr', { class: 'detail', data: { testid: 'runner-detail', name }, hidden: true }, detailCell);
  nameCell.addEventListener('click', (event) => {
    // Not when the name was selected (to copy it).
    if (event.target !== toggle && window.getSelection()?.toString()) return;
    if (ui.expanded.has(name)) ui.expanded.delete(name);
    else ui.expanded.add(name);
    const entry = ui.state?.entries.find((candidate) => candidate.name === name);
    if (entry) updateRunnerRow(row, entry);
  });
  const row = { trs: [tr, detail], tr, detail, detailCell, toggle, cells, leaderText, nodesText, rateText, spark };
  return row;
}

/** "leader silent 4.1 s": the lock's holder has no live status row (stale, stopped, none), its lease not run out yet. */
function leaderSilence(entry) {
  const holder = entry.leader?.holder;
  if (entry.state !== 'leading' || !holder || entry.nodes.length === 0) return null;
  const rows = entry.nodes.filter((node) => node.nodeId === holder);
  if (rows.some(isLive)) return null;
  const heard = rows.length === 0 ? null : Math.min(...rows.map((node) => node.heartbeatAgeMs));
  return heard === null ? 'leader silent (no status row)' : `leader silent ${age(heard)}`;
}

function updateRunnerRow(row, entry) {
  const { cells } = row;
  const live = entry.nodes.filter(isLive);
  setText(cells.kind, entry.kind === 'unknown' ? '—' : entry.kind);
  const silence = leaderSilence(entry);
  const state = STATE_TEXT[entry.state] ?? entry.state;
  setText(cells.state, silence ? `${state} · ${silence}` : state);
  cells.state.dataset.state = entry.state;
  cells.state.dataset.level = silence ? 'warn' : 'ok';
  cells.state.title = silence
    ? `Its lock's holder has no heartbeat (froze or died); its lease has not run out yet${entry.leader.expiresAt ? ` (until ${time(entry.leader.expiresAt)})` : ''}`
    : (STATE_TITLE[entry.state] ?? '');
  const holder = entry.leader?.holder ?? null;
  const others = live.filter((node) => node.nodeId !== holder);
  setText(row.leaderText, holder ?? (entry.state === 'leading' ? 'unknown holder' : live.length > 0 ? '' : '—'));
  setText(row.nodesText, holder || entry.state === 'leading' ? (others.length > 0 ? ` +${others.length} standby` : '') : live.length > 0 ? count(live.length, 'live node') : '');
  cells.leader.title = live.map((node) => `${node.nodeId}: ${ROLE_TEXT[node.role] ?? node.role}`).join('\n');
  setText(cells.token, tokenText(entry.fencingToken?.lease ?? entry.fencingToken?.checkpoint ?? null));
  setText(cells.position, fmt(entry.position));
  setText(cells.head, fmt(entry.head));
  setText(cells.lag, fmt(entry.lag));
  cells.lag.dataset.level = entry.lag === null ? 'none' : entry.lag === 0 ? 'ok' : entry.lag < 1000 ? 'behind' : 'far';
  setText(row.rateText, rate(entry.rate));
  sparkline(row.spark, entry.history ?? []);
  setText(cells.work, workText(entry.work));
  cells.work.title = workTitle(entry.work);
  setText(cells.last, age(entry.lastHandledAgeMs));
  const letters = entry.deadLetters ?? { dead: 0, redrive: 0 };
  setText(cells.dead, letters.redrive > 0 ? `${fmt(letters.dead)} (+${fmt(letters.redrive)} redriving)` : fmt(letters.dead));
  cells.dead.dataset.level = letters.dead > 0 ? 'bad' : 'ok';
  row.tr.dataset.nodes = String(live.length);
  row.tr.classList.toggle('superseded', entry.superseded === true);
  const expanded = ui.expanded.has(entry.name);
  row.toggle.setAttribute('aria-expanded', String(expanded));
  row.toggle.textContent = expanded ? '▾' : '▸';
  row.detail.hidden = !expanded;
  if (expanded) fill(row.detailCell, el('div', { class: 'detail-body' }, runnerDetail(entry)));
}

const WORK = ['pending', 'running', 'hung', 'retrying', 'unrecorded'];

/** "2 pending · 1 retrying", "idle": one line; workTitle has every count. */
function workText(work) {
  if (!work) return '—';
  const parts = WORK.filter((what) => work[what] > 0).map((what) => `${fmt(work[what])} ${what}`);
  return parts.length === 0 ? 'idle' : parts.join(' · ');
}

function workTitle(work) {
  if (!work) return 'No to-do list: only automations keep one';
  const parts = WORK.filter((what) => work[what] !== undefined).map((what) => `${fmt(work[what])} ${what}`);
  return `${parts.join(', ')}${work.oldestPendingMs === null ? '' : `; the oldest pending one waits for ${age(work.oldestPendingMs)}`}`;
}

function sparkline(svg, values) {
  const width = 90;
  const height = 22;
  if (values.length < 2) {
    svg.replaceChildren();
    return;
  }
  const max = Math.max(...values, 0.000001);
  const step = width / (values.length - 1);
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 1 - (Math.max(0, v) / max) * (height - 2)).toFixed(1)}`);
  const area = document.createElementNS(SVG, 'polygon');
  area.setAttribute('class', 'spark-area');
  area.setAttribute('points', `0,${height} ${points.join(' ')} ${width},${height}`);
  const line = document.createElementNS(SVG, 'polyline');
  line.setAttribute('class', 'spark-line');
  line.setAttribute('points', points.join(' '));
  fill(svg, area, line);
}

function renderRunners(state) {
  const tbody = $('runners').tBodies[0];
  keyedRows(tbody, ui.runnerRows, state.entries.map((entry) => entry.name), createRunnerRow, (row, name) =>
    updateRunnerRow(row, state.entries.find((entry) => entry.name === name)),
  );
  $('runners-empty').hidden = state.entries.length > 0;
  $('runners').hidden = state.entries.length === 0;
}

const NODE_COLUMNS = [
  ['Node'], ['Role'], ['State'], ['Heartbeat'], ['Token'], ['Checkpoint'],
  ['Handled', 'Events this node handled since it started'],
  ['Last event', 'The last event it handled, as its status row says'],
  ['Work'], ['Leads'], ['Last error'],
];

/** A node's role: "was" it when stopped or silent, or a "leader" whose lock another holds (killed, not stale yet). */
function roleText(node, entry) {
  const role = ROLE_TEXT[node.role] ?? node.role;
  return node.role !== 'none' && (!isLive(node) || deposed(node, entry)) ? `was ${role}` : role;
}

const deposed = (node, entry) => node.role === 'leader' && !entry.partitions && !!entry.leader?.holder && entry.leader.holder !== node.nodeId;

/** Live, but a heartbeat late (stale comes after 3 intervals). */
const overdue = (node) => isLive(node) && node.heartbeatAgeMs > 1.5 * node.heartbeatMs;

function nodeStateText(node) {
  return node.stale ? `no heartbeat for ${age(node.heartbeatAgeMs)}` : node.state;
}

function runnerDetail(entry) {
  const parts = [];
  if (entry.superseded) parts.push(el('p', { class: 'warn' }, 'Superseded: another layout of this runner saved its checkpoints later; nothing runs these any more.'));
  if (entry.leader) {
    // The pid is the database session's (PostgreSQL's backend process), not the application's.
    const where = [entry.leader.applicationName, entry.leader.clientAddr, entry.leader.pid === null ? null : `backend pid ${entry.leader.pid}`].filter(Boolean).join(', ');
    parts.push(el('p', {}, `Leader ${entry.leader.holder ?? 'unknown'}${where ? ` (${where})` : ''}`, entry.leader.acquiredAt ? `, since ${time(entry.leader.acquiredAt)}` : '', entry.leader.expiresAt ? `, lease until ${time(entry.leader.expiresAt)}` : ''));
  }
  const live = entry.nodes.filter(isLive).length;
  parts.push(el('h4', {}, `Nodes (${entry.nodes.length}${live === entry.nodes.length ? '' : `, ${live} live`})`));
  if (entry.nodes.length === 0) parts.push(el('p', { class: 'empty' }, 'No status rows: its nodes publish none (no backend), or none ran yet.'));
  else {
    parts.push(
      el('table', { class: 'grid compact', data: { testid: 'node-table' } },
        el('thead', {}, el('tr', {}, NODE_COLUMNS.map(([h, title]) => el('th', { title }, h)))),
        el('tbody', {}, entry.nodes.map((node) =>
          el('tr', { class: isLive(node) && !deposed(node, entry) ? undefined : 'stale', data: { testid: 'node-row', node: node.nodeId, role: node.role, stale: node.stale } },
            el('td', {}, node.nodeId),
            el('td', { data: { field: 'role', role: node.role }, title: deposed(node, entry) ? `Its status row says leader, but ${entry.leader.holder} holds the lock` : undefined }, roleText(node, entry)),
            el('td', { class: node.stale ? 'warn' : undefined, title: node.stale ? 'No heartbeat for 3 intervals: the process froze, died or lost the database' : undefined, data: { field: 'node-state' } }, nodeStateText(node)),
            el('td', { class: overdue(node) ? 'time warn' : 'time', title: `Every ${age(node.heartbeatMs)}` }, `${age(node.heartbeatAgeMs)} ago`),
            el('td', { class: 'num' }, tokenText(node.fencingToken)),
            el('td', { class: 'num' }, fmt(node.position)),
            el('td', { class: 'num' }, fmt(node.handled)),
            el('td', {}, node.lastEvent ? `#${fmt(node.lastEvent.position)}, ${age(node.lastEvent.ageMs)} ago` : '—'),
            el('td', { title: node.work ? workTitle(node.work) : undefined }, workText(node.work)),
            el('td', {}, node.leads ? node.leads.join(', ') || 'none' : '—'),
            el('td', { class: node.lastError ? 'error-text' : undefined, title: node.lastError ? clip(node.lastError, 2000) : undefined }, node.lastError ? clip(node.lastError, 300) : '—'),
          ),
        )),
      ),
    );
  }
  const partitions = entry.partitions;
  if (partitions) {
    const owners = partitions.owners.map((owner) => `${owner.nodeId}: ${owner.partitions.join(', ')}`).join('; ');
    parts.push(el('h4', {}, `Partitions (${partitions.count})`));
    parts.push(el('p', {}, owners ? `Owners: ${owners}.` : 'No owners.', partitions.unowned.length ? ` Unowned: ${partitions.unowned.join(', ')}.` : ''));
    parts.push(
      el('table', { class: 'grid compact', data: { testid: 'partition-table' } },
        el('thead', {}, el('tr', {}, ['Partition', 'Owner', 'State', 'Token', 'Checkpoint', 'Lag', 'Events/s', 'Dead letters'].map((h) => el('th', {}, h)))),
        el('tbody', {}, partitions.entries.map((p) =>
          el('tr', { data: { testid: 'partition-row', partition: p.partition } },
            el('td', { class: 'num' }, p.partition),
            el('td', { data: { field: 'owner' } }, p.owner ?? '—'),
            el('td', { title: STATE_TITLE[p.state] }, STATE_TEXT[p.state] ?? p.state),
            el('td', { class: 'num' }, tokenText(p.fencingToken?.lease ?? null)),
            el('td', { class: 'num' }, fmt(p.position)),
            el('td', { class: 'num', data: { field: 'lag' } }, fmt(p.lag)),
            el('td', { class: 'num' }, rate(p.rate)),
            el('td', { class: 'num' }, fmt(p.deadLetters?.dead ?? 0)),
          ),
        )),
      ),
    );
  }
  return parts;
}

// ---- dead letters --------------------------------------------------------------------------------

function renderLetterSources(state) {
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

function filterLetters(source) {
  ui.letterSource = source;
  $('letter-filter').value = source;
  void loadLetters();
}

async function loadLetters(after) {
  const seq = ++ui.letterSeq;
  const query = new URLSearchParams({ limit: '50' });
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

async function openLetter(id, { quiet = false } = {}) {
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
const follows = new Set();
let followTimer = null;
let checking = false;

function follow(item) {
  follows.add({ ...item, since: Date.now() });
  void checkFollows();
}

async function checkFollows() {
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

function reveal(node) {
  node.scrollIntoView({ block: 'start', behavior: window.matchMedia('(prefers-reduced-motion: reduce)').matches ? 'auto' : 'smooth' });
}

// ---- the event log -------------------------------------------------------------------------------

function onEvents(events) {
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

function togglePause() {
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

function eventBlock(event) {
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

async function showStream(streamId, from = 1) {
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

// ---- views ---------------------------------------------------------------------------------------

function renderViews(state) {
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

// ---- action log ----------------------------------------------------------------------------------

const actionKey = (entry) => json([entry.at, entry.action, entry.target, entry.outcome, entry.who, entry.detail]);

function onActions(entries) {
  const fresh = entries.filter((entry) => {
    const key = actionKey(entry);
    if (ui.actionKeys.has(key)) return false;
    ui.actionKeys.add(key);
    return true;
  });
  if (fresh.length === 0) return;
  ui.actions = [...ui.actions, ...fresh].sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : 0));
  // Refused attempts go first (any web page can send them by the thousand), as on the server.
  while (ui.actions.length > ACTIONS_MAX) {
    const refused = ui.actions.findLastIndex((entry) => entry.outcome === 'refused');
    ui.actions.splice(refused >= 0 ? refused : ui.actions.length - 1, 1);
  }
  ui.actionKeys = new Set(ui.actions.map(actionKey));
  fill(
    $('action-log').tBodies[0],
    ...ui.actions.map((entry) =>
      el('tr', { data: { testid: 'action-row', outcome: entry.outcome, action: entry.action } },
        timeCell(entry.at),
        el('td', {}, entry.who.operator ? `${entry.who.operator} (${entry.who.address})` : entry.who.address),
        el('td', {}, entry.action),
        el('td', {}, entry.target),
        el('td', { data: { field: 'outcome', outcome: entry.outcome } }, entry.outcome),
        el('td', { class: entry.outcome === 'ok' ? undefined : 'error-text' }, clip(entry.detail ?? '', 300)),
      ),
    ),
  );
  $('actions-empty').hidden = ui.actions.length > 0;
  $('action-log').hidden = ui.actions.length === 0;
}

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
