// The runner table: a row per subscription, automation and view; an open row's nodes and partitions.

import { el, fill, setText, $, clip, keyedRows, fmt, count, age, rate, time, tokenText } from './dom.js';
import { ui } from './ui.js';

const SVG = 'http://www.w3.org/2000/svg';

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

// Dead letters next to the lag (the columns an operator needs most come first; the rest scroll).
const RUNNER_FIELDS = ['kind', 'state', 'leader', 'token', 'lag', 'dead', 'position', 'head', 'rate', 'work', 'last'];
const NUMERIC = new Set(['token', 'position', 'head', 'lag', 'dead']);

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

export function renderRunners(state) {
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
