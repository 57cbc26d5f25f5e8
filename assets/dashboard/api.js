// The REST API: reads, and actions sent with the token (#token= link, sessionStorage) and the operator's name;
// the notice that tells how they went.

import { $ } from './dom.js';
import { ui } from './ui.js';

const TOKEN_KEY = 'eskit-dashboard-token';
const OPERATOR_KEY = 'eskit-dashboard-operator';

// ---- token and operator --------------------------------------------------------------------------

/**
 * `#token=` from the address into sessionStorage and the token field, out of the address bar and the
 * history: at load, on `hashchange` (a link opened in a tab that shows the page: no reload), and
 * before each action. True when it took one.
 */
export function takeTokenFromUrl() {
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

export function setupCredentials() {
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

export function markTokenMissing() {
  $('token-input').classList.toggle('missing', !ui.readOnly && token() === '');
}

// ---- HTTP ----------------------------------------------------------------------------------------

export class HttpError extends Error {
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

export const getJson = async (path) => reply(await fetch(path, { headers: { accept: 'application/json' } }));

export async function post(path, body) {
  takeTokenFromUrl();
  const headers = { 'Content-Type': 'application/json', Authorization: `Bearer ${token()}` };
  const name = operator();
  if (name !== '') headers['X-Eskit-Operator'] = name;
  return reply(await fetch(path, { method: 'POST', headers, body: JSON.stringify(body ?? {}) }));
}

let noticeTimer = null;
export function notice(text, kind = 'ok') {
  const node = $('notice');
  node.textContent = text;
  node.dataset.kind = kind;
  node.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => (node.hidden = true), kind === 'error' ? 15000 : 6000);
}

export function failed(what, error) {
  if (error instanceof HttpError && error.status === 401) {
    notice(`${what}: the token was refused. Paste the token that eskit dashboard printed.`, 'error');
    $('token-input').focus();
    return;
  }
  const hint = error instanceof HttpError && error.hint ? ` ${error.hint}` : '';
  notice(`${what}: ${error instanceof Error ? error.message : String(error)}${hint}`, 'error');
}

/** Runs an action; a 409 the server lets force (the handler stage) is offered with the server's words. */
export async function act(what, path, body, { forceable = false } = {}) {
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
