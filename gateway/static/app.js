// The chat page at `/`: pick a name, join rooms, read and write messages.
//
// All the reliability (reconnects, resume, dedupe, re-sending unacked messages) is in
// client.js; this file only draws. Every piece of user text goes into the DOM through
// textContent or text nodes, never as HTML.

import { CourierClient, NAME_RE, segments } from './client.js';

const HISTORY_PAGE = 50;
const MAX_SHOWN = 1000;
/** How long "… is typing" stays after a typing event (they come every 2 s while typing). */
const TYPING_SHOWN_MS = 3000;

const $ = (id) => document.getElementById(id);
const ui = {
  conn: $('conn'),
  me: $('me'),
  login: $('login'),
  loginForm: $('login-form'),
  loginError: $('login-error'),
  name: $('name'),
  chat: $('chat'),
  roomList: $('room-list'),
  joinForm: $('join-form'),
  roomName: $('room-name'),
  privateList: $('private-list'),
  privateEmpty: $('private-empty'),
  dmForm: $('dm-form'),
  dmName: $('dm-name'),
  title: $('room-title'),
  online: $('online'),
  typing: $('typing'),
  leave: $('leave'),
  scroller: $('scroller'),
  older: $('older'),
  beginning: $('beginning'),
  timelines: $('timelines'),
  notice: $('notice'),
  composer: $('composer'),
  text: $('text'),
};

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

/** @type {CourierClient | null} */
let client = null;
/** name -> what the page keeps for a room */
const rooms = new Map();
let current = null;
let noticeTimer = null;
let signedInAs = null;
/** The private and direct rooms last listed by the gateway. */
let privateRooms = [];

const store = {
  get(key, fallback) {
    try {
      const v = localStorage.getItem(key);
      return v === null ? fallback : JSON.parse(v);
    } catch {
      return fallback;
    }
  },
  set(key, value) {
    try {
      localStorage.setItem(key, JSON.stringify(value));
    } catch {
      // private mode: nothing remembered
    }
  },
};

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function notify(text) {
  ui.notice.textContent = text;
  ui.notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    ui.notice.hidden = true;
  }, 6000);
}

// ---- connection state ---------------------------------------------------------------

const STATE_TEXT = {
  idle: 'offline',
  connecting: 'connecting…',
  connected: 'online',
  reconnecting: 'reconnecting…',
  closed: 'offline',
};

function showState(s) {
  ui.conn.dataset.state = s.state;
  document.body.dataset.conn = s.state;
  let text = STATE_TEXT[s.state] || s.state;
  if (s.state === 'reconnecting' && s.delay >= 1000) text = `offline, retrying in ${Math.round(s.delay / 1000)} s`;
  ui.conn.textContent = text;
  if (s.state === 'connected') {
    ui.me.textContent = client.user;
    ui.me.hidden = false;
  }
}

// ---- messages -------------------------------------------------------------------------

function renderBody(body, enriched, me) {
  const div = el('div', 'body');
  for (const seg of segments(body, enriched)) {
    if (seg.type === 'link') {
      const a = el('a', 'link', seg.text);
      a.href = seg.href;
      a.target = '_blank';
      a.rel = 'noopener noreferrer';
      div.append(a);
    } else if (seg.type === 'mention') {
      div.append(el('span', seg.name === me ? 'mention me' : 'mention', seg.text));
    } else if (seg.type === 'hashtag') {
      div.append(el('span', 'hashtag', seg.text));
    } else {
      div.append(document.createTextNode(seg.text));
    }
  }
  return div;
}

function renderTime(sentAt) {
  const t = el('time', 'time');
  const d = new Date(sentAt);
  if (!Number.isNaN(d.getTime())) {
    t.dateTime = d.toISOString();
    t.textContent = timeFormat.format(d);
    t.title = fullFormat.format(d);
  }
  return t;
}

function renderMessage(m) {
  const me = client.user;
  const enriched = m.enriched || {};
  const li = el('li', 'msg');
  li.dataset.seq = String(m.seq);
  li.dataset.id = m.id;
  li.dataset.from = m.from;
  if (m.from === me) li.classList.add('own');
  if (Array.isArray(enriched.mentions) && enriched.mentions.includes(me)) li.classList.add('mentions-me');
  const meta = el('div', 'meta');
  meta.append(el('span', 'from', m.from), renderTime(m.sent_at));
  if (enriched.flagged) {
    li.classList.add('flagged');
    const flag = el('span', 'flag', 'flagged');
    flag.title = 'Abusive language was found and censored';
    meta.append(flag);
  }
  li.append(meta, renderBody(m.body, enriched, me));
  return li;
}

function nearBottom() {
  const s = ui.scroller;
  return s.scrollHeight - s.scrollTop - s.clientHeight < 60;
}

