// Fetch wrapper for the console API: JSON in and out, the session's CSRF token on every
// state-changing request, and errors thrown as Error(message) from {"error": {code, message}}.

let csrf = null;

/** Remembers the CSRF token of the current session. */
export function setCsrf(token) { csrf = token; }

/** Calls the API; resolves with parsed JSON (or the Response for non-JSON bodies). */
export async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: 'same-origin' };
  if (method !== 'GET' && csrf) opts.headers['X-CSRF-Token'] = csrf;
  if (body instanceof FormData) {
    opts.body = body;
  } else if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(path, opts);
  const type = res.headers.get('content-type') || '';
  if (!res.ok) {
    let msg = `${res.status} ${res.statusText}`;
    if (type.includes('json')) {
      const j = await res.json();
      if (j.error) msg = j.error.message;
    }
    const e = new Error(msg);
    e.status = res.status;
    throw e;
  }
  return type.includes('json') ? res.json() : res;
}

/** Element helper: el('div', {class: 'x', text: 'y'}, child...). */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

/** Local date-time text for Unix ms. */
export function when(ms) {
  return new Date(ms).toLocaleString();
}

/** Shows a short message at the top of the page (empty text hides it). */
export function flash(text) {
  const f = document.getElementById('flash');
  f.textContent = text;
  f.hidden = !text;
}

/** Renders upload/track candidates with their quality verdicts into `box`; returns a function
 * giving the ids of the ticked ones. */
export function renderSamples(box, samples) {
  box.replaceChildren();
  const boxes = [];
  for (const s of samples) {
    const ok = s.verdict === 'ok';
    const cb = s.id ? el('input', { type: 'checkbox', id: `pick-${s.id}` }) : null;
    if (cb) { cb.checked = ok; boxes.push([cb, s.id]); }
    box.append(el('div', { class: `sample ${ok ? 'ok' : 'bad'}` },
      s.id ? el('img', { src: `/api/uploads/${encodeURIComponent(s.id)}/crop`, alt: `Face from ${s.file}` }) : null,
      el('div', { class: 'verdict', text: ok ? 'good' : s.verdict.replace('_', ' ') }),
      el('div', { class: 'muted', text: s.message }),
      el('div', { class: 'muted', text: s.file }),
      cb ? el('label', { for: `pick-${s.id}`, class: 'pick' }, cb, ' keep') : null));
  }
  return () => boxes.filter(([c]) => c.checked).map(([, id]) => id);
}
