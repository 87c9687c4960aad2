// People page (admin): who is enrolled, with a thumbnail and sample counts; add a person from
// photos (several, or a zip) after seeing each face's quality verdict; rename; privacy erase.

import { api, el, flash, renderSamples } from '../api.js';

const $ = (id) => document.getElementById(id);
let picked = () => [];

/** Asks for confirmation by typing `word`; resolves true if confirmed. */
export function confirmTyped(text, word) {
  const d = $('confirm');
  $('confirm-text').textContent = text;
  $('confirm-label').textContent = `Type ${word} to confirm`;
  const input = $('confirm-input');
  input.value = '';
  return new Promise((resolve) => {
    d.addEventListener('close', () => resolve(d.returnValue === 'ok' && input.value.trim() === word), { once: true });
    d.showModal();
    input.focus();
  });
}

async function load() {
  const list = await api('GET', '/api/people');
  const ul = $('people-list');
  ul.replaceChildren();
  if (!list.length) ul.append(el('li', { class: 'muted', text: 'Nobody is enrolled yet.' }));
  for (const p of list) {
    const img = el('img', { src: `/api/people/${p.id}/thumbnail`, alt: `Face of ${p.name}` });
    img.addEventListener('error', () => { img.removeAttribute('src'); img.alt = 'no photo'; }, { once: true });
    ul.append(el('li', { class: 'person', 'data-person': p.name }, img,
      el('div', {},
        el('div', { class: 'name', text: p.name }),
        el('div', { class: 'muted', text: `${p.positive_samples} samples${p.negative_samples ? `, ${p.negative_samples} "not ${p.name}"` : ''}${p.origin ? `, enrolled on ${p.origin}` : ''}` }),
        el('div', { class: 'actions' },
          el('button', { type: 'button', class: 'secondary', text: 'Rename', 'aria-label': `Rename ${p.name}`, onclick: () => rename(p) }),
          el('button', { type: 'button', class: 'danger', text: 'Delete', 'aria-label': `Delete ${p.name}`, onclick: () => erase(p) })))));
  }
}

async function rename(p) {
  const name = prompt(`New name for ${p.name}`, p.name);
  if (!name || name === p.name) return;
  try { await api('PATCH', `/api/people/${p.id}`, { name }); await load(); } catch (e) { flash(e.message); }
}

async function erase(p) {
  const yes = await confirmTyped(`Delete ${p.name}? This erases every photo sample, face crop and event of ${p.name}. It cannot be undone.`, p.name);
  if (!yes) return;
  try {
    const r = await api('DELETE', `/api/people/${p.id}`);
    flash(`${p.name} erased: ${r.samples_removed} samples and ${r.events_removed} events removed.`);
    await load();
  } catch (e) { flash(e.message); }
}

/** Sets up the page's controls once. */
export function init() {
  $('add-check').addEventListener('click', async () => {
    const files = $('add-files').files;
    if (!files.length) { flash('Choose one or more photos, or a zip, first.'); return; }
    const fd = new FormData();
    for (const f of files) fd.append('files', f, f.name);
    const box = $('add-samples');
    box.textContent = `Checking ${files.length} file(s)…`;
    $('add-save').disabled = true;
    try {
      const r = await api('POST', '/api/uploads', fd);
      picked = renderSamples(box, r.samples);
      const good = r.samples.filter((s) => s.verdict === 'ok').length;
      flash(`${good} of ${r.samples.length} photos are good samples.`);
      $('add-save').disabled = false;
    } catch (e) { box.textContent = ''; flash(e.message); }
  });
  $('add-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const samples = picked();
    if (!samples.length) { flash('Keep at least one sample.'); return; }
    try {
      const name = $('add-name').value;
      const r = await api('POST', '/api/people', { name, samples, allow_rejected: true });
      flash(`Enrolled ${name} with ${r.samples} samples.`);
      $('add-form').reset();
      $('add-samples').replaceChildren();
      $('add-save').disabled = true;
      await load();
    } catch (e) { flash(e.message); }
  });
}

/** Shows the page. */
export async function enter() { await load(); }