function scrollToBottom() {
  ui.scroller.scrollTop = ui.scroller.scrollHeight;
}

function onMessage(m) {
  const r = rooms.get(m.room);
  if (!r || r.seqs.has(m.seq)) return;
  const follow = r === current && nearBottom();
  r.timeline.append(renderMessage(m));
  r.seqs.add(m.seq);
  if (r.oldest === null || m.seq < r.oldest) r.oldest = m.seq;
  // A direct room is listed once it has a message.
  if (m.room.startsWith('dm:') && !privateRooms.includes(m.room)) refreshPrivate();
  stopTyping(r, m.from);
  const mine = r.outbox.get(m.id);
  if (mine && m.from === client.user) {
    mine.remove();
    r.outbox.delete(m.id);
  }
  if (r !== current) {
    r.unread++;
    r.badge.textContent = String(r.unread);
    r.badge.hidden = false;
  } else if (follow || m.from === client.user) {
    trim(r);
    scrollToBottom();
  }
}

/** Keeps a long-running room's DOM bounded; what is dropped can be scrolled back to. */
function trim(r) {
  let extra = r.timeline.children.length - MAX_SHOWN;
  while (extra-- > 0) {
    const first = r.timeline.firstElementChild;
    r.seqs.delete(Number(first.dataset.seq));
    first.remove();
  }
  const first = r.timeline.firstElementChild;
  if (first && Number(first.dataset.seq) > r.oldest) {
    r.oldest = Number(first.dataset.seq);
    r.noMore = false;
    updateOlder();
  }
}

async function loadOlder(r) {
  if (!r || r.loading || r.noMore || !r.ready) return;
  if (r.oldest !== null && r.oldest <= 1) {
    r.noMore = true;
    r.view.dataset.loaded = 'true';
    updateOlder();
    return;
  }
  r.loading = true;
  updateOlder();
  try {
    const before = r.oldest === null ? undefined : r.oldest;
    const page = await client.history(r.name, { before, limit: HISTORY_PAGE });
    r.loadedOnce = true;
    prepend(r, page);
    // A page may hold fewer than asked (large messages): only the first seq ends it.
    if (!page.length || page[0].seq <= 1) r.noMore = true;
  } catch (e) {
    if (rooms.get(r.name) === r) notify(`Could not load older messages: ${e.message}`);
  } finally {
    r.loading = false;
    r.view.dataset.loaded = 'true';
    updateOlder();
  }
}

function prepend(r, page) {
  const fresh = page.filter((m) => !r.seqs.has(m.seq) && (r.oldest === null || m.seq < r.oldest));
  if (!fresh.length) return;
  const first = r.timeline.children.length === 0;
  const height = ui.scroller.scrollHeight;
  const top = ui.scroller.scrollTop;
  const frag = document.createDocumentFragment();
  for (const m of fresh) {
    frag.append(renderMessage(m));
    r.seqs.add(m.seq);
  }
  r.timeline.prepend(frag);
  r.oldest = fresh[0].seq;
  if (r !== current) return;
  if (first) scrollToBottom();
  else ui.scroller.scrollTop = top + (ui.scroller.scrollHeight - height);
}

function updateOlder() {
  const r = current;
  ui.older.hidden = !r || r.noMore;
  ui.older.disabled = !!(r && r.loading);
  ui.older.textContent = r && r.loading ? 'Loading…' : 'Load older messages';
  ui.beginning.hidden = !r || !r.noMore;
}

// ---- sending ------------------------------------------------------------------------

function send() {
  const r = current;
  const body = ui.text.value;
  if (!r || body.trim() === '') return;
  const id = client.newId();
  const li = el('li', 'msg own pending');
  li.dataset.id = id;
  const meta = el('div', 'meta');
  meta.append(el('span', 'from', client.user || signedInAs || ''), el('span', 'status', 'sending…'));
  li.append(meta, renderBody(body, {}, client.user));
  r.outboxList.append(li);
  r.outbox.set(id, li);
  ui.text.value = '';
  scrollToBottom();
  client.send(r.name, body, { id }).then(
    () => {
      li.classList.remove('pending');
      const status = li.querySelector('.status');
      if (status) status.textContent = 'sent';
    },
    (e) => {
      li.classList.remove('pending');
      li.classList.add('failed');
      const status = li.querySelector('.status');
      if (status) status.textContent = `not sent: ${e.message}`;
      const dismiss = el('button', 'dismiss secondary', 'Dismiss');
      dismiss.type = 'button';
      dismiss.addEventListener('click', () => {
        li.remove();
        r.outbox.delete(id);
      });
      meta.append(dismiss);
    },
  );
}

// ---- rooms --------------------------------------------------------------------------

