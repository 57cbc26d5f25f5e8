// The action log: who retried, discarded, redrove or rebuilt what, and how it went (refused attempts too).

import { el, fill, $, json, clip, timeCell } from './dom.js';
import { ui } from './ui.js';

const ACTIONS_MAX = 100;

// ---- action log ----------------------------------------------------------------------------------

const actionKey = (entry) => json([entry.at, entry.action, entry.target, entry.outcome, entry.who, entry.detail]);

export function onActions(entries) {
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
