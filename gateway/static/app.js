// The chat page at `/`: pick a name, join rooms, read and write messages.
//
// All the reliability (reconnects, resume, dedupe, re-sending unacked messages) is in
// client.js; this file only draws. Every piece of user text goes into the DOM through
// textContent or text nodes, never as HTML.

import { CourierClient, NAME_RE, isMessage, segments } from './client.js';

const HISTORY_PAGE = 50;
const MAX_SHOWN = 1000;
/** How long "… is typing" stays after a typing event (they come every 2 s while typing). */
const TYPING_SHOWN_MS = 3000;
/** The reactions offered on every message. */
const COMMON_EMOJI = ['👍', '❤️', '😂', '🎉', '😮', '😢'];
/** Longest quote of the message a reply answers. */
const QUOTE_CHARS = 80;
/** At most one `read` per room this often. */
const READ_EVERY_MS = 1000;
/** Names in "Seen by …" before "and N more". */
const SEEN_NAMES = 5;

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
  replyBar: $('reply-bar'),
  replyText: $('reply-text'),
  replyCancel: $('reply-cancel'),
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

function button(className, text, label) {
  const b = el('button', className, text);
  b.type = 'button';
  if (label) {
    b.setAttribute('aria-label', label);
    b.title = label;
  }
  return b;
}

/** A short one-line excerpt of a message body. */
function excerpt(body) {
  const line = String(body || '').replace(/\s+/g, ' ').trim();
  const chars = [...line];
  return chars.length > QUOTE_CHARS ? `${chars.slice(0, QUOTE_CHARS - 1).join('')}…` : line;
}

/** What a reply quotes: the original from the client's state, else its seq. */
function fillQuote(q, room, seq) {
  const original = client.message(room, seq);
  q.replaceChildren();
  q.classList.toggle('known', !!original);
  if (!original) {
    q.append(document.createTextNode(`reply to #${seq}`));
    return;
  }
  q.append(el('span', 'quote-from', original.from), document.createTextNode(' '));
  if (original.deleted) q.append(el('span', 'quote-text deleted', 'message deleted'));
  else q.append(el('span', 'quote-text', excerpt(original.body)));
}

function renderQuote(room, seq) {
  const q = el('div', 'quote');
  q.dataset.target = String(seq);
  q.title = `In reply to message #${seq}`;
  fillQuote(q, room, seq);
  return q;
}

/** One message in its latest state, with what can be done to it. */
function renderMessage(room, m) {
  const me = client.user;
  const r = rooms.get(room);
  const enriched = m.enriched || {};
  const li = el('li', 'msg');
  li.dataset.seq = String(m.seq);
  li.dataset.id = m.id;
  li.dataset.from = m.from;
  const own = m.from === me;
  if (own) li.classList.add('own');
  if (!m.deleted && Array.isArray(enriched.mentions) && enriched.mentions.includes(me)) li.classList.add('mentions-me');
  const meta = el('div', 'meta');
  meta.append(el('span', 'from', m.from), renderTime(m.sent_at));
  if (m.edited_at && !m.deleted) {
    const edited = el('span', 'edited', '(edited)');
    const d = new Date(m.edited_at);
    if (!Number.isNaN(d.getTime())) edited.title = `Edited ${fullFormat.format(d)}`;
    meta.append(edited);
  }
  if (enriched.flagged && !m.deleted) {
    li.classList.add('flagged');
    const flag = el('span', 'flag', 'flagged');
    flag.title = 'Abusive language was found and censored';
    meta.append(flag);
  }
  if (!m.deleted) meta.append(renderActions(room, m, own));
  li.append(meta);
  if (Number.isInteger(m.reply_to)) li.append(renderQuote(room, m.reply_to));
  if (m.deleted) {
    li.classList.add('deleted');
    li.append(el('div', 'body deleted', 'message deleted'));
    return li;
  }
  if (r && r.editing && r.editing.seq === m.seq && own) {
    li.classList.add('editing');
    li.append(renderEditor(r, m));
  } else {
    li.append(renderBody(m.body, enriched, me));
  }
  const chips = renderReactions(room, m);
  if (chips) li.append(chips);
  if (r && r.picking === m.seq) li.append(renderPicker(room, m));
  if (r && r.confirming === m.seq && own) li.append(renderConfirm(r, m));
  return li;
}

