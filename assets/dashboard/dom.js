// Building the page from data (as text and attributes, never HTML) and formatting its values.

import { ui } from './ui.js';

// ---- DOM helpers ---------------------------------------------------------------------------------

/** An element: props set as properties/attributes (never HTML), children appended as nodes or text. */
export function el(tag, props, ...children) {
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
export function fill(node, ...children) {
  node.replaceChildren();
  add(node, children);
  return node;
}

export function setText(node, text) {
  const value = String(text);
  if (node.textContent !== value) node.textContent = value;
}

export const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);

/** A `<button>`; null on a read-only dashboard when it is an action (so none is ever shown there). */
export function button(label, action, onClick, { act = true, cls, title, data } = {}) {
  if (act && ui.readOnly) return null;
  return el('button', { type: 'button', class: cls, title, data: { action, ...data }, on: { click: onClick } }, label);
}

/** A link-looking button for an id (stream, correlation, causation). */
export function idLink(text, action, onClick) {
  if (text === undefined || text === null || text === '') return '—';
  return el('button', { type: 'button', class: 'link', title: String(text), data: { action, value: text }, on: { click: onClick } }, String(text));
}

export function pre(value) {
  return el('pre', { class: 'json' }, json(value, 2));
}

export function json(value, indent) {
  try {
    return JSON.stringify(value, null, indent) ?? String(value);
  } catch {
    return String(value);
  }
}

export function clip(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** Puts the rows of `keys` in `tbody` in that order (creating, updating, removing), keeping each row's nodes. */
export function keyedRows(tbody, rows, keys, create, update) {
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

export function reveal(node) {
  node.scrollIntoView({ block: 'start', behavior: window.matchMedia('(prefers-reduced-motion: reduce)').matches ? 'auto' : 'smooth' });
}

// ---- formatting ----------------------------------------------------------------------------------

const number = new Intl.NumberFormat('en-US');
export const fmt = (n) => (n === null || n === undefined ? '—' : number.format(n));
export const count = (n, one, many = `${one}s`) => `${fmt(n)} ${n === 1 ? one : many}`;

export function age(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = s / 60;
  if (m < 60) return `${Math.floor(m)} min ${Math.floor(s % 60)} s`;
  const h = m / 60;
  return h < 48 ? `${Math.floor(h)} h ${Math.floor(m % 60)} min` : `${Math.floor(h / 24)} d`;
}

export function rate(r) {
  if (r === null || r === undefined) return '—';
  return r === 0 ? '0' : r < 10 ? r.toFixed(1) : number.format(Math.round(r));
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const pad = (n) => String(n).padStart(2, '0');

/** Local, 24-hour: "23:59:39" today, "Dec 5 23:59:39" before ("Dec 5 2025 23:59:39" another year). */
export function time(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const now = new Date();
  const clock = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  if (date.toDateString() === now.toDateString()) return clock;
  return `${MONTHS[date.getMonth()]} ${date.getDate()}${date.getFullYear() === now.getFullYear() ? '' : ` ${date.getFullYear()}`} ${clock}`;
}

export const timeCell = (iso) => el('td', { class: 'time', title: iso || undefined }, time(iso));

/** As `eskit status`: "-" for none (0: never leased). */
export const tokenText = (n) => (n === null || n === undefined || n === 0 ? '-' : fmt(n));
