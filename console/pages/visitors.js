// Visitors page (admin): strangers grouped by face, most recent first, with their best crops,
// visits, first and last sighting and cameras. Enroll one as a new person or add them to an
// existing one (their good crops become samples), ignore them (no more alerts), or erase them.
// An unknown event links here as #visitors?id=N.

import { api, el, flash, when } from '../api.js';
import { confirmTyped } from './people.js';

const $ = (id) => document.getElementById(id);

function card(v, focus) {
  const crops = el('div', { class: 'crops' });
  for (const f of v.faces.slice(0, 6)) {
    crops.append(el('img', { src: `/api/visitor-faces/${f.id}/crop`, alt: `Visitor ${v.id}, ${f.camera}, ${when(f.at_ms)}`,
      title: f.enrollable ? 'good enough to enroll' : 'below the enrollment quality limits', class: f.enrollable ? '' : 'poor' }));
  }
  const good = v.faces.filter((f) => f.enrollable).length;
  const nameIn = el('input', { 'aria-label': `Name for visitor ${v.id}`, placeholder: 'Name', maxlength: 100, size: 12 });
  const existing = el('input', { type: 'checkbox', 'aria-label': 'Add to an existing person' });
  const enroll = async () => {
    const name = nameIn.value.trim();
    if (!name) { nameIn.focus(); return; }
    try {
      const r = await api('POST', `/api/visitors/${v.id}/enroll`, { name, existing: existing.checked });
      flash(`Visitor ${v.id} enrolled as ${name}${r.created ? ' (new person)' : ''} with ${r.samples} samples; their events now name ${name}.`);
      await load();
    } catch (e) { flash(e.message); }
  };
  const ignore = async () => {
    try { await api('PATCH', `/api/visitors/${v.id}`, { ignored: !v.ignored }); await load(focus); } catch (e) { flash(e.message); }
  };
  const erase = async () => {
    const yes = await confirmTyped(`Erase visitor ${v.id}? This deletes their ${v.faces.length} face crops and ${v.events} events. It cannot be undone.`, 'erase');
    if (!yes) return;
    try { await api('DELETE', `/api/visitors/${v.id}`); flash(`Visitor ${v.id} erased.`); await load(); } catch (e) { flash(e.message); }
  };
  const seen = v.visits === 1 ? '1 visit' : `${v.visits} visits`;
  return el('li', { class: `visitor${v.ignored ? ' ignored' : ''}${focus === v.id ? ' focus' : ''}`, 'data-visitor': v.id, id: `visitor-${v.id}` },
    crops,
    el('div', { class: 'what' },
      el('p', { class: 'vname', text: `Visitor ${v.id} · ${seen}${v.ignored ? ' · ignored' : ''}` }),
      el('div', { class: 'muted', text: `first ${when(v.first_seen_ms)} · last ${when(v.last_seen_ms)}` }),
      el('div', { class: 'muted', text: `${v.cameras.join(', ')} · ${v.events} events · ${good} of ${v.faces.length} crops good enough to enroll` }),
      el('a', { href: `#events?visitor=${v.id}`, class: 'visitor-events', text: `Events of visitor ${v.id}` })),
    el('div', { class: 'actions' },
      nameIn,
      el('label', { class: 'inline' }, existing, ' existing'),
      el('button', { type: 'button', text: 'Enroll', 'aria-label': `Enroll visitor ${v.id}`, disabled: good === 0, onclick: enroll }),
      el('button', { type: 'button', class: 'secondary', text: v.ignored ? 'Stop ignoring' : 'Ignore', 'aria-label': `${v.ignored ? 'Stop ignoring' : 'Ignore'} visitor ${v.id}`, onclick: ignore }),
      el('button', { type: 'button', class: 'danger', text: 'Erase', 'aria-label': `Erase visitor ${v.id}`, onclick: erase })));
}

async function load(focus) {
  const list = await api('GET', '/api/visitors');
  const ul = $('visitor-list');
  ul.replaceChildren();
  $('visitor-count').textContent = list.length ? `${list.length} visitors.` : '';
  if (!list.length) ul.append(el('li', { class: 'muted', text: 'No unknown visitors yet.' }));
  for (const v of list) ul.append(card(v, focus));
  if (focus) {
    const li = document.getElementById(`visitor-${focus}`);
    if (li) li.scrollIntoView({ block: 'center' });
  }
}

/** Shows the page; `#visitors?id=N` highlights visitor N (or the one they were merged into). */
export async function enter() {
  const q = new URLSearchParams(location.hash.split('?')[1] || '');
  let focus = Number(q.get('id')) || null;
  if (focus) {
    try { focus = (await api('GET', `/api/visitors/${focus}`)).id; } catch (e) { flash(e.message); focus = null; }
  }
  await load(focus);
}