function renderActions(room, m, own) {
  const bar = el('span', 'actions');
  const r = rooms.get(room);
  const reactB = button('act react-toggle', '☺+', 'Add a reaction');
  reactB.setAttribute('aria-expanded', String(!!(r && r.picking === m.seq)));
  reactB.addEventListener('click', () => togglePicker(room, m.seq));
  const replyB = button('act reply', 'Reply', `Reply to ${m.from}`);
  replyB.addEventListener('click', () => startReply(room, m.seq));
  bar.append(reactB, replyB);
  if (own) {
    const editB = button('act edit', 'Edit', 'Edit your message');
    editB.addEventListener('click', () => startEdit(room, m.seq));
    const delB = button('act delete', 'Delete', 'Delete your message');
    delB.addEventListener('click', () => askDelete(room, m.seq));
    bar.append(editB, delB);
  }
  return bar;
}

/** Reactions as chips: emoji and count; pressed when one of them is yours. Click toggles. */
function renderReactions(room, m) {
  const all = m.reactions || {};
  const emoji = Object.keys(all).filter((e) => Array.isArray(all[e]) && all[e].length);
  if (!emoji.length) return null;
  // The common ones in their usual order, then the others as they sort.
  const rank = (e) => {
    const i = COMMON_EMOJI.indexOf(e);
    return i === -1 ? COMMON_EMOJI.length : i;
  };
  emoji.sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
  const box = el('div', 'reactions');
  box.setAttribute('role', 'group');
  box.setAttribute('aria-label', 'Reactions');
  for (const e of emoji) {
    const users = all[e];
    const mine = users.includes(client.user);
    const chip = el('button', 'chip');
    chip.type = 'button';
    chip.dataset.emoji = e;
    chip.setAttribute('aria-pressed', String(mine));
    chip.append(el('span', 'chip-emoji', e), el('span', 'chip-count', String(users.length)));
    const who = users.join(', ');
    chip.title = `${e} ${who}`;
    chip.setAttribute('aria-label', `${e} ${users.length}: ${who}. ${mine ? 'Click to take yours back' : 'Click to react'}`);
    chip.addEventListener('click', () => toggleReaction(room, m.seq, e));
    box.append(chip);
  }
  return box;
}

function renderPicker(room, m) {
  const box = el('div', 'picker');
  box.setAttribute('role', 'group');
  box.setAttribute('aria-label', 'Pick a reaction');
  const all = m.reactions || {};
  for (const e of COMMON_EMOJI) {
    const mine = Array.isArray(all[e]) && all[e].includes(client.user);
    const b = button('pick', e, `React with ${e}`);
    b.dataset.emoji = e;
    b.setAttribute('aria-pressed', String(mine));
    b.addEventListener('click', () => {
      const r = rooms.get(room);
      if (r) r.picking = null;
      toggleReaction(room, m.seq, e);
      refresh(room, m.seq);
    });
    box.append(b);
  }
  return box;
}

function renderEditor(r, m) {
  const form = el('form', 'editor');
  form.noValidate = true;
  const label = el('label', 'sr-only', 'Edit your message');
  const area = el('textarea', 'edit-text');
  const fieldId = `edit-${r.view.dataset.room}-${m.seq}`.replace(/[^A-Za-z0-9_-]/g, '_');
  area.id = fieldId;
  label.htmlFor = fieldId;
  area.rows = 2;
  area.value = r.editing.draft;
  area.addEventListener('input', () => {
    if (r.editing) r.editing.draft = area.value;
  });
  area.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape') {
      ev.preventDefault();
      stopEdit(r.name, m.seq);
    } else if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      saveEdit(r.name, m.seq);
    }
  });
  const save = el('button', 'save', 'Save');
  save.type = 'submit';
  const cancel = button('cancel secondary', 'Cancel');
  cancel.addEventListener('click', () => stopEdit(r.name, m.seq));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    saveEdit(r.name, m.seq);
  });
  form.append(label, area, save, cancel);
  return form;
}

