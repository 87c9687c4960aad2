// Fleet page: the units that share this unit's gallery (docs/fleet.md), whether each is online
// and holds the same gallery, and this unit's own sync state. Read-only: the fleet is set up with
// `faced fleet init` / `faced fleet join` on the units themselves.

import { api, el, when } from '../api.js';

const $ = (id) => document.getElementById(id);
let timer = null;

const STATES = {
  in_sync: 'In sync: every online unit holds this gallery.',
  syncing: 'Syncing: catching up with the broker, or another unit has not caught up yet.',
  disconnected: 'Disconnected from the broker: recognition goes on with the gallery this unit holds.',
};

async function load() {
  let f;
  try {
    f = await api('GET', '/api/fleet');
  } catch (e) {
    $('fleet-state').textContent = e.message;
    $('fleet-units').querySelector('tbody').replaceChildren();
    return;
  }
  $('fleet-state').textContent = `${STATES[f.state] || f.state} Site ${f.site}; this unit: ${f.device}, ${f.people} people.`;
  $('fleet-state').dataset.state = f.state;
  const tb = $('fleet-units').querySelector('tbody');
  tb.replaceChildren(...f.units.map((u) => el('tr', { 'data-unit': u.device },
    el('td', { text: u.device }),
    el('td', { text: u.online ? 'online' : 'offline' }),
    el('td', { text: u.version }),
    el('td', { text: String(u.cameras) }),
    el('td', { text: String(u.people) }),
    el('td', { class: u.same_gallery ? 'ok' : 'warn', text: u.same_gallery ? 'same' : 'differs' }),
    el('td', { text: when(u.last_seen_ms) }))));
  if (!f.units.length) tb.append(el('tr', {}, el('td', { colspan: 7, class: 'muted', text: 'No other unit has been seen on the broker yet.' })));
}

export async function enter() {
  await load();
  timer = setInterval(() => { load().catch(() => {}); }, 5000);
}

export function leave() {
  clearInterval(timer);
  timer = null;
}
