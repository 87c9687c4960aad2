// Live page: the camera as MJPEG in an <img>, with a <canvas> on top drawing each tracked face's
// box, name (or "unknown") and similarity from the Server-Sent Events overlay stream.

import { api, el, flash, renderSamples } from '../api.js';

const $ = (id) => document.getElementById(id);
let source = null;
let timer = null;
let role = null;
let last = null;
let overlays = 0;
let enrollTrack = null;

/** Draws one overlay (frame coordinates; the canvas is scaled to the image by CSS). */
export function draw(o) {
  const c = $('live-overlay');
  if (c.width !== o.width || c.height !== o.height) { c.width = o.width; c.height = o.height; }
  const g = c.getContext('2d');
  g.clearRect(0, 0, c.width, c.height);
  const lw = Math.max(2, Math.round(o.width / 300));
  g.font = `${Math.max(14, Math.round(o.width / 40))}px system-ui, sans-serif`;
  for (const f of o.faces) {
    const [x1, y1, x2, y2] = f.box;
    const color = f.name ? '#22c55e' : '#f59e0b';
    g.lineWidth = lw;
    g.strokeStyle = color;
    g.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const label = `${f.name || 'unknown'}${f.similarity != null ? ' ' + f.similarity.toFixed(2) : ''}`;
    const h = parseInt(g.font, 10) + 6;
    const w = g.measureText(label).width + 8;
    const ty = y1 - h >= 0 ? y1 - h : y2;
    g.fillStyle = color;
    g.fillRect(x1, ty, w, h);
    g.fillStyle = '#000';
    g.fillText(label, x1 + 4, ty + h - 6);
  }
}

function showTracks(o) {
  const ul = $('live-tracks');
  ul.replaceChildren();
  if (!o.faces.length) { ul.append(el('li', { class: 'muted', text: 'No faces in view.' })); return; }
  for (const f of o.faces) {
    const who = f.name ? `${f.name} (${f.similarity.toFixed(2)})` : 'unknown';
    const li = el('li', {}, `Track ${f.track_id}: ${who} `);
    if (role === 'admin') {
      li.append(el('button', { type: 'button', class: 'secondary', text: 'Enroll this face…',
        onclick: () => { enrollTrack = { camera: o.camera, track_id: f.track_id }; $('live-enroll').hidden = false; $('live-enroll-name').focus(); } }));
    }
    ul.append(li);
  }
}

function connect() {
  leave();
  const cam = $('live-camera').value;
  if (!cam) { $('live-stats').textContent = 'No cameras.'; return; }
  $('live-img').src = `/api/live/${encodeURIComponent(cam)}/mjpeg`;
  source = new EventSource(`/api/live/overlay?camera=${encodeURIComponent(cam)}`);
  source.addEventListener('overlay', (ev) => {
    const o = JSON.parse(ev.data);
    overlays++;
    const changed = !last || JSON.stringify(last.faces.map((f) => [f.track_id, f.name])) !== JSON.stringify(o.faces.map((f) => [f.track_id, f.name]));
    last = o;
    draw(o);
    if (changed) showTracks(o);
  });
  timer = setInterval(stats, 2000);
  stats();
}

async function stats() {
  try {
    const cams = await api('GET', '/api/cameras');
    const c = cams.find((x) => x.name === $('live-camera').value);
    if (c) $('live-stats').textContent = `${c.status} · ${c.fps.toFixed(1)} fps · ${c.dropped} dropped · overlay ${(overlays / 2).toFixed(1)}/s`;
    overlays = 0;
  } catch (e) { $('live-stats').textContent = e.message; }
}

/** Sets up the page's controls once. */
export function init() {
  $('live-camera').addEventListener('change', connect);
  $('live-enroll-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!enrollTrack) return;
    const box = $('live-enroll-samples');
    box.textContent = 'Collecting… keep walking past the camera.';
    try {
      const r = await api('POST', '/api/live/enroll', { ...enrollTrack, seconds: Number($('live-enroll-seconds').value) });
      const picked = renderSamples(box, r.samples);
      box.append(el('button', { type: 'button', text: 'Save person', onclick: async () => {
        try {
          await api('POST', '/api/people', { name: $('live-enroll-name').value, samples: picked() });
          flash(`Enrolled ${$('live-enroll-name').value}.`);
          $('live-enroll').hidden = true;
        } catch (e) { flash(e.message); }
      } }));
    } catch (e) { box.textContent = e.message; }
  });
}

/** Shows the page. */
export async function enter(session) {
  role = session.role;
  const cams = await api('GET', '/api/cameras');
  const sel = $('live-camera');
  const keep = sel.value;
  sel.replaceChildren(...cams.map((c) => el('option', { value: c.name, text: c.name })));
  if (keep) sel.value = keep;
  connect();
}

/** Stops the streams when another page is shown. */
export function leave() {
  if (source) { source.close(); source = null; }
  if (timer) { clearInterval(timer); timer = null; }
  $('live-img').removeAttribute('src');
}