function renderConfirm(r, m) {
  const box = el('div', 'confirm');
  box.setAttribute('role', 'group');
  box.setAttribute('aria-label', 'Delete this message?');
  const yes = button('confirm-delete danger', 'Delete', 'Delete this message for everyone');
  yes.addEventListener('click', () => {
    r.confirming = null;
    client.deleteMessage(r.name, m.seq).catch((e) => notify(`Could not delete: ${e.message}`));
    refresh(r.name, m.seq);
  });
  const no = button('cancel secondary', 'Keep', 'Keep this message');
  no.addEventListener('click', () => {
    r.confirming = null;
    refresh(r.name, m.seq, '.act.delete');
  });
  box.append(el('span', 'confirm-text', 'Delete this message for everyone?'), yes, no);
  return box;
}

// ---- acting on a message ------------------------------------------------------------

/** Draws message `seq` of `room` again from the client's state; `focus` a selector in it. */
function refresh(room, seq, focus) {
  const r = rooms.get(room);
  if (!r) return;
  const li = r.timeline.querySelector(`li.msg[data-seq="${seq}"]`);
  const m = client.message(room, seq);
  if (!li || !m) return;
  const next = renderMessage(room, m);
  li.replaceWith(next);
  if (focus) {
    const f = next.querySelector(focus);
    if (f) f.focus();
  }
  if (r.seenLi === li) r.seenLi = null;
  showSeen(r);
}

function togglePicker(room, seq) {
  const r = rooms.get(room);
  if (!r) return;
  r.picking = r.picking === seq ? null : seq;
  refresh(room, seq, r.picking === seq ? '.picker .pick' : '.react-toggle');
}

function toggleReaction(room, seq, emoji) {
  const m = client.message(room, seq);
  if (!m || m.deleted) return;
  const users = (m.reactions && m.reactions[emoji]) || [];
  const remove = users.includes(client.user);
  client.react(room, seq, emoji, { remove }).catch((e) => notify(`Could not react: ${e.message}`));
}

function startEdit(room, seq) {
  const r = rooms.get(room);
  const m = client.message(room, seq);
  if (!r || !m || m.deleted || m.from !== client.user) return;
  const was = r.editing;
  r.editing = { seq, draft: m.body };
  if (was && was.seq !== seq) refresh(room, was.seq);
  refresh(room, seq, '.edit-text');
}

function stopEdit(room, seq) {
  const r = rooms.get(room);
  if (!r || !r.editing || r.editing.seq !== seq) return;
  r.editing = null;
  refresh(room, seq, '.act.edit');
}

function saveEdit(room, seq) {
  const r = rooms.get(room);
  const m = client.message(room, seq);
  if (!r || !r.editing || r.editing.seq !== seq) return;
  const body = r.editing.draft;
  if (!m || body.trim() === '' || body === m.body) {
    stopEdit(room, seq);
    return;
  }
  r.editing = null;
  refresh(room, seq);
  client.edit(room, seq, body).catch((e) => notify(`Could not edit: ${e.message}`));
}

function askDelete(room, seq) {
  const r = rooms.get(room);
  if (!r) return;
  r.confirming = seq;
  refresh(room, seq, '.confirm-delete');
}

function startReply(room, seq) {
  const r = rooms.get(room);
  if (!r) return;
  r.replyTo = seq;
  if (r === current) showReply(r);
  ui.text.focus();
}

function showReply(r) {
  const seq = r && r.replyTo;
  ui.replyBar.hidden = !seq;
  if (!seq) return;
  const m = client.message(r.name, seq);
  ui.replyText.replaceChildren(
    document.createTextNode('Replying to '),
    m ? el('strong', 'reply-from', m.from) : document.createTextNode(`#${seq}`),
  );
  if (m) ui.replyText.append(document.createTextNode(`: ${m.deleted ? 'message deleted' : excerpt(m.body)}`));
}

function cancelReply() {
  if (!current) return;
  current.replyTo = null;
  showReply(current);
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
  if (!r) return;
  if (r.oldest === null || m.seq < r.oldest) r.oldest = m.seq;
  // Edits, deletes and reactions change a message already shown: see onUpdate.
  if (!isMessage(m) || r.seqs.has(m.seq)) {
    markRead(r);
    return;
  }
  const follow = r === current && nearBottom();
  r.timeline.append(renderMessage(r.name, client.message(r.name, m.seq) || m));
  r.seqs.add(m.seq);
  // A direct room is listed once it has a message.
  if (m.room.startsWith('dm:') && !privateRooms.includes(m.room)) refreshPrivate();
  stopTyping(r, m.from);
  const mine = r.outbox.get(m.id);
  if (mine && m.from === client.user) {
    mine.remove();
    r.outbox.delete(m.id);
  }
  if (m.from === client.user) showSeen(r);
  if (r !== current) {
    if (!client.readState(r.name) && m.from !== client.user) {
      // A gateway without read state: count here what arrives while away.
      r.unread++;
      showBadge(r);
    }
  } else {
    if (follow || m.from === client.user) {
      trim(r);
      scrollToBottom();
    }
    markRead(r);
  }
}

