// Events page: filterable timeline with snapshot crops; "enroll this face as…" for unknown
// faces and "this is not NAME" for wrong matches, showing the effect on identification.

import { api, el, flash, when } from '../api.js';

const $ = (id) => document.getElementById(id);
let role = null;
let lastId = null;
// The newest event shown, for the live refresh (new events are prepended every few seconds).
let newest = null;
let timer = null;

/** The visitor whose events are shown (`#events?visitor=N`, from the Visitors page), or null. */
function visitor() {
  const v = new URLSearchParams(location.hash.split('?')[1] || '').get('visitor');
  return v && /^[0-9]+$/.test(v) ? v : null;
}

function filter() {
  const q = new URLSearchParams();
  if (visitor()) q.set('visitor_id', visitor());
  if ($('ef-camera').value) q.set('camera', $('ef-camera').value);
  if ($('ef-person').value) q.set('person_id', $('ef-person').value);
  if ($('ef-unknown').checked) q.set('unknown', 'true');
  if ($('ef-since').value) q.set('since_ms', String(new Date($('ef-since').value).getTime()));
  if ($('ef-until').value) q.set('until_ms', String(new Date($('ef-until').value).getTime()));
  return q;
}

function item(e) {
  // A stranger's stored face is for admins (docs/privacy.md); a viewer sees the row only.
  const shown = e.snapshot && (e.person || role === 'admin');
  const img = shown ? el('img', { src: `/api/events/${e.id}/snapshot`, alt: `Face seen at ${when(e.at_ms)}` })
    : el('img', { alt: e.snapshot ? 'a stranger (admins see the face)' : 'no snapshot' });
  const who = e.person
    ? el('p', { class: 'who', text: `${e.person}${e.similarity != null ? ` · ${e.similarity.toFixed(2)}` : ''}` })
    : el('p', { class: 'who unknown', text: `unknown${e.similarity != null ? ` · best ${e.similarity.toFixed(2)}` : ''}` });
  const visitor = e.visitor_id && role === 'admin'
    ? el('a', { href: `#visitors?id=${e.visitor_id}`, class: 'visitor-link', text: `visitor ${e.visitor_id}` })
    : null;
  // Frigate companion mode: the Frigate event this one is about, as Frigate confirmed it.
  const frigate = e.frigate_id
    ? el('div', { class: 'muted frigate', title: 'Frigate event id', text: `Frigate event ${e.frigate_id}` })
    : null;
  const li = el('li', { class: 'event', 'data-event': e.id }, img,
    el('div', { class: 'what' }, who, el('div', { class: 'muted', text: `${when(e.at_ms)} · ${e.camera} · track ${e.track_id}` }), frigate, visitor));
  if (role === 'admin' && e.snapshot) {
    const actions = el('div', { class: 'actions' });
    const nameIn = el('input', { 'aria-label': 'Name to enroll this face as', placeholder: 'Name', size: 10 });
    actions.append(nameIn, el('button', { type: 'button', class: 'secondary', text: 'Enroll as', onclick: async () => {
      if (!nameIn.value.trim()) { nameIn.focus(); return; }
      try {
        const r = await api('POST', `/api/events/${e.id}/enroll`, { name: nameIn.value });
        li.append(el('p', { class: 'effect', text: `Added this face to ${nameIn.value}${r.created_person ? ' (new person)' : ''}.` }));
      } catch (err) { flash(err.message); }
    } }));
    if (e.person_id) {
      actions.append(el('button', { type: 'button', class: 'danger', text: `This is not ${e.person}`, onclick: async () => {
        try {
          const r = await api('POST', `/api/events/${e.id}/not`, {});
          const before = r.before ? `${r.before.name} (${r.before.similarity.toFixed(2)})` : 'nobody';
          const after = r.after ? `${r.after.name} (${r.after.similarity.toFixed(2)})` : 'nobody';
          li.append(el('p', { class: 'effect', text: r.still_matches
            ? `Stored, but this face still matches ${r.name}: add better samples of ${r.name}.`
            : `Stored as "not ${r.name}". Identified again, this face is now: ${after} (was ${before}).` }));
        } catch (err) { flash(err.message); }
      } }));
    }
    li.append(actions);
  }
  return li;
}

async function load(more) {
  const q = filter();
  $('ef-csv').href = `/api/events.csv?${q}`;
  q.set('limit', '50');
  if (more && lastId) q.set('before_id', String(lastId));
  const list = await api('GET', `/api/events?${q}`);
  const ol = $('event-list');
  if (!more) ol.replaceChildren();
  if (!list.length && !more) ol.append(el('li', { class: 'muted', text: 'No events match.' }));
  for (const e of list) ol.append(item(e));
  if (!more) newest = list.length ? { id: list[0].id, at: list[0].at_ms } : { id: 0, at: 0 };
  lastId = list.length ? list[list.length - 1].id : lastId;
  $('event-more').hidden = list.length < 50;
}

/** Prepends events that arrived since the newest one shown (same filter). */
async function refresh() {
  if (!newest) return;
  const q = filter();
  q.set('limit', '50');
  if (newest.at) q.set('since_ms', String(Math.max(newest.at, Number(q.get('since_ms') || 0))));
  const list = (await api('GET', `/api/events?${q}`)).filter((e) => e.id > newest.id);
  if (!list.length) return;
  const ol = $('event-list');
  const placeholder = ol.querySelector('li.muted');
  if (placeholder) placeholder.remove();
  for (const e of list.reverse()) ol.prepend(item(e));
  newest = { id: list[list.length - 1].id, at: list[list.length - 1].at_ms };
}

/** Sets up the page's controls once. */
export function init() {
  $('event-filter').addEventListener('submit', (ev) => { ev.preventDefault(); load(false).catch((e) => flash(e.message)); });
  $('event-more').addEventListener('click', () => load(true).catch((e) => flash(e.message)));
}

/** Shows the page. */
export async function enter(session) {
  role = session.role;
  const v = visitor();
  const note = $('ef-visitor');
  note.hidden = !v;
  note.replaceChildren(...(v ? [`Only visitor ${v}'s events. `, el('a', { href: '#events', text: 'Show all events' })] : []));
  const cams = await api('GET', '/api/cameras');
  const cs = $('ef-camera');
  const keepC = cs.value;
  cs.replaceChildren(el('option', { value: '', text: 'all' }), ...cams.map((c) => el('option', { value: c.name, text: c.name })));
  cs.value = keepC;
  if (role === 'admin') {
    const ps = $('ef-person');
    const keepP = ps.value;
    const people = await api('GET', '/api/people');
    ps.replaceChildren(el('option', { value: '', text: 'anyone' }), ...people.map((p) => el('option', { value: p.id, text: p.name })));
    ps.value = keepP;
  } else {
    $('ef-person').disabled = true;
  }
  await load(false);
  if (!timer) timer = setInterval(() => refresh().catch(() => {}), 3000);
}

/** Stops the live refresh when another page is shown. */
export function leave() {
  if (timer) { clearInterval(timer); timer = null; }
}
