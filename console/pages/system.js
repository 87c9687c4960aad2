// System page: device health (load, temperature, disk, database), MQTT and camera status,
// per-camera thresholds applied live (admin), encrypted backup download and restore, users and API
// tokens (admin).

import { api, el, flash, when } from '../api.js';

const $ = (id) => document.getElementById(id);
let role = null;

const mb = (b) => (b == null ? '–' : `${(b / 1048576).toFixed(1)} MB`);

async function load() {
  const s = await api('GET', '/api/system');
  const rows = [
    ['Version', s.version],
    ['Models', `${s.precision} (${s.precision_reason})`],
    ['CPU load (1/5/15 min)', s.load ? s.load.map((x) => x.toFixed(2)).join(' / ') + ` on ${s.cpus} cores` : '–'],
    ['Temperature', s.temperature_c == null ? '–' : `${s.temperature_c.toFixed(1)} °C`],
    ['Disk free', s.disk_total_bytes ? `${mb(s.disk_free_bytes)} of ${mb(s.disk_total_bytes)}` : '–'],
    ['Database size', mb(s.db_bytes)],
    ['People / samples', `${s.people} / ${s.samples}`],
    ['MQTT', s.mqtt.enabled ? `${s.mqtt.connected ? 'connected' : 'disconnected'} to ${s.mqtt.broker || '?'}${s.mqtt.last_error ? ` (${s.mqtt.last_error})` : ''}` : 'off'],
  ];
  $('sys-info').replaceChildren(...rows.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));
  const tb = $('sys-cameras').querySelector('tbody');
  tb.replaceChildren(...s.cameras.map((c) => {
    const input = el('input', { type: 'number', min: 0, max: 1, step: 0.01, value: c.threshold.toFixed(2), 'aria-label': `Threshold for ${c.name}`, disabled: role !== 'admin' });
    const save = role === 'admin' ? el('button', { type: 'button', class: 'secondary', text: 'Apply', onclick: async () => {
      try { await api('PUT', `/api/cameras/${encodeURIComponent(c.name)}/threshold`, { threshold: Number(input.value) }); flash(`Threshold of ${c.name} is now ${input.value}.`); } catch (e) { flash(e.message); }
    } }) : null;
    return el('tr', {}, el('td', { text: c.name }), el('td', { text: c.status }), el('td', { text: c.fps.toFixed(1) }), el('td', { text: String(c.dropped) }), el('td', {}, input, ' ', save));
  }));
  if (!s.cameras.length) tb.append(el('tr', {}, el('td', { colspan: 5, class: 'muted', text: 'No cameras running.' })));
  if (role === 'admin') await loadAccounts();
}

async function loadAccounts() {
  const users = await api('GET', '/api/users');
  $('sys-users').replaceChildren(...users.map((u) => el('li', {}, `${u.name} (${u.role}) `,
    el('button', { type: 'button', class: 'link danger-link', text: 'remove', 'aria-label': `Remove user ${u.name}`, onclick: async () => {
      if (!confirm(`Remove user ${u.name}?`)) return;
      try { await api('DELETE', `/api/users/${u.id}`); await loadAccounts(); } catch (e) { flash(e.message); }
    } }))));
  const tokens = await api('GET', '/api/tokens');
  $('sys-tokens').replaceChildren(...tokens.map((t) => el('li', {}, `${t.label} (${t.user}${t.scope === 'metrics' ? ', metrics only' : ''}, created ${when(t.created_at_ms)}${t.last_used_at_ms ? `, last used ${when(t.last_used_at_ms)}` : ''}) `,
    el('button', { type: 'button', class: 'link', text: 'revoke', 'aria-label': `Revoke token ${t.label}`, onclick: async () => {
      try { await api('DELETE', `/api/tokens/${t.id}`); await loadAccounts(); } catch (e) { flash(e.message); }
    } }))));
}

/** Sets up the page's controls once. */
export function init() {
  $('backup-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const res = await api('POST', '/api/backup', { passphrase: $('backup-pass').value });
      const name = /filename="([^"]+)"/.exec(res.headers.get('content-disposition') || '');
      const url = URL.createObjectURL(await res.blob());
      const a = el('a', { href: url, download: name ? name[1] : 'faced-backup.fbk' });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      $('backup-form').reset();
    } catch (e) { flash(e.message); }
  });
  $('restore-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const fd = new FormData();
    fd.append('passphrase', $('restore-pass').value);
    fd.append('archive', $('restore-file').files[0]);
    const out = $('restore-result');
    try {
      const r = await api('POST', '/api/restore', fd);
      out.textContent = `Backup of ${r.created_at} verified: ${r.people} people, ${r.samples} samples, ${r.events} events. ` +
        (r.restarting ? 'The unit is restarting to apply it; sign in again in a minute.' : 'It applies when faced restarts.');
      out.hidden = false;
      $('restore-form').reset();
    } catch (e) { flash(e.message); }
  });
  $('user-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      await api('POST', '/api/users', { name: $('user-name').value, role: $('user-role').value, password: $('user-password').value });
      $('user-form').reset();
      await loadAccounts();
    } catch (e) { flash(e.message); }
  });
  $('token-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const scope = $('token-metrics').checked ? 'metrics' : 'all';
      const r = await api('POST', '/api/tokens', { label: $('token-label').value, scope });
      const p = $('token-new');
      p.textContent = `New token (shown once; use as "Authorization: Bearer …"): ${r.token}`;
      p.hidden = false;
      $('token-form').reset();
      await loadAccounts();
    } catch (e) { flash(e.message); }
  });
}

/** Shows the page. */
export async function enter(session) { role = session.role; await load(); }