/** A message's state changed (edited, deleted, reacted to): draw it, and the replies quoting it. */
function onUpdate({ room, seq, message, cause }) {
  if (cause === 'message') return; // drawn by onMessage
  const r = rooms.get(room);
  if (!r) return;
  if (message.deleted) {
    if (r.editing && r.editing.seq === seq) r.editing = null;
    if (r.confirming === seq) r.confirming = null;
    if (r.picking === seq) r.picking = null;
  }
  const li = r.timeline.querySelector(`li.msg[data-seq="${seq}"]`);
  if (li) {
    const keep = li.contains(document.activeElement) ? activeSelector(li) : null;
    li.replaceWith(renderMessage(room, message));
    if (keep) {
      const f = r.timeline.querySelector(`li.msg[data-seq="${seq}"] ${keep}`);
      if (f) f.focus();
    }
    if (r.seenLi === li) r.seenLi = null;
  }
  for (const q of r.view.querySelectorAll(`.quote[data-target="${seq}"]`)) fillQuote(q, room, seq);
  if (r.replyTo === seq && r === current) showReply(r);
  if (message.from === client.user) showSeen(r);
}

/** A selector that finds the focused control again in a redrawn message. */
function activeSelector(li) {
  const a = document.activeElement;
  if (!a || !li.contains(a)) return null;
  if (a.classList.contains('edit-text')) return '.edit-text';
  if (a.dataset.emoji) return `${a.classList.contains('chip') ? '.chip' : '.pick'}[data-emoji="${CSS.escape(a.dataset.emoji)}"]`;
  for (const c of ['react-toggle', 'reply', 'edit', 'delete', 'confirm-delete']) if (a.classList.contains(c)) return `.${c}`;
  return null;
}

// ---- read state ---------------------------------------------------------------------

/** The badge beside a room's name: its unread count while it is not the room shown. */
function showBadge(r) {
  const rs = client.readState(r.name);
  const n = rs ? rs.unread : r.unread;
  const show = n > 0 && !(r === current && pageVisible());
  r.badge.textContent = String(n);
  r.badge.hidden = !show;
  r.badgeLabel.textContent = show ? ` (${n} unread)` : '';
}

function pageVisible() {
  return document.visibilityState !== 'hidden';
}

/**
 * Tells the gateway this user has read the room shown up to its newest seq: at most once
 * a second per room; what arrives meanwhile is read by the one that follows.
 */
function markRead(r) {
  if (!r || r !== current || !r.ready || !pageVisible()) return;
  const newest = client.lastSeq(r.name);
  const rs = client.readState(r.name);
  if (!rs || newest === null || newest <= rs.read) return;
  if (r.readTimer !== null) return;
  const wait = r.readAt + READ_EVERY_MS - Date.now();
  if (wait > 0) {
    r.readTimer = setTimeout(() => {
      r.readTimer = null;
      if (rooms.get(r.name) === r) markRead(r);
    }, wait);
    return;
  }
  r.readAt = Date.now();
  client.read(r.name, newest).catch(() => {
    // Offline: read again after the next joined.
  });
}

function onRead({ room }) {
  const r = rooms.get(room);
  if (!r) return;
  showBadge(r);
  markRead(r);
}

/** "Seen by alice, bob" under this user's last message: who has read up to it. */
function showSeen(r) {
  if (r.seenLi && r.seenLi.isConnected) r.seenLi.querySelector('.seen')?.remove();
  r.seenLi = null;
  const me = client.user;
  let last = null;
  for (let li = r.timeline.lastElementChild; li; li = li.previousElementSibling) {
    if (li.dataset.from === me && !li.classList.contains('deleted')) {
      last = li;
      break;
    }
  }
  if (!last) return;
  const seq = Number(last.dataset.seq);
  const reads = client.seenBy(r.name);
  const who = Object.keys(reads)
    .filter((u) => u !== me && reads[u] >= seq)
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  if (!who.length) return;
  const shown = who.slice(0, SEEN_NAMES).join(', ');
  const more = who.length > SEEN_NAMES ? ` and ${who.length - SEEN_NAMES} more` : '';
  const p = el('p', 'seen', `Seen by ${shown}${more}`);
  last.append(p);
  r.seenLi = last;
}