function saveRooms() {
  store.set('courier.rooms', [...rooms.keys()]);
}

function addRoom(name) {
  if (rooms.has(name)) {
    select(name);
    return;
  }
  const view = el('div', 'room-view');
  view.dataset.room = name;
  view.hidden = true;
  const timeline = el('ol', 'timeline');
  const outboxList = el('ol', 'outbox');
  view.append(timeline, outboxList);
  ui.timelines.append(view);

  const tab = el('li', 'room-tab');
  const button = el('button', 'room-button');
  button.type = 'button';
  button.dataset.room = name;
  const badge = el('span', 'unread');
  badge.hidden = true;
  button.append(el('span', 'room-label', name), badge);
  button.addEventListener('click', () => select(name));
  tab.append(button);
  ui.roomList.append(tab);

  const r = {
    name,
    view,
    timeline,
    outboxList,
    outbox: new Map(),
    tab,
    button,
    badge,
    seqs: new Set(),
    oldest: null,
    ready: false,
    loading: false,
    noMore: false,
    loadedOnce: false,
    unread: 0,
    online: new Set(), // who has a connection in the room, on any gateway
    typers: new Map(), // user -> timer that takes their "is typing" away
  };
  rooms.set(name, r);
  saveRooms();
  select(name);
  client.join(name).then(
    ({ head }) => {
      if (rooms.get(name) !== r) return;
      r.ready = true;
      r.view.dataset.joined = 'true';
      if (name.startsWith('dm:') || !privateRooms.includes(name)) refreshPrivate();
      if (r.oldest === null || head + 1 < r.oldest) r.oldest = head + 1;
      loadOlder(r);
    },
    (e) => {
      if (rooms.get(name) !== r) return;
      notify(e.code === 'forbidden' ? `You are not a member of the private room ${name}.` : `Could not join ${name}: ${e.message}`);
      removeRoom(name);
    },
  );
}

// ---- private and direct rooms -------------------------------------------------------

/** Asks the gateway which private and direct rooms this user has, and lists them. */
function refreshPrivate() {
  client.listRooms().then(showPrivate, () => {
    // Offline or the store is slow: the list is refreshed on the next connect or join.
  });
}

function showPrivate(names) {
  privateRooms = names;
  const me = client.user;
  const items = names.map((name) => {
    const li = el('li', 'room-tab');
    const button = el('button', 'room-button');
    button.type = 'button';
    button.dataset.room = name;
    // A direct room is shown by the other person's name.
    const pair = directPair(name);
    const label = pair ? (pair[0] === me ? pair[1] : pair[0]) : name;
    if (pair) button.classList.add('dm');
    button.append(el('span', 'room-label', label));
    button.title = name;
    button.addEventListener('click', () => addRoom(name));
    li.append(button);
    return li;
  });
  ui.privateList.replaceChildren(...items);
  ui.privateEmpty.hidden = names.length > 0;
}

/** The two users of a direct room `dm:A:B`, or null. */
function directPair(name) {
  const parts = name.split(':');
  return parts.length === 3 && parts[0] === 'dm' ? [parts[1], parts[2]] : null;
}

/** The direct room of `me` and `other`: `dm:A:B` with A < B in byte order (names are ASCII). */
function directRoom(me, other) {
  return me < other ? `dm:${me}:${other}` : `dm:${other}:${me}`;
}

// ---- presence and typing ------------------------------------------------------------

/** Asks who is in the room (after every join: what changed while away is not replayed). */
function refreshPresence(r) {
  client.presence(r.name).then(
    ({ users }) => {
      if (rooms.get(r.name) !== r) return;
      r.online = new Set(users);
      if (r === current) showPresence(r);
    },
    () => {
      // Offline: asked again at the next joined.
    },
  );
}

function onMember({ room, user, state }) {
  const r = rooms.get(room);
  if (!r) return;
  if (state === 'online') r.online.add(user);
  else {
    r.online.delete(user);
    stopTyping(r, user);
  }
  if (r === current) showPresence(r);
}

function onTyping({ room, user }) {
  const r = rooms.get(room);
  if (!r || user === client.user) return;
  clearTimeout(r.typers.get(user));
  r.typers.set(
    user,
    setTimeout(() => stopTyping(r, user), TYPING_SHOWN_MS),
  );
  if (r === current) showTyping(r);
}

function stopTyping(r, user) {
  if (!r.typers.has(user)) return;
  clearTimeout(r.typers.get(user));
  r.typers.delete(user);
  if (r === current) showTyping(r);
}

function showPresence(r) {
  const users = r ? [...r.online].sort() : [];
  ui.online.textContent = users.length ? `Online: ${users.join(', ')}` : '';
  ui.online.title = ui.online.textContent;
}

