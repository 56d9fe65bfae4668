// Steadfast web console.
//
// One page, hash-routed: #/instances, #/instance/ID, #/deployments. It talks to the same
// origin's /v1 API with the bearer token kept in sessionStorage. Everything the API
// returns is tenant data and therefore untrusted: the DOM is built with createElement and
// textContent only, never innerHTML. The page runs under a strict CSP, so there are no
// inline handlers or style attributes either.
'use strict';

(() => {
  const TOKEN_KEY = 'steadfast.token';
  const STATUSES = ['PENDING', 'RUNNING', 'SUSPENDED', 'COMPLETED', 'FAILED', 'TERMINATED', 'STALLED', 'CONTINUED_AS_NEW'];
  // States in which an instance still runs and accepts actions.
  const LIVE = new Set(['PENDING', 'RUNNING', 'SUSPENDED']);
  const PAGE_SIZE = 50;
  const HISTORY_PAGE = 1000;
  const HISTORY_MAX_PAGES = 20;
  const LIST_REFRESH_MS = 3000;
  const INSTANCE_REFRESH_MS = 2000;

  // Bulk and single-instance state changes: the URL suffix, and how to word them.
  const ACTIONS = {
    terminate: { verb: 'Terminate', done: 'Terminated', danger: true },
    suspend: { verb: 'Suspend', done: 'Suspended', danger: false },
    resume: { verb: 'Resume', done: 'Resumed', danger: false },
  };

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    me: null, // the answer of GET /v1/me: { tenant, scopes }
    view: 0, // bumped on every navigation; async work started for an older view is dropped
    timer: null, // the pending refresh timeout
    chain: null, // identity of the current refresh loop (see every())
    keepNotes: false, // keep #message across the next navigation (after a purge)
  };

  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;

  // ---------------------------------------------------------------- DOM helpers

  // el('a', { href: '#', class: 'x' }, 'text', childNode, [more], null) -> element.
  // Attributes set to null/false are skipped, true becomes a boolean attribute.
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value == null || value === false) continue;
      if (key === 'class') node.className = value;
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child == null || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  // A labelled control: <div class="field"><label for=id>text</label>control</div>.
  function field(id, label, control) {
    return el('div', { class: 'field' }, el('label', { for: id }, label), control);
  }

  function section(title, ...body) {
    return el('section', {}, el('h2', {}, title), ...body);
  }

  function thead(labels) {
    return el('thead', {}, el('tr', {}, labels.map((label) => el('th', { scope: 'col' }, label))));
  }

  function badge(status) {
    const cls = String(status).replace(/[^A-Za-z0-9_-]/g, '_');
    return el('span', { class: `badge status-${cls}` }, status);
  }

  function instanceLink(id) {
    return el('a', { href: `#/instance/${enc(id)}` }, id);
  }

  // JSON pretty-printed, or an em dash for null/absent.
  function pretty(value) {
    return value == null ? '—' : JSON.stringify(value, null, 2);
  }

  function jsonBlock(value, cls) {
    return el('pre', { class: cls ? `json ${cls}` : 'json' }, pretty(value));
  }

  // Collapsed JSON, for inputs that can be long and are rarely what one looks for.
  function details(summary, value) {
    return el('details', {}, el('summary', {}, summary), jsonBlock(value));
  }

  const timeFormat = new Intl.DateTimeFormat(undefined, {
    year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit',
  });

  // A <time> for an RFC 3339 text or a number of ms since the epoch.
  function timeEl(value) {
    if (value == null || value === '') return document.createTextNode('—');
    const d = new Date(value);
    if (Number.isNaN(d.getTime())) return document.createTextNode(String(value));
    const iso = d.toISOString();
    return el('time', { datetime: iso, title: iso }, timeFormat.format(d));
  }

  // 1234 -> "1.2s", 10_740_000 -> "2h 59m".
  function duration(ms) {
    if (!Number.isFinite(ms)) return '?';
    ms = Math.max(0, Math.round(ms));
    if (ms < 1000) return `${ms}ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)}s`;
    const s = Math.floor(ms / 1000);
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    return `${m}m ${s % 60}s`;
  }

  function plural(n, word) {
    return `${n} ${word}${n === 1 ? '' : 's'}`;
  }

  // datetime-local text (local time) <-> ms since the epoch.
  function toMs(local) {
    const t = local ? new Date(local).getTime() : NaN;
    return Number.isFinite(t) ? String(t) : '';
  }

  function toLocalInput(ms) {
    const d = new Date(Number(ms));
    if (Number.isNaN(d.getTime())) return '';
    const p = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
  }

  // An instance that will not change any more (purge is allowed, refreshing stops).
  // CONTINUED_AS_NEW is a passing state: the next generation is about to start.
  function isEnded(status) {
    return !LIVE.has(status) && status !== 'CONTINUED_AS_NEW';
  }

  function hasScope(scope) {
    const scopes = (state.me && state.me.scopes) || [];
    return scopes.includes('admin') || scopes.includes(scope);
  }

  // ---------------------------------------------------------------- notes

  function say(text) {
    $('message').textContent = text;
  }

  function warn(text) {
    $('alert').textContent = text;
  }

  function clearNotes() {
    say('');
    warn('');
  }

  // Shows a failed call's message. A 401 has already sent the user to the sign-in form.
  function fail(err) {
    if (err && err.status === 401) return;
    warn((err && err.message) || String(err));
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, message, code) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // Calls the API; resolves to the parsed JSON body, or throws an ApiError carrying the
  // server's own message. POST bodies are JSON unless another type is given.
  // `raw`: `body` is JSON text already, sent as typed (re-serialising would round big
  // numbers and drop duplicate keys).
  async function api(method, path, body, type = 'application/json', raw = false) {
    const headers = { Authorization: `Bearer ${state.token}` };
    const init = { method, headers, cache: 'no-store' };
    if (method === 'POST') {
      headers['Content-Type'] = type; // the server refuses POSTs without it
      init.body = type === 'application/json' && !raw ? JSON.stringify(body === undefined ? {} : body) : body;
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, `Could not reach the server (${e.message}).`);
    }
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!res.ok) {
      const error = (data && data.error) || {};
      const message = String(error.message || res.statusText || `Request failed with status ${res.status}`);
      if (res.status === 401) signOut(message);
      throw new ApiError(res.status, message, error.code);
    }
    return data;
  }

  // The journal of an instance, page by page (at most HISTORY_MAX_PAGES per call). Given
  // what an earlier call returned, only the entries after it are asked for.
  async function fetchHistory(id, known) {
    const entries = known ? known.entries.slice() : [];
    let after = entries.length ? entries[entries.length - 1].position : null;
    let truncated = false;
    for (let page = 0; ; page++) {
      if (page === HISTORY_MAX_PAGES) {
        truncated = true;
        break;
      }
      const q = new URLSearchParams({ limit: String(HISTORY_PAGE) });
      if (after != null) q.set('after', String(after));
      const data = await api('GET', `/v1/instances/${enc(id)}/history?${q}`);
      entries.push(...((data && data.history) || []));
      if (!data || data.next_after == null) break;
      after = data.next_after;
    }
    entries.sort((a, b) => a.position - b.position);
    return { entries, truncated };
  }

  // ---------------------------------------------------------------- refresh loop

  function stopRefresh() {
    clearTimeout(state.timer);
    state.timer = null;
    state.chain = null;
  }

  // Runs task every `ms` while the tab is visible and no confirmation is open. The task
  // returns false to stop. Each loop has its own identity so that a tick still in flight
  // when a new loop starts (or the view changes) does not schedule itself again.
  function every(ms, task) {
    stopRefresh();
    const chain = {};
    state.chain = chain;
    const tick = async () => {
      if (state.chain !== chain) return;
      let again = true;
      if (document.visibilityState === 'visible' && !$('confirm').open) {
        try {
          again = (await task()) !== false;
        } catch (err) {
          fail(err);
          // A client error (gone, forbidden) will not fix itself; a network blip may.
          again = !(err.status >= 400 && err.status < 500);
        }
      }
      if (again && state.chain === chain) state.timer = setTimeout(tick, ms);
    };
    state.timer = setTimeout(tick, ms);
  }

  // ---------------------------------------------------------------- confirmation

  // Opens #confirm for `ids`. Resolves to the reason to send (or '' when none is asked),
  // or null when cancelled.
  function confirmAction({ verb, done, ids, danger = false, askReason = false }) {
    const dialog = $('confirm');
    $('confirm-title').textContent = `${verb} ${plural(ids.length, 'instance')}?`;
    $('confirm-list').replaceChildren(...ids.map((id) => el('li', {}, el('code', {}, id))));
    $('confirm-reason-field').hidden = !askReason;
    $('confirm-reason').value = '';
    const yes = $('confirm-yes');
    yes.textContent = verb;
    yes.className = danger ? 'danger' : 'primary';
    dialog.returnValue = '';
    dialog.showModal();
    // Focus the reason when there is one, else the harmless choice.
    (askReason ? $('confirm-reason') : $('confirm-no')).focus();
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => {
        if (dialog.returnValue !== 'yes') resolve(null);
        else if (!askReason) resolve('');
        else resolve($('confirm-reason').value.trim() || `${done} from the web console`);
      }, { once: true });
    });
  }

  // ---------------------------------------------------------------- sign in / out

  function showSignedOut() {
    state.view++;
    stopRefresh();
    $('view').replaceChildren();
    $('nav').hidden = true;
    $('account').hidden = true;
    $('tenant').textContent = '';
    $('login-view').hidden = false;
    document.title = 'Sign in · Steadfast';
    $('token').focus();
  }

  function showSignedIn() {
    $('login-view').hidden = true;
    $('nav').hidden = false;
    $('account').hidden = false;
    $('tenant').textContent = state.me.tenant;
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    state.me = null;
    if ($('confirm').open) $('confirm').close();
    showSignedOut();
    say('');
    warn(message || '');
  }

  // Checks the token with GET /v1/me. A bad token (401) signs out with the server's message.
  async function verify() {
    try {
      state.me = await api('GET', '/v1/me');
      showSignedIn();
      return true;
    } catch (err) {
      if (err.status !== 401) {
        // Keep the stored token (a reload retries) but show the form and the reason.
        state.token = null;
        showSignedOut();
        warn(err.message);
      }
      return false;
    }
  }

  // The dev server prints a link /ui/#token=XYZ: take the token, then drop it from the
  // address bar (and from the history) at once.
  // A link never replaces a session already signed in: a crafted link must not switch an
  // operator to someone else's token unnoticed.
  function takeTokenFromUrl() {
    if (!location.hash.startsWith('#token=')) return;
    const token = new URLSearchParams(location.hash.slice(1)).get('token');
    history.replaceState(null, '', '/ui/#/instances');
    if (!token) return;
    if (state.token && state.token !== token) {
      warn('A sign-in link was ignored: this tab is already signed in. Sign out first to use it.');
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    state.token = token;
  }

  // ---------------------------------------------------------------- routing

  function parseHash() {
    const hash = location.hash.replace(/^#/, '') || '/instances';
    const at = hash.indexOf('?');
    const path = at < 0 ? hash : hash.slice(0, at);
    const params = new URLSearchParams(at < 0 ? '' : hash.slice(at + 1));
    return { path, params };
  }

  async function route() {
    const view = ++state.view;
    stopRefresh();
    if (!state.keepNotes) clearNotes();
    state.keepNotes = false;
    if (!state.token) return showSignedOut();
    if (!state.me && !(await verify())) return;
    if (view !== state.view) return;

    const { path, params } = parseHash();
    for (const a of $('nav').querySelectorAll('a')) {
      const current = path === a.dataset.route || (a.dataset.route === '/instances' && path.startsWith('/instance/'));
      if (current) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    const root = $('view');
    root.replaceChildren();
    if (path === '/instances') {
      instancesPage(root, params);
    } else if (path.startsWith('/instance/')) {
      let id = path.slice('/instance/'.length);
      try {
        id = decodeURIComponent(id);
      } catch {
        // not percent-encoded: use it as it is
      }
      instancePage(root, id);
    } else if (path === '/deployments') {
      deploymentsPage(root);
    } else {
      history.replaceState(null, '', '#/instances');
      route();
      return;
    }
    // Move focus to the new page's heading, for keyboard and screen reader users.
    const h1 = root.querySelector('h1');
    if (h1) h1.focus({ preventScroll: true });
  }

  // ---------------------------------------------------------------- instances list

  function instancesPage(root, params) {
    const view = state.view;
    const canSignal = hasScope('signal');
    document.title = 'Instances · Steadfast';

    // The API filter, taken from the hash query so a reload keeps it.
    const filter = new URLSearchParams();
    for (const key of ['status', 'workflow', 'search', 'created_after', 'created_before', 'order']) {
      const value = params.get(key);
      if (value) filter.set(key, value);
    }
    const list = {
      cursors: [null], // the cursor of each page visited; the last one is the current page
      next: null,
      selected: new Set(),
      signature: '', // the last rendered rows, to skip re-rendering unchanged data
      request: 0,
      busy: false,
    };

    // Filters.
    const status = filter.get('status') || '';
    const statuses = !status || STATUSES.includes(status) ? STATUSES : [...STATUSES, status];
    const order = filter.get('order') === 'desc' ? 'desc' : 'asc';
    const form = el('form', { id: 'filters', class: 'filters', novalidate: true },
      field('f-status', 'Status', el('select', { id: 'f-status' },
        el('option', { value: '' }, 'All'),
        statuses.map((s) => el('option', { value: s, selected: s === status }, s)))),
      field('f-workflow', 'Workflow', el('input', { id: 'f-workflow', autocomplete: 'off', value: filter.get('workflow') || '' })),
      field('f-search', 'Id contains', el('input', { id: 'f-search', type: 'search', autocomplete: 'off', value: filter.get('search') || '' })),
      field('f-after', 'Created after', el('input', { id: 'f-after', type: 'datetime-local', value: toLocalInput(filter.get('created_after') || NaN) })),
      field('f-before', 'Created before', el('input', { id: 'f-before', type: 'datetime-local', value: toLocalInput(filter.get('created_before') || NaN) })),
      field('f-order', 'Sort by id', el('select', { id: 'f-order' },
        el('option', { value: 'asc', selected: order === 'asc' }, 'A to Z'),
        el('option', { value: 'desc', selected: order === 'desc' }, 'Z to A'))),
      el('button', { type: 'submit', class: 'primary' }, 'Apply'));

    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const q = new URLSearchParams();
      const put = (key, value) => { if (value) q.set(key, value); };
      put('status', $('f-status').value);
      put('workflow', $('f-workflow').value.trim());
      put('search', $('f-search').value.trim());
      put('created_after', toMs($('f-after').value));
      put('created_before', toMs($('f-before').value));
      if ($('f-order').value === 'desc') q.set('order', 'desc');
      const hash = `#/instances${q.toString() ? `?${q}` : ''}`;
      // The same filters again do not change the hash: reload by hand.
      if (location.hash === hash) route();
      else location.hash = hash;
    });

    // Bulk actions, only for tokens that may use them.
    const bulkButtons = [];
    const count = el('span', { class: 'muted', id: 'selected-count' });
    let bulk = null;
    if (canSignal) {
      for (const [kind, a] of Object.entries(ACTIONS)) {
        const b = el('button', { type: 'button', id: `bulk-${kind}`, class: a.danger ? 'danger' : null, disabled: true }, `${a.verb} selected`);
        b.addEventListener('click', () => bulkAction(kind));
        bulkButtons.push(b);
      }
      bulk = el('div', { class: 'toolbar', role: 'group', 'aria-label': 'Bulk actions' }, bulkButtons, count);
    }

    // Table. The select column exists only where selecting is useful (signal scope).
    const selectAll = el('input', { type: 'checkbox', id: 'select-all', 'aria-label': 'Select all on this page' });
    const tbody = el('tbody');
    const headers = ['Instance', 'Workflow', 'Status', 'Version', 'Created', 'Updated'];
    if (canSignal) headers.unshift(el('span', {}, selectAll, el('span', { class: 'visually-hidden' }, 'Select')));
    const table = el('table', { id: 'instances', class: 'grid' },
      el('caption', {}, 'Workflow instances'), thead(headers), tbody);

    const prev = el('button', { type: 'button', id: 'prev', disabled: true }, 'Previous');
    const next = el('button', { type: 'button', id: 'next', disabled: true }, 'Next');
    const pageText = el('span', { id: 'page' }, 'Page 1');
    const pager = el('nav', { class: 'pager', 'aria-label': 'Pages' }, prev, pageText, next);

    root.append(el('h1', { tabindex: '-1' }, 'Instances'), form, bulk, el('div', { class: 'table-wrap' }, table), pager);

    function row(inst) {
      const id = inst.instance_id;
      return el('tr', { 'data-id': id },
        canSignal && el('td', {}, el('input', { type: 'checkbox', class: 'select', 'data-id': id, 'aria-label': `Select ${id}`, checked: list.selected.has(id) })),
        el('td', {}, instanceLink(id)),
        el('td', {}, inst.workflow),
        el('td', {}, badge(inst.runtime_status)),
        el('td', { class: 'num' }, inst.version == null ? '—' : inst.version),
        el('td', {}, timeEl(inst.created_at)),
        el('td', {}, timeEl(inst.updated_at)));
    }

    function render(rows) {
      // Selections only make sense for rows still on screen.
      const shown = new Set(rows.map((r) => r.instance_id));
      for (const id of [...list.selected]) if (!shown.has(id)) list.selected.delete(id);

      const signature = JSON.stringify(rows);
      if (signature !== list.signature) {
        list.signature = signature;
        // Re-rendering replaces the rows: put keyboard focus back where it was.
        const focused = tbody.contains(document.activeElement) ? document.activeElement : null;
        const focusRow = focused && focused.closest('tr') && focused.closest('tr').dataset.id;
        const focusTag = focused && focused.tagName.toLowerCase();
        tbody.replaceChildren(...(rows.length
          ? rows.map(row)
          : [el('tr', {}, el('td', { colspan: headers.length, class: 'empty' }, 'No instances match.'))]));
        if (focusRow != null) {
          const tr = [...tbody.rows].find((r) => r.dataset.id === focusRow);
          const target = tr && tr.querySelector(focusTag === 'a' ? 'a' : 'input');
          if (target) target.focus({ preventScroll: true });
        }
      }
      prev.disabled = list.cursors.length <= 1;
      next.disabled = !list.next;
      pageText.textContent = `Page ${list.cursors.length}`;
      updateSelection();
    }

    function updateSelection() {
      if (!canSignal) return;
      const boxes = [...tbody.querySelectorAll('input.select')];
      const checked = boxes.filter((b) => b.checked).length;
      selectAll.checked = boxes.length > 0 && checked === boxes.length;
      selectAll.indeterminate = checked > 0 && checked < boxes.length;
      selectAll.disabled = boxes.length === 0;
      for (const b of bulkButtons) b.disabled = list.busy || list.selected.size === 0;
      count.textContent = list.selected.size ? `${list.selected.size} selected` : '';
    }

    async function load() {
      const request = ++list.request;
      const q = new URLSearchParams(filter);
      q.set('limit', String(PAGE_SIZE));
      const cursor = list.cursors[list.cursors.length - 1];
      if (cursor) q.set('cursor', cursor);
      const data = await api('GET', `/v1/instances?${q}`);
      // A newer request (paging, refresh) or another page has taken over.
      if (request !== list.request || view !== state.view) return;
      list.next = data.next_cursor || null;
      render(data.instances || []);
    }

    function turnPage(forward) {
      if (forward) list.cursors.push(list.next);
      else list.cursors.pop();
      list.selected.clear();
      list.signature = '';
      load().catch(fail);
    }

    async function bulkAction(kind) {
      const ids = [...list.selected];
      if (!ids.length) return;
      const a = ACTIONS[kind];
      const reason = await confirmAction({ verb: a.verb, done: a.done, ids, danger: a.danger, askReason: true });
      if (reason === null) return;
      clearNotes();
      list.busy = true;
      updateSelection();
      let ok = 0;
      const failures = [];
      // One at a time: the server applies its own rate limits, and the order is readable.
      for (const id of ids) {
        try {
          await api('POST', `/v1/instances/${enc(id)}/${kind}`, { reason });
          ok++;
        } catch (err) {
          if (err.status === 401) return; // signed out; nothing more to do here
          failures.push(`${id}: ${err.message}`);
        }
      }
      list.busy = false;
      say(`${a.done} ${ok} of ${ids.length}`);
      if (failures.length) warn(failures.join('\n'));
      list.selected.clear();
      list.signature = ''; // re-render even if nothing changed, to uncheck the boxes
      await load().catch(fail);
    }

    prev.addEventListener('click', () => turnPage(false));
    next.addEventListener('click', () => turnPage(true));
    tbody.addEventListener('change', (ev) => {
      const box = ev.target;
      if (!box.classList.contains('select')) return;
      if (box.checked) list.selected.add(box.dataset.id);
      else list.selected.delete(box.dataset.id);
      updateSelection();
    });
    selectAll.addEventListener('change', () => {
      for (const box of tbody.querySelectorAll('input.select')) {
        box.checked = selectAll.checked;
        if (box.checked) list.selected.add(box.dataset.id);
        else list.selected.delete(box.dataset.id);
      }
      updateSelection();
    });

    load().catch(fail);
    every(LIST_REFRESH_MS, async () => { await load(); return true; });
  }

  // ---------------------------------------------------------------- instance page

  // Interprets an activity or child result. The journal stores { "Ok": "json text" } or
  // { "Err": { kind, message } }; other spellings are accepted too.
  function decodeOutcome(result) {
    if (result && typeof result === 'object' && !Array.isArray(result)) {
      for (const key of ['err', 'error', 'Err', 'failed']) {
        if (key in result) return { failed: true, value: result[key] };
      }
      for (const key of ['ok', 'Ok']) {
        if (key in result) return { failed: false, value: parseMaybe(result[key]) };
      }
    }
    return { failed: false, value: result };
  }

  // Results are journaled as JSON text: show them as JSON when they parse.
  function parseMaybe(value) {
    if (typeof value !== 'string') return value;
    try {
      return JSON.parse(value);
    } catch {
      return value;
    }
  }

  // What the current generation is blocked on: open event waits, timers, activities and
  // child workflows. Losers of a when_any are abandoned and not waited for.
  function waitingFor(entries) {
    const abandoned = new Set(); // seqs that lost a when_any: nobody waits for them
    const completed = new Set(); // activity, child and timer seqs that finished
    const raised = new Map(); // event name -> number of times raised
    const lastFailure = new Map(); // activity seq -> its latest failed attempt
    for (const e of entries) {
      if (e.type === 'when_any_resolved') {
        for (const seq of e.tasks || []) if (seq !== e.winner) abandoned.add(seq);
      } else if (['activity_completed', 'child_completed', 'timer_fired'].includes(e.type)) {
        completed.add(e.seq);
      } else if (e.type === 'activity_attempt_failed') {
        lastFailure.set(e.seq, e);
      } else if (e.type === 'event_raised') {
        raised.set(e.name, (raised.get(e.name) || 0) + 1);
      }
    }
    const waits = [];
    const waitsSeen = new Map(); // event name -> waits met so far
    for (const e of entries) {
      if (e.type === 'event_wait_started') {
        // An abandoned wait (it lost a when_any) consumed nothing; otherwise the k-th raise
        // of a name satisfies the k-th wait for that name.
        if (abandoned.has(e.seq)) continue;
        const k = waitsSeen.get(e.name) || 0;
        waitsSeen.set(e.name, k + 1);
        if (k >= (raised.get(e.name) || 0)) waits.push({ kind: 'event', name: e.name, entry: e });
      } else if (e.type === 'timer_created' && !completed.has(e.seq) && !abandoned.has(e.seq)) {
        waits.push({ kind: 'timer', entry: e });
      } else if (e.type === 'activity_scheduled' && !completed.has(e.seq)) {
        waits.push({ kind: 'activity', entry: e, failure: lastFailure.get(e.seq) });
      } else if (e.type === 'child_scheduled' && !completed.has(e.seq)) {
        waits.push({ kind: 'child', entry: e });
      }
    }
    return waits;
  }

  function waitItem(w) {
    const e = w.entry;
    switch (w.kind) {
      case 'event':
        return el('li', { class: 'wait-event', 'data-event': w.name }, 'Event ', el('code', {}, w.name));
      case 'timer': {
        const left = Number(e.fire_at) - Date.now();
        return el('li', { class: 'wait-timer' }, 'Timer fires at ', timeEl(e.fire_at),
          left > 0 ? ` (in ${duration(left)})` : ' (due now)');
      }
      case 'activity': {
        const f = w.failure;
        if (f && f.retry_at != null) {
          const why = (f.error && f.error.message) || 'no message';
          return el('li', { class: 'wait-activity' }, 'Activity ', el('code', {}, e.name),
            `: attempt ${f.attempt} failed (${why}); next attempt at `, timeEl(f.retry_at));
        }
        return el('li', { class: 'wait-activity' }, 'Activity ', el('code', {}, e.name), ' running');
      }
      default:
        return el('li', { class: 'wait-child' }, 'Child ', el('code', {}, e.name), ' (', instanceLink(e.instance_id), ')');
    }
  }

  // One timeline item: a title line with the entry's time, then any details.
  function tlItem(kind, entry, title, ...body) {
    return el('li', { class: `tl-${kind}` },
      el('div', { class: 'tl-head' }, el('span', { class: 'tl-title' }, title), timeEl(entry.at)),
      ...body);
  }

  function tlNote(text) {
    return el('p', { class: 'tl-note' }, text);
  }

  // The timeline of one generation: commands paired with their completions by seq.
  function timelineItems(entries) {
    const items = [];
    const bySeq = new Map();
    for (const e of entries) {
      switch (e.type) {
        case 'activity_scheduled':
        case 'child_scheduled':
        case 'timer_created': {
          const item = { start: e, failures: [], end: null };
          bySeq.set(e.seq, item);
          items.push(item);
          break;
        }
        case 'activity_attempt_failed':
        case 'activity_completed':
        case 'child_completed':
        case 'timer_fired': {
          const item = bySeq.get(e.seq);
          if (!item) items.push({ start: e }); // should not happen; show it on its own
          else if (e.type === 'activity_attempt_failed') item.failures.push(e);
          else item.end = e;
          break;
        }
        case 'time_read':
          break; // clock reads are replay bookkeeping, not something to look at
        default:
          items.push({ start: e });
      }
    }
    return items.map(renderItem);
  }

  function renderItem({ start: e, failures = [], end = null }) {
    switch (e.type) {
      case 'activity_scheduled': {
        const outcome = end && decodeOutcome(end.result);
        const state = !end ? (failures.length ? 'retrying' : 'running') : outcome.failed ? 'failed' : 'completed';
        const facts = [state];
        if (end) facts.push(plural(end.attempts, 'attempt'), `took ${duration(Date.parse(end.at) - Date.parse(e.at))}`);
        const li = tlItem('activity', e, ['Activity ', el('code', {}, e.name)],
          tlNote(facts.join(' · ')),
          details('Input', e.input),
          failures.length > 0 && el('ul', { class: 'tl-failures' }, failures.map((f) => el('li', {},
            `Attempt ${f.attempt} failed: ${(f.error && f.error.message) || 'no message'}`,
            f.retry_at != null ? ['; retry at ', timeEl(f.retry_at)] : null))),
          outcome && jsonBlock(outcome.value, outcome.failed ? 'error' : null));
        if (outcome && outcome.failed) li.classList.add('tl-failed');
        return li;
      }
      case 'child_scheduled': {
        const outcome = end && decodeOutcome(end.result);
        const li = tlItem('child', e, ['Child workflow ', el('code', {}, e.name), ' ', instanceLink(e.instance_id)],
          tlNote(!end ? 'running' : outcome.failed ? 'failed' : 'completed'),
          details('Input', e.input),
          outcome && jsonBlock(outcome.value, outcome.failed ? 'error' : null));
        if (outcome && outcome.failed) li.classList.add('tl-failed');
        return li;
      }
      case 'timer_created':
        return tlItem('timer', e, 'Timer',
          el('p', { class: 'tl-note' }, 'Fires at ', timeEl(e.fire_at),
            e.after_ms != null ? ` (after ${duration(e.after_ms)})` : '',
            end ? ['; fired at ', timeEl(end.at)] : '; not fired yet'));
      case 'event_wait_started':
        return tlItem('event', e, ['Waiting for event ', el('code', {}, e.name)]);
      case 'event_raised':
        return tlItem('event', e, ['Event ', el('code', {}, e.name), ' raised'], jsonBlock(e.payload));
      case 'workflow_started':
        return tlItem('workflow', e, ['Workflow ', el('code', {}, e.workflow), ' started'], details('Input', e.input));
      case 'workflow_completed':
        return tlItem('workflow', e, 'Workflow completed', jsonBlock(e.output));
      case 'workflow_failed':
        return tlItem('workflow', e, 'Workflow failed', jsonBlock(e.error, 'error'));
      case 'workflow_stalled':
        return tlItem('workflow', e, 'Workflow stalled', el('pre', { class: 'json error' }, e.reason || ''));
      case 'continued_as_new':
        return tlItem('workflow', e, 'Continued as new', details('New input', e.input));
      case 'workflow_terminated':
        return tlItem('workflow', e, 'Workflow terminated', tlNote(e.reason || ''));
      case 'suspended':
        return tlItem('workflow', e, 'Suspended', tlNote(e.reason || ''));
      case 'resumed':
        return tlItem('workflow', e, 'Resumed', tlNote(e.reason || ''));
      case 'patched':
        return tlItem('workflow', e, ['Patch ', el('code', {}, e.name), ' applied']);
      case 'when_any_resolved':
        return tlItem('workflow', e, 'First of several tasks finished',
          tlNote(`Tasks ${(e.tasks || []).join(', ')}: task ${e.winner} won`));
      default: {
        // An entry type this console does not know yet: show its fields.
        const { position, generation, at, type, ...rest } = e;
        return tlItem('workflow', e, String(type), jsonBlock(rest));
      }
    }
  }

  function instancePage(root, id) {
    const view = state.view;
    const canSignal = hasScope('signal');
    document.title = `${id} · Steadfast`;

    const summary = el('dl', { id: 'summary', class: 'summary' });
    const actions = el('section', { class: 'actions', 'aria-labelledby': 'actions-title', hidden: true });
    const waiting = el('ul', { id: 'waiting', class: 'waiting' });
    const input = el('pre', { id: 'input', class: 'json' });
    const output = el('pre', { id: 'output', class: 'json' });
    const error = el('pre', { id: 'error', class: 'json' });
    const custom = el('pre', { id: 'custom-status', class: 'json' });
    const timeline = el('ol', { id: 'timeline', class: 'timeline' });
    const historyNote = el('p', { class: 'muted' });
    root.append(
      el('p', { class: 'crumbs' }, el('a', { href: '#/instances' }, '← Instances')),
      el('h1', { tabindex: '-1', class: 'instance-id' }, id),
      summary,
      section('Waiting for', waiting),
      actions,
      el('div', { class: 'data' },
        section('Input', input), section('Output', output),
        section('Error', error), section('Custom status', custom)),
      section('Timeline', historyNote, timeline));

    // What was last rendered, so a refresh only rebuilds what changed (and keeps open
    // <details>, typed text and focus otherwise).
    const last = { status: '', history: '', actions: '' };
    let request = 0;

    // The history read so far, and the generation it was read at: a refresh asks only for
    // what came after, unless the instance moved to a new generation (whose start may
    // have dropped old entries) or the history was cut short.
    let known = null;

    async function load() {
      const mine = ++request;
      const status = await api('GET', `/v1/instances/${enc(id)}`);
      const reuse = known && !known.truncated && known.generation === status.generation ? known : null;
      const history = await fetchHistory(id, reuse);
      if (view !== state.view) return true;
      if (mine !== request) return false; // a newer load (after an action) renders instead
      known = { ...history, generation: status.generation };
      render(status, history);
      return isEnded(status.runtime_status);
    }

    // Loads now, then keeps refreshing while the instance can still change.
    async function refresh() {
      const ended = await load();
      if (view !== state.view) return;
      if (ended) stopRefresh();
      else if (!state.chain) every(INSTANCE_REFRESH_MS, async () => !(await load()));
    }

    function render(status, { entries, truncated }) {
      const s = status.runtime_status;
      const statusSig = JSON.stringify(status);
      const historySig = `${entries.length}:${entries.length ? entries[entries.length - 1].position : ''}`;
      const generation = entries.reduce((g, e) => Math.max(g, e.generation), status.generation || 0);
      // From a history cut short, what it waits for cannot be told: say so, offer no approval.
      const unknown = LIVE.has(s) && truncated;
      const waits = LIVE.has(s) && !truncated ? waitingFor(entries.filter((e) => e.generation === generation)) : [];

      if (statusSig !== last.status || historySig !== last.history) {
        renderSummary(status, entries);
        input.textContent = pretty(status.input);
        output.textContent = pretty(status.output);
        error.textContent = pretty(status.error);
        custom.textContent = pretty(status.custom_status);
      }
      if (historySig !== last.history) {
        renderTimeline(entries);
        historyNote.textContent = truncated
          ? `Showing the first ${HISTORY_MAX_PAGES * HISTORY_PAGE} entries of a longer history.`
          : `${entries.length} history ${entries.length === 1 ? 'entry' : 'entries'}`;
      }
      last.status = statusSig;
      last.history = historySig;
      // Always redrawn: timers show the time left until they fire.
      waiting.replaceChildren(...(unknown
        ? [el('li', { class: 'none' }, 'Unknown: the history is longer than the console reads')]
        : waits.length ? waits.map(waitItem) : [el('li', { class: 'none' }, 'Nothing')]));
      renderActions(s, waits);
    }

    function renderSummary(status, entries) {
      const children = [];
      for (const e of entries) {
        if (e.type === 'child_scheduled' && !children.includes(e.instance_id)) children.push(e.instance_id);
      }
      const item = (term, ...value) => el('div', {}, el('dt', {}, term), el('dd', {}, ...value));
      summary.replaceChildren(
        item('Status', el('span', { id: 'status', class: badge(status.runtime_status).className }, status.runtime_status)),
        item('Workflow', status.workflow),
        item('Version', status.version == null ? '—' : status.version),
        item('Generation', status.generation),
        item('Created', timeEl(status.created_at)),
        item('Updated', timeEl(status.updated_at)),
        status.start_at ? item('Starts at', timeEl(status.start_at)) : '',
        item('Parent', status.parent_instance_id ? instanceLink(status.parent_instance_id) : '—'),
        item('Children', children.length
          ? children.flatMap((c, i) => (i ? [', ', instanceLink(c)] : [instanceLink(c)]))
          : '—'));
    }

    function renderTimeline(entries) {
      const byGeneration = new Map();
      for (const e of entries) {
        if (!byGeneration.has(e.generation)) byGeneration.set(e.generation, []);
        byGeneration.get(e.generation).push(e);
      }
      const generations = [...byGeneration.keys()].sort((a, b) => a - b);
      timeline.replaceChildren(...(generations.length
        ? generations.map((g) => el('li', { class: 'tl-generation' },
          el('h3', {}, `Generation ${g}${g > generations[0] ? ' (continued as new)' : ''}`),
          el('ol', { class: 'tl-items' }, timelineItems(byGeneration.get(g)))))
        : [el('li', { class: 'none' }, 'No history yet.')]));
    }

    // The action controls depend only on the status and on whether an approval is awaited;
    // they are rebuilt when that changes, keeping what the user typed.
    function renderActions(s, waits) {
      const approval = waits.some((w) => w.kind === 'event' && w.name === 'approval_received');
      const key = `${s}|${approval}`;
      if (key === last.actions) return;
      last.actions = key;

      const typed = {};
      for (const fid of ['approver', 'reason', 'raise-name', 'raise-payload']) {
        if ($(fid)) typed[fid] = $(fid).value;
      }
      actions.replaceChildren();
      const live = LIVE.has(s);
      const ended = isEnded(s);
      actions.hidden = !canSignal || !(live || ended);
      if (actions.hidden) return;

      actions.append(el('h2', { id: 'actions-title' }, 'Actions'));
      if (live) actions.append(el('div', { class: 'action-forms' }, approval && approvalControls(), raiseForm()));
      const buttons = el('div', { class: 'toolbar' });
      if (s === 'RUNNING' || s === 'PENDING') buttons.append(actionButton('suspend'));
      if (s === 'SUSPENDED') buttons.append(actionButton('resume'));
      if (live) buttons.append(actionButton('terminate'));
      if (ended) buttons.append(purgeButton());
      actions.append(buttons);

      for (const [fid, value] of Object.entries(typed)) {
        if ($(fid)) $(fid).value = value;
      }
      if ($('raise-payload')) $('raise-payload').dispatchEvent(new Event('input'));
    }

    // Runs an action's request with its button disabled, reports the outcome in the
    // notes, then reloads the page's data.
    async function perform(button, request, success) {
      clearNotes();
      button.disabled = true;
      try {
        await request();
        say(success);
      } catch (err) {
        fail(err);
      }
      button.disabled = false;
      await refresh().catch(fail);
    }

    function approvalControls() {
      const approver = el('input', { id: 'approver', autocomplete: 'off', required: true, placeholder: 'manager@company.com' });
      const reason = el('input', { id: 'reason', autocomplete: 'off' });
      const approve = el('button', { type: 'button', id: 'approve', class: 'primary' }, 'Approve');
      const reject = el('button', { type: 'button', id: 'reject', class: 'danger' }, 'Reject');
      const send = async (approved, button) => {
        const who = approver.value.trim();
        if (!who) {
          warn('Enter the approver before approving or rejecting.');
          approver.focus();
          return;
        }
        const body = { approved, approver: who, reason: reason.value.trim() };
        await perform(button, () => api('POST', `/v1/instances/${enc(id)}/events/approval_received`, body),
          approved ? `Approved by ${who}` : `Rejected by ${who}`);
      };
      approve.addEventListener('click', () => send(true, approve));
      reject.addEventListener('click', () => send(false, reject));
      return el('fieldset', { class: 'approval' }, el('legend', {}, 'Approval'),
        field('approver', 'Approver', approver), field('reason', 'Reason', reason),
        el('div', { class: 'toolbar' }, approve, reject));
    }

    function raiseForm() {
      const name = el('input', { id: 'raise-name', autocomplete: 'off' });
      const payload = el('textarea', { id: 'raise-payload', rows: 4, spellcheck: 'false' });
      payload.value = '{}';
      const problem = el('p', { id: 'raise-error', role: 'alert', class: 'field-error' });
      const submit = el('button', { type: 'submit', id: 'raise' }, 'Raise event');
      const validate = () => {
        try {
          JSON.parse(payload.value);
          problem.textContent = '';
          payload.removeAttribute('aria-invalid');
          submit.disabled = false;
          return true;
        } catch (e) {
          problem.textContent = `The payload is not valid JSON: ${e.message}`;
          payload.setAttribute('aria-invalid', 'true');
          submit.disabled = true;
          return false;
        }
      };
      payload.addEventListener('input', validate);
      const form = el('form', { id: 'raise-form', novalidate: true },
        el('fieldset', {}, el('legend', {}, 'Raise event'),
          field('raise-name', 'Event name', name),
          field('raise-payload', 'Payload (JSON)', payload),
          problem, el('div', { class: 'toolbar' }, submit)));
      form.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        if (!validate()) return;
        const eventName = name.value.trim();
        if (!eventName) {
          warn('Enter the name of the event to raise.');
          name.focus();
          return;
        }
        const text = payload.value;
        JSON.parse(text); // checked as typed; this is the last word
        await perform(submit, () => api('POST', `/v1/instances/${enc(id)}/events/${enc(eventName)}`, text, 'application/json', true),
          `Raised event ${eventName}`);
        validate(); // the payload may have been edited meanwhile
      });
      return form;
    }

    function actionButton(kind) {
      const a = ACTIONS[kind];
      const button = el('button', { type: 'button', id: kind, class: a.danger ? 'danger' : null }, a.verb);
      button.addEventListener('click', async () => {
        const reason = await confirmAction({ verb: a.verb, done: a.done, ids: [id], danger: a.danger, askReason: true });
        if (reason === null) return;
        await perform(button, () => api('POST', `/v1/instances/${enc(id)}/${kind}`, { reason }), `${a.done} ${id}`);
      });
      return button;
    }

    function purgeButton() {
      const button = el('button', { type: 'button', id: 'purge', class: 'danger' }, 'Purge');
      button.addEventListener('click', async () => {
        const ok = await confirmAction({ verb: 'Purge', done: 'Purged', ids: [id], danger: true });
        if (ok === null) return;
        clearNotes();
        try {
          const result = await api('DELETE', `/v1/instances/${enc(id)}`);
          if (result && result.purged) {
            say(`Purged ${id}`);
            state.keepNotes = true; // show the message on the list we go back to
            location.hash = '#/instances';
            return;
          }
          say(`${id} was not purged.`);
        } catch (err) {
          fail(err);
        }
        await refresh().catch(fail);
      });
      return button;
    }

    refresh().catch(fail);
  }

  // ---------------------------------------------------------------- deployments

  function deploymentsPage(root) {
    const view = state.view;
    document.title = 'Deployments · Steadfast';
    const tbody = el('tbody');
    const columns = ['Workflow', 'Version', 'Digest', 'Live instances pinned'];
    root.append(
      el('h1', { tabindex: '-1' }, 'Deployments'),
      el('div', { class: 'table-wrap' }, el('table', { id: 'deployments', class: 'grid' },
        el('caption', {}, 'Deployed workflow versions'), thead(columns), tbody)));
    if (hasScope('deploy')) root.append(checkSection());

    api('GET', '/v1/workflows').then((data) => {
      if (view !== state.view) return;
      const rows = [];
      for (const w of (data && data.workflows) || []) {
        for (const v of w.versions || []) {
          const digest = String(v.digest || '');
          rows.push(el('tr', {},
            el('td', {}, el('a', { href: `#/instances?workflow=${enc(w.name)}` }, w.name)),
            el('td', { class: 'num' }, v.version),
            el('td', {}, el('code', { title: digest }, digest.slice(0, 12))),
            el('td', { class: 'num' }, v.live_instances)));
        }
      }
      tbody.replaceChildren(...(rows.length
        ? rows
        : [el('tr', {}, el('td', { colspan: columns.length, class: 'empty' }, 'No workflows deployed.'))]));
    }).catch(fail);
  }

  // Uploads a component with ?check=true: the server reports whether each live instance
  // would replay unchanged on it, and deploys nothing.
  function checkSection() {
    const file = el('input', { id: 'check-file', type: 'file', accept: '.wasm' });
    const button = el('button', { type: 'submit', id: 'check', class: 'primary' }, 'Check compatibility');
    const out = el('div', { class: 'check-output' });
    const form = el('form', { id: 'check-form', class: 'filters', novalidate: true },
      field('check-file', 'Component (.wasm)', file), button);

    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const chosen = file.files && file.files[0];
      if (!chosen) {
        warn('Choose a .wasm file to check.');
        file.focus();
        return;
      }
      clearNotes();
      button.disabled = true;
      button.textContent = 'Checking…';
      try {
        const data = await api('POST', '/v1/components?check=true', chosen, 'application/wasm');
        out.replaceChildren(...checkResult(data || {}));
      } catch (err) {
        fail(err);
      } finally {
        button.disabled = false;
        button.textContent = 'Check compatibility';
      }
    });

    return el('section', {},
      el('h2', {}, 'Check a new version'),
      el('p', { class: 'muted' }, 'Would the live instances replay on a new build of a workflow? Nothing is deployed by this check.'),
      form, out);
  }

  function checkResult(data) {
    const instances = data.instances || [];
    const compatible = instances.filter((i) => i.compatible).length;
    const columns = ['Instance', 'Workflow', 'Compatible', 'Divergence'];
    const rows = instances.map((i) => el('tr', {},
      el('td', {}, instanceLink(i.instance_id)),
      el('td', {}, i.workflow),
      el('td', {}, el('span', { class: i.compatible ? 'yes' : 'no' }, i.compatible ? 'Yes' : 'No')),
      el('td', { class: 'divergence' }, i.divergence || '—')));
    return [
      el('p', { id: 'check-summary', class: 'summary-line' },
        `${compatible} of ${plural(instances.length, 'live instance')} would replay unchanged`),
      el('div', { class: 'table-wrap' }, el('table', { id: 'check-result', class: 'grid' },
        el('caption', {}, 'Compatibility of live instances'), thead(columns),
        el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: columns.length, class: 'empty' }, 'No live instances.'))))),
      data.deployment ? details('Deployment', data.deployment) : null,
    ];
  }

  // ---------------------------------------------------------------- start

  $('login').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = $('token').value.trim();
    if (!token) {
      warn('Enter an API token.');
      $('token').focus();
      return;
    }
    clearNotes();
    state.token = token;
    if (await verify()) {
      sessionStorage.setItem(TOKEN_KEY, token);
      $('token').value = '';
      route();
    }
  });

  $('signout').addEventListener('click', () => {
    signOut('');
    say('Signed out.');
  });

  // The confirm dialog: submitting (the confirm button, or Enter in the reason) means yes;
  // Cancel and Escape close it with no value.
  $('confirm-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    $('confirm').close('yes');
  });
  $('confirm-no').addEventListener('click', () => $('confirm').close(''));

  window.addEventListener('hashchange', route);

  takeTokenFromUrl();
  route();
})();