function refreshReads(r) {
  client.reads(r.name).then(
    () => {
      if (rooms.get(r.name) === r) showSeen(r);
    },
    () => {
      // Offline, or a gateway without `reads`: asked again at the next joined.
    },
  );
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
  const older = page.filter((m) => r.oldest === null || m.seq < r.oldest);
  if (!older.length) return;
  r.oldest = older[0].seq;
  // The log's events are already in each message's latest state.
  const fresh = older.filter((m) => isMessage(m) && !r.seqs.has(m.seq));
  if (!fresh.length) return;
  const first = r.timeline.children.length === 0;
  const height = ui.scroller.scrollHeight;
  const top = ui.scroller.scrollTop;
  const frag = document.createDocumentFragment();
  for (const m of fresh) {
    frag.append(renderMessage(r.name, client.message(r.name, m.seq) || m));
    r.seqs.add(m.seq);
  }
  r.timeline.prepend(frag);
  // Replies below may quote what just came in.
  for (const q of r.view.querySelectorAll('.quote:not(.known)')) fillQuote(q, r.name, Number(q.dataset.target));
  showSeen(r);
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
  const replyTo = r.replyTo || undefined;
  const li = el('li', 'msg own pending');
  li.dataset.id = id;
  const meta = el('div', 'meta');
  meta.append(el('span', 'from', client.user || signedInAs || ''), el('span', 'status', 'sending…'));
  li.append(meta);
  if (replyTo) li.append(renderQuote(r.name, replyTo));
  li.append(renderBody(body, {}, client.user));
  r.outboxList.append(li);
  r.outbox.set(id, li);
  ui.text.value = '';
  r.replyTo = null;
  showReply(r);
  scrollToBottom();
  client.send(r.name, body, { id, replyTo }).then(
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
  badge.setAttribute('aria-hidden', 'true');
  const badgeLabel = el('span', 'sr-only');
  button.append(el('span', 'room-label', name), badge, badgeLabel);
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
    badgeLabel,
    seqs: new Set(),
    oldest: null,
    ready: false,
    loading: false,
    noMore: false,
    loadedOnce: false,
    unread: 0, // counted here only when the gateway sends no read state
    readAt: 0, // when the last `read` went out
    readTimer: null,
    replyTo: null, // seq the next message answers
    editing: null, // {seq, draft}: the message being edited
    picking: null, // seq whose reaction picker is open
    confirming: null, // seq whose delete waits for a confirmation
    seenLi: null, // the message that shows "Seen by"
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
      markRead(r);
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
  clearTimeout(r.readTimer);
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
    store.set('courier.current', r.name);
  }
  for (const other of rooms.values()) showBadge(other);
  showPresence(r);
  showTyping(r);
  showReply(r);
  if (r) markRead(r);
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
  client.on('update', onUpdate);
  client.on('read', onRead);
  client.on('reads', ({ room }) => {
    const r = rooms.get(room);
    if (r) showSeen(r);
  });
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
    if (r) {
      refreshPresence(r);
      refreshReads(r);
      showBadge(r);
      markRead(r);
    }
  });
  client.on('member', onMember);
  client.on('typing', onTyping);
  client.connect();
  ui.login.hidden = true;
  ui.chat.hidden = false;
  const saved = store.get('courier.rooms', null);
  // Read before the rooms are added: showing each one remembers it as the current one.
  const last = store.get('courier.current', null);
  const names = Array.isArray(saved) && saved.length ? saved.filter((n) => typeof n === 'string' && NAME_RE.test(n)) : ['lobby'];
  for (const n of names.length ? names : ['lobby']) addRoom(n);
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

ui.replyCancel.addEventListener('click', () => {
  cancelReply();
  ui.text.focus();
});

// Back in the tab: what arrived meanwhile is read now.
document.addEventListener('visibilitychange', () => {
  if (current) markRead(current);
  for (const r of rooms.values()) showBadge(r);
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
  } else if (ev.key === 'Escape' && current && current.replyTo) {
    ev.preventDefault();
    cancelReply();
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
