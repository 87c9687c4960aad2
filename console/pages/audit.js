// Audit page (admin): the audit trail, newest first: who (console user, API token, CLI user,
// signed MQTT command, fleet, Frigate) did what to whom, when and from where. Filter by actor,
// action and time; "Older rows" pages back; the CSV export takes the same filter. The rows are
// written by the daemon and chained by HMACs (`faced audit verify` checks them); erased people
// appear by id only.

import { api, el, when } from '../api.js';

const $ = (id) => document.getElementById(id);
const PAGE = 100;
let lastId = null;

function filter() {
  const q = new URLSearchParams();
  if ($('af-actor').value.trim()) q.set('actor', $('af-actor').value.trim());
  if ($('af-action').value) q.set('action', $('af-action').value);
  if ($('af-since').value) q.set('since_ms', String(new Date($('af-since').value).getTime()));
  if ($('af-until').value) q.set('until_ms', String(new Date($('af-until').value).getTime()));
  return q;
}

function row(r) {
  const subject = [r.subject_kind === 'none' ? '' : r.subject_kind, r.subject_id || '', r.subject_name || ''].filter(Boolean).join(' ');
  return el('tr', { 'data-audit': r.id },
    el('td', { text: String(r.id) }),
    el('td', { text: when(r.at_ms), title: r.at }),
    el('td', { text: `${r.actor} (${r.actor_kind})` }),
    el('td', { text: r.origin }),
    el('td', { text: r.action.replaceAll('_', ' ') }),
    el('td', { text: subject }),
    el('td', { text: r.detail }));
}

async function load(more) {
  const q = filter();
  $('af-csv').href = `/api/audit.csv?${q}`;
  q.set('limit', String(PAGE));
  if (more && lastId) q.set('before_id', String(lastId));
  const rows = await api('GET', `/api/audit?${q}`);
  const body = $('audit-rows');
  if (!more) body.replaceChildren();
  if (!rows.length && !more) body.append(el('tr', {}, el('td', { colspan: 7, class: 'muted', text: 'No rows match.' })));
  for (const r of rows) body.append(row(r));
  lastId = rows.length ? rows[rows.length - 1].id : lastId;
  $('audit-more').hidden = rows.length < PAGE;
}

/** Sets up the page's controls once. */
export function init() {
  $('audit-filter').addEventListener('submit', (ev) => { ev.preventDefault(); load(false).catch((e) => $('audit-error').textContent = e.message); });
  $('audit-more').addEventListener('click', () => load(true).catch((e) => $('audit-error').textContent = e.message));
}

/** Shows the page. */
export async function enter() {
  $('audit-error').textContent = '';
  await load(false);
}