function showTyping(r) {
  const names = r ? [...r.typers.keys()].sort() : [];
  let text = '';
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = 'Several people are typing…';
  ui.typing.textContent = text;
}

function removeRoom(name) {
  const r = rooms.get(name);
  if (!r) return;
  rooms.delete(name);
  for (const timer of r.typers.values()) clearTimeout(timer);
  r.view.remove();
  r.tab.remove();
  saveRooms();
  if (current === r) {
    current = null;
    const next = rooms.keys().next();
    if (!next.done) select(next.value);
    else showRoom(null);
  }
}

function select(name) {
  const r = rooms.get(name);
  if (!r) return;
  current = r;
  showRoom(r);
}

function showRoom(r) {
  for (const other of rooms.values()) {
    other.view.hidden = other !== r;
    other.button.setAttribute('aria-current', other === r ? 'true' : 'false');
  }
  ui.title.textContent = r ? r.name : 'No room';
  ui.leave.hidden = !r;
  ui.text.disabled = !r;
  ui.composer.querySelector('button').disabled = !r;
  if (r) {
    r.unread = 0;
    r.badge.hidden = true;
    store.set('courier.current', r.name);
  }
  showPresence(r);
  showTyping(r);
  updateOlder();
  scrollToBottom();
}

// ---- start --------------------------------------------------------------------------

function start({ user, token }) {
  signedInAs = user || null;
  // A token rides in the subprotocol, not the URL: it stays out of logs and history.
  client = new CourierClient({ user, token, tokenVia: 'protocol' });
  client.on('state', showState);
  client.on('message', onMessage);
  client.on('error', (e) => notify(e.message));
  client.on('state', (st) => {
    if (st.state === 'connected') refreshPrivate();
  });
  // The gateway took us out of a room we may no longer use; the client forgot it.
  client.on('left', ({ room, reason }) => {
    if (reason !== 'removed') return;
    removeRoom(room);
    notify(`You were removed from ${room}: you are no longer a member of this private room.`);
    refreshPrivate();
  });
  // The first page of history may have failed with the connection: retry on rejoin.
  client.on('joined', ({ room }) => {
    const r = rooms.get(room);
    if (r && r.ready && !r.loadedOnce) loadOlder(r);
    if (r) refreshPresence(r);
  });
  client.on('member', onMember);
  client.on('typing', onTyping);
  client.connect();
  ui.login.hidden = true;
  ui.chat.hidden = false;
  const saved = store.get('courier.rooms', null);
  const names = Array.isArray(saved) && saved.length ? saved.filter((n) => typeof n === 'string' && NAME_RE.test(n)) : ['lobby'];
  for (const n of names.length ? names : ['lobby']) addRoom(n);
  const last = store.get('courier.current', null);
  if (rooms.has(last)) select(last);
  ui.text.focus();
}

ui.loginForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const name = ui.name.value.trim();
  if (!NAME_RE.test(name)) {
    ui.loginError.textContent = 'Use 1 to 64 letters, digits, or _ . : -';
    return;
  }
  store.set('courier.name', name);
  start({ user: name });
});

ui.joinForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const name = ui.roomName.value.trim();
  if (!NAME_RE.test(name)) {
    notify('Room names are 1 to 64 letters, digits, or _ . : -');
    return;
  }
  ui.roomName.value = '';
  addRoom(name);
});

ui.dmForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const other = ui.dmName.value.trim();
  const me = client.user || signedInAs;
  if (!NAME_RE.test(other) || other.includes(':')) {
    notify('User names are 1 to 64 letters, digits, or _ . -');
    return;
  }
  if (!me || other === me) {
    notify('Pick someone else to message.');
    return;
  }
  ui.dmName.value = '';
  addRoom(directRoom(me, other));
});

ui.leave.addEventListener('click', () => {
  if (!current) return;
  const name = current.name;
  client.leave(name);
  removeRoom(name);
});

ui.composer.addEventListener('submit', (ev) => {
  ev.preventDefault();
  send();
});

// The client sends at most one typing signal per room every 2 s, however fast this fires.
ui.text.addEventListener('input', () => {
  if (current && current.ready && ui.text.value.trim()) client.typing(current.name);
});

ui.text.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    send();
  }
});

ui.older.addEventListener('click', () => loadOlder(current));
ui.scroller.addEventListener('scroll', () => {
  if (ui.scroller.scrollTop < 80) loadOlder(current);
});

// A token in the fragment (#token=...) signs in with a JWT; else pick a name.
const fromHash = new URLSearchParams(location.hash.slice(1)).get('token');
if (fromHash) {
  history.replaceState(null, '', location.pathname + location.search);
  start({ token: fromHash });
} else {
  ui.name.value = store.get('courier.name', '') || '';
  ui.name.focus();
}
