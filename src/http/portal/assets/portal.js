// The portal's only script, hand-written and served as is (no build step, no third party).
// It sends the pages' forms to the real /v1 API through /portal/api/v1 (the cookie rides along;
// the CSRF token of the page goes in X-Cairn-CSRF), uploads files with a progress bar, and saves
// notes with If-Match so that a note changed elsewhere is never overwritten unseen.
// It never builds HTML from data: everything it shows goes in through textContent.
'use strict';
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const API = '/portal/api/v1';

  function url(path) {
    return path.startsWith('/portal/') ? path : API + path;
  }

  async function call(method, path, body, headers) {
    const h = Object.assign({ 'X-Cairn-CSRF': csrf }, headers || {});
    const init = { method: method, headers: h, credentials: 'same-origin' };
    if (body !== undefined) {
      h['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const r = await fetch(url(path), init);
    let json = null;
    try { json = await r.json(); } catch (_) { /* an empty answer */ }
    return { ok: r.ok, status: r.status, json: json };
  }

  function say(form, text, bad) {
    const s = form && form.querySelector('.status');
    if (s) {
      s.textContent = text;
      s.classList.toggle('bad', !!bad);
    }
  }

  function errorText(res) {
    const e = res.json && res.json.error;
    return e ? e.message + ' (' + e.code + ')' : 'The request failed (' + res.status + ').';
  }

  function then(form) {
    const t = form.dataset.then;
    if (t === 'reload') location.reload();
    else if (t) location.assign(t);
  }

  function changed(el) {
    if (el.tagName === 'SELECT') return Array.from(el.options).some(function (o) { return o.selected !== o.defaultSelected; });
    return el.value !== el.defaultValue;
  }

  // The form's named fields as a JSON object. With data-changed-only (a PATCH), only the fields
  // the person changed (and the code) are sent, an emptied one as null (clear it).
  function fields(form) {
    const only = form.hasAttribute('data-changed-only');
    const out = {};
    for (const el of Array.from(form.elements)) {
      if (!el.name || ['submit', 'button', 'file'].includes(el.type)) continue;
      if (only && el.name !== 'code' && !changed(el)) continue;
      out[el.name] = only && el.value === '' ? null : el.value;
    }
    return out;
  }

  async function submitApi(form) {
    const parts = form.dataset.api.split(' ');
    const headers = {};
    if (form.dataset.ifMatch) headers['If-Match'] = '"' + form.dataset.ifMatch + '"';
    const body = fields(form);
    const res = await call(parts[0], parts[1], Object.keys(body).length ? body : undefined, headers);
    if (!res.ok) return say(form, errorText(res), true);
    const show = form.dataset.show;
    if (show && res.json) say(form, 'Your new ' + show + ' (shown only now): ' + res.json[show]);
    else say(form, 'Done.');
    then(form);
  }

  async function sendCode(btn) {
    const body = { purpose: btn.dataset.sendCode };
    if (btn.dataset.for) body.identifier = document.getElementById(btn.dataset.for).value;
    const res = await call('POST', '/codes', body);
    say(btn.form, res.ok ? 'A code is on its way; it is valid for 10 minutes.' : errorText(res), !res.ok);
  }

  async function signup(form) {
    const f = fields(form);
    let res = await call('POST', '/accounts',
      { identifier: f.identifier, password: f.password, code: f.code, nickname: f.nickname || undefined });
    if (!res.ok) return say(form, errorText(res), true);
    res = await call('POST', '/portal/session', { identifier: f.identifier, password: f.password });
    if (!res.ok) return say(form, errorText(res), true);
    then(form);
  }

  async function move(form) {
    const res = await call('POST', '/portal/files/move', { from: form.dataset.from, to: form.elements.to.value });
    if (!res.ok) return say(form, errorText(res), true);
    then(form);
  }

  function newId() {
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return Array.from(b, function (x) { return x.toString(16).padStart(2, '0'); }).join('');
  }

  // Save a note: If-Match its version (If-None-Match: * for a new one). On 412 the version
  // saved elsewhere is shown beside the person's text, and the next save replaces it.
  async function saveNote(form) {
    const headers = {};
    let id = form.dataset.id;
    if (id) headers['If-Match'] = '"' + form.dataset.version + '"';
    else { id = newId(); headers['If-None-Match'] = '*'; }
    const payload = { title: form.elements.title.value, text: form.elements.text.value };
    const res = await call('PUT', '/sync/notes/' + encodeURIComponent(id), { payload: payload }, headers);
    if (res.ok) return then(form);
    const current = res.status === 412 && res.json && res.json.error.current;
    if (!current) return say(form, errorText(res), true);
    form.dataset.id = id;
    form.dataset.version = current.version;
    let other = document.getElementById('other-version');
    if (!other) {
      other = document.createElement('pre');
      other.id = 'other-version';
      form.appendChild(other);
    }
    const p = current.payload || {};
    other.textContent = current.deleted ? '(deleted elsewhere)' : (p.title || '') + '\n\n' + (p.text || '');
    say(form, 'This note was changed elsewhere; that version is shown below. Save again to replace it with yours.', true);
  }

  function upload(form) {
    const files = Array.from(form.elements.files.files);
    if (!files.length) return say(form, 'Choose one or more files first.', true);
    const bar = form.querySelector('progress');
    const total = files.reduce(function (n, f) { return n + f.size; }, 0) || 1;
    const dir = form.dataset.upload;
    let done = 0;
    function next(i) {
      if (i === files.length) {
        say(form, 'Uploaded ' + files.length + ' file(s).');
        return then(form) || location.reload();
      }
      const f = files[i];
      const path = (dir ? dir + '/' : '') + f.name;
      const xhr = new XMLHttpRequest();
      xhr.open('PUT', API + '/files/' + path.split('/').map(encodeURIComponent).join('/'));
      xhr.setRequestHeader('X-Cairn-CSRF', csrf);
      xhr.setRequestHeader('Content-Type', 'application/octet-stream');
      xhr.upload.onprogress = function (e) { bar.value = Math.round(100 * (done + e.loaded) / total); };
      xhr.onload = function () {
        if (xhr.status >= 300) {
          let msg = 'failed (' + xhr.status + ')';
          try { msg = JSON.parse(xhr.responseText).error.message; } catch (_) { /* not JSON */ }
          return say(form, f.name + ': ' + msg, true);
        }
        done += f.size;
        bar.value = Math.round(100 * done / total);
        say(form, 'Uploaded ' + f.name);
        next(i + 1);
      };
      xhr.onerror = function () { say(form, f.name + ': the connection failed', true); };
      xhr.send(f);
    }
    next(0);
  }

  const flows = { signup: signup, move: move, note: saveNote };

  document.addEventListener('submit', function (ev) {
    const form = ev.target;
    let run = null;
    if (form.dataset.api) run = submitApi;
    else if (form.hasAttribute('data-upload')) run = upload;
    else if (form.dataset.flow) run = flows[form.dataset.flow];
    if (!run) return;
    ev.preventDefault();
    Promise.resolve(run(form)).catch(function (e) { say(form, String(e), true); });
  });

  document.addEventListener('click', function (ev) {
    const b = ev.target.closest('button[data-send-code]');
    if (!b) return;
    ev.preventDefault();
    sendCode(b).catch(function (e) { say(b.form, String(e), true); });
  });
})();
