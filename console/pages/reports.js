// Reports page: counts per day and per hour (stacked SVG bar charts drawn here, no library),
// per-person first/last seen and visits, unknown-face count, CSV export of each table.

import { api, el, when } from '../api.js';

const $ = (id) => document.getElementById(id);
const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

/** Stacked bars (recognized below, unknown above) for `buckets` [{key, recognized, unknown}]. */
export function barChart(buckets, title) {
  const W = 720, H = 220, pad = 28, n = Math.max(1, buckets.length);
  const max = Math.max(1, ...buckets.map((b) => b.recognized + b.unknown));
  const bw = (W - pad * 2) / n;
  const s = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title });
  s.append(svg('title', {}));
  s.firstChild.textContent = title;
  s.append(svg('line', { x1: pad, y1: H - pad, x2: W - pad, y2: H - pad, stroke: '#999' }));
  const label = (x, y, text, anchor = 'middle') => { const t = svg('text', { x, y, 'text-anchor': anchor }); t.textContent = text; s.append(t); };
  label(pad - 4, pad, String(max), 'end');
  label(pad - 4, H - pad, '0', 'end');
  const every = Math.ceil(n / 12);
  buckets.forEach((b, i) => {
    const x = pad + i * bw + bw * 0.1, w = bw * 0.8;
    const hr = (b.recognized / max) * (H - pad * 2), hu = (b.unknown / max) * (H - pad * 2);
    const r = svg('rect', { class: 'rec', x, y: H - pad - hr, width: w, height: hr });
    const u = svg('rect', { class: 'unk', x, y: H - pad - hr - hu, width: w, height: hu });
    const tip = svg('title', {});
    tip.textContent = `${b.key}: ${b.recognized} recognized, ${b.unknown} unknown`;
    r.append(tip);
    u.append(tip.cloneNode(true));
    s.append(r, u);
    if (i % every === 0) label(x + w / 2, H - pad + 14, b.key.length > 5 ? b.key.slice(5) : b.key);
  });
  return s;
}

function range() {
  const until = $('rp-until').value ? new Date(`${$('rp-until').value}T00:00`).getTime() + 86400000 : Date.now();
  const since = $('rp-since').value ? new Date(`${$('rp-since').value}T00:00`).getTime() : until - 7 * 86400000;
  const q = new URLSearchParams({ since_ms: since, until_ms: until, tz_offset_min: -new Date().getTimezoneOffset() });
  return q;
}

async function load() {
  const q = range();
  const r = await api('GET', `/api/reports?${q}`);
  $('rp-summary').textContent = `${r.recognized} recognized · ${r.unknown} unknown faces · ${r.people.length} people, ${when(r.since_ms)} – ${when(r.until_ms)}`;
  $('rp-days').replaceChildren(barChart(r.days, 'Events per day: recognized (blue) and unknown (orange)'));
  $('rp-hours').replaceChildren(barChart(r.hours, 'Events per hour of day: recognized (blue) and unknown (orange)'));
  const tb = $('rp-people').querySelector('tbody');
  tb.replaceChildren(...r.people.map((p) => el('tr', {},
    el('td', { text: p.name }), el('td', { text: when(p.first_seen_ms) }), el('td', { text: when(p.last_seen_ms) }), el('td', { text: String(p.visits) }))));
  if (!r.people.length) tb.append(el('tr', {}, el('td', { colspan: 4, class: 'muted', text: 'Nobody recognised in this range.' })));
  for (const t of ['days', 'hours', 'people']) {
    const qq = new URLSearchParams(q);
    qq.set('table', t);
    $(`rp-csv-${t}`).href = `/api/reports.csv?${qq}`;
  }
}

/** Sets up the page's controls once. */
export function init() {
  $('report-form').addEventListener('submit', (ev) => { ev.preventDefault(); load(); });
}

/** Shows the page. */
export async function enter() { await load(); }
