// faced console: hash-routed pages (#live, #people, #visitors, #events, #reports, #fleet, #system,
// #audit), no build step.
// Pages are modules under pages/; this file signs in and switches between them.

import { api, setCsrf, flash } from './api.js';
import * as live from './pages/live.js';
import * as people from './pages/people.js';
import * as visitors from './pages/visitors.js';
import * as events from './pages/events.js';
import * as reports from './pages/reports.js';
import * as fleet from './pages/fleet.js';
import * as system from './pages/system.js';
import * as audit from './pages/audit.js';

const pages = { live, people, visitors, events, reports, fleet, system, audit };
const $ = (id) => document.getElementById(id);
const session = { user: null, role: null };
let current = null;


function showOnly(id) {
  for (const s of document.querySelectorAll('.page')) s.hidden = s.id !== id;
}

async function route() {
  flash('');
  const hash = location.hash.slice(1);
  if (hash.startsWith('setup=')) { showOnly('page-setup'); return; }
  if (!session.user) { showOnly('page-login'); $('login-name').focus(); return; }
  let name = hash.split('?')[0] || 'live';
  if (!pages[name]) name = 'live';
  if (['people', 'visitors', 'audit'].includes(name) && session.role !== 'admin') name = 'live';
  if (current && current !== pages[name] && current.leave) current.leave();
  current = pages[name];
  showOnly(`page-${name}`);
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', a.dataset.page === name);
    if (a.dataset.page === name) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  try { await current.enter(session); } catch (e) { flash(e.message); }
  health();
}

/** Shows what the whole unit needs attention for (the database's disk is full), on every page. */
async function health() {
  if (!session.user) return;
  try {
    const s = await api('GET', '/api/system');
    const b = $('banner');
    b.textContent = s.storage_full_since
      ? `The database's disk is full since ${new Date(s.storage_full_since).toLocaleString()}: events are published but not stored. Free some space; storing resumes by itself.`
      : '';
    b.hidden = !s.storage_full_since;
  } catch (e) { /* signed out or restarting: the next page load says so */ }
}

function signedIn(me) {
  session.user = me.user;
  session.role = me.role;
  setCsrf(me.csrf);
  $('nav').hidden = false;
  $('who').hidden = false;
  $('who-name').textContent = `${me.user} (${me.role})`;
  for (const e of document.querySelectorAll('[data-admin]')) e.hidden = me.role !== 'admin';
}

async function start() {
  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    $('login-error').textContent = '';
    try {
      const me = await api('POST', '/api/login', { name: $('login-name').value, password: $('login-password').value });
      $('login-password').value = '';
      signedIn(me);
      route();
    } catch (e) { $('login-error').textContent = e.message; }
  });
  $('setup-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    $('setup-error').textContent = '';
    const token = location.hash.slice('#setup='.length);
    try {
      const me = await api('POST', '/api/setup', { token, name: $('setup-name').value, password: $('setup-password').value });
      signedIn(me);
      history.replaceState(null, '', '#people');
      route();
    } catch (e) { $('setup-error').textContent = e.message; }
  });
  $('logout').addEventListener('click', async () => {
    try { await api('POST', '/api/logout'); } catch (e) { /* signed out anyway */ }
    location.hash = '';
    location.reload();
  });
  window.addEventListener('hashchange', route);
  for (const p of Object.values(pages)) if (p.init) p.init();
  try { signedIn(await api('GET', '/api/me')); } catch (e) { /* not signed in */ }
  route();
}

start();
setInterval(health, 30000);
