// courier client: a WebSocket chat client that never loses or repeats a message.
//
// Plain modern JavaScript, one ES module, no dependencies and no build step. The gateway
// serves it at /client.js; docs/client.md documents it. It speaks the wire contract of
// docs/protocol.md: it reconnects by itself (backoff with jitter, at once on close code
// 1012), rejoins every room with `since` = the last seq it delivered, pages through
// `history` when a replay was truncated, drops what it already delivered, and keeps every
// unacked send to re-send it with the same id until the gateway acks it. It keeps the
// latest state of every message it saw (edits, deletes and reactions are events of the
// room's log, applied by `RoomState`), and each room's read cursor and unread count.

/** Room and user names of the contract. */
export const NAME_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
/** Largest message body, in UTF-8 bytes. */
export const MAX_BODY_BYTES = 4096;
/** Largest `history` page the gateway serves (a page of large messages holds fewer). */
export const HISTORY_MAX = 200;
/** The subprotocol the gateway speaks; offered with the token when `tokenVia` is `protocol`. */
export const SUBPROTOCOL = 'courier';
/** Longest reaction emoji, in UTF-8 bytes. */
export const MAX_EMOJI_BYTES = 32;

/** Error codes the client retries by itself (the command was not run). */
const RETRIED = new Set(['unavailable', 'rate_limited']);
const OPEN = 1;

const DEFAULTS = {
  url: undefined,
  user: undefined,
  token: undefined,
  tokenVia: 'query',
  minDelay: 250,
  maxDelay: 10000,
  factor: 2,
  jitter: 0.5,
  connectTimeout: 10000,
  pingInterval: 25000,
  pongTimeout: 10000,
  maxPending: 1000,
  maxBuffered: 2000,
  historyRetries: 5,
  typingEvery: 2000,
  maxMessages: 5000,
  maxOrphans: 2000,
  idPrefix: undefined,
  WebSocket: undefined,
  setTimeout: undefined,
  clearTimeout: undefined,
  random: Math.random,
  now: () => Date.now(),
};

/** An error of the protocol (`code` is the contract's error code) or of the client. */
export class CourierError extends Error {
  constructor(code, message, extra = {}) {
    super(message || code);
    this.name = 'CourierError';
    this.code = code;
    if (extra.room !== undefined) this.room = extra.room;
    if (extra.id !== undefined) this.id = extra.id;
  }
}

/** UTF-8 length of a string, without allocating. */
function utf8Length(s) {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}

/** A message id the contract accepts: 1 to 128 bytes, no control characters. */
function validId(id) {
  // eslint-disable-next-line no-control-regex
  return typeof id === 'string' && id.length > 0 && utf8Length(id) <= 128 && !/[\u0000-\u001f\u007f-\u009f]/.test(id);
}

// ---- the room log's reducer ----------------------------------------------------------

/** `enriched` of a deleted message. */
function emptyEnriched() {
  return { mentions: [], hashtags: [], links: [], lang: null, flagged: false };
}

/** True for a log entry that is a message (`kind` absent or `message`), not an event on one. */
export function isMessage(frame) {
  return frame.kind === undefined || frame.kind === null || frame.kind === 'message';
}

/**
 * The latest state of message `target` after the event `ev` (an edit, a delete or a
 * reaction; see docs/protocol.md), as a new object; `null` when `ev` changes nothing
 * (a deleted target, a reaction already there or not there to remove, an unknown kind).
 * `target` is never modified. Reaction user lists stay sorted by name (byte order: the
 * names are ASCII); an emoji whose list empties is dropped, and `reactions` with it when
 * it empties.
 */
export function applyEvent(target, ev) {
  if (!target || target.deleted) return null;
  switch (ev.kind) {
    case 'edit':
      return {
        ...target,
        body: typeof ev.body === 'string' ? ev.body : '',
        enriched: ev.enriched || emptyEnriched(),
        edited_at: ev.sent_at,
      };
    case 'delete': {
      const next = { ...target, deleted: true, body: '', enriched: emptyEnriched() };
      delete next.reactions;
      return next;
    }
    case 'reaction': {
      if (typeof ev.emoji !== 'string' || ev.emoji === '' || typeof ev.from !== 'string') return null;
      const all = target.reactions || {};
      const users = Object.prototype.hasOwnProperty.call(all, ev.emoji) ? all[ev.emoji] : [];
      const has = users.includes(ev.from);
      if (ev.remove ? !has : has) return null;
      let list;
      if (ev.remove) {
        list = users.filter((u) => u !== ev.from);
      } else {
        // Plain comparison: the byte order of ASCII names, as the store sorts them.
        let at = 0;
        while (at < users.length && users[at] < ev.from) at++;
        list = [...users.slice(0, at), ev.from, ...users.slice(at)];
      }
      const reactions = { ...all };
      if (list.length) reactions[ev.emoji] = list;
      else delete reactions[ev.emoji];
      const next = { ...target, reactions };
      if (Object.keys(reactions).length === 0) delete next.reactions;
      return next;
    }
    default:
      return null; // a kind this client does not know
  }
}

/**
 * The latest state of a room's messages, built by applying its log's `message` frames
 * (live, replayed, paged), each at most once per `seq`: a message (kind `message`) is
 * kept as given, replacing what was known of its `seq` (from the store it comes in its
 * latest state); an edit, a delete or a reaction changes its target when the target is
 * known and not deleted, and is ignored otherwise. The same rule as the store's, so a
 * replay from any position ends in the store's latest state (shared/src/event.rs).
 */
export class RoomState {
  constructor() {
    /** @type {Map<number, object>} seq -> message in its latest state */
    this._messages = new Map();
  }

  /**
   * Applies one frame. Returns `{seq, message, cause}` when a message changed (`seq`
   * and `message` are the message's, `cause` the frame's kind), else `null`.
   */
  apply(frame) {
    if (!frame || !Number.isInteger(frame.seq)) return null;
    if (isMessage(frame)) {
      this._messages.set(frame.seq, frame);
      return { seq: frame.seq, message: frame, cause: 'message' };
    }
    const t = this._messages.get(frame.target);
    const next = applyEvent(t, frame);
    if (!next) return null;
    this._messages.set(frame.target, next);
    return { seq: frame.target, message: next, cause: frame.kind };
  }

  /** The message `seq` in its latest state, or `undefined`. */
  get(seq) {
    return this._messages.get(seq);
  }

  has(seq) {
    return this._messages.has(seq);
  }

  delete(seq) {
    return this._messages.delete(seq);
  }

  clear() {
    this._messages.clear();
  }

  get size() {
    return this._messages.size;
  }

  /** The messages, sorted by `seq`, each in its latest state. */
  messages() {
    return [...this._messages.keys()].sort((a, b) => a - b).map((s) => this._messages.get(s));
  }
}

/** A reaction the contract accepts: 1 to 32 bytes, no whitespace or control character. */
function validEmoji(emoji) {
  // eslint-disable-next-line no-control-regex
  return typeof emoji === 'string' && emoji.length > 0 && utf8Length(emoji) <= MAX_EMOJI_BYTES && !/[\s\u0000-\u001f\u007f-\u009f]/u.test(emoji);
}

/** A message body the contract accepts, or the CourierError refusing it. */
function bodyError(body, room, id) {
  if (typeof body !== 'string' || body.length === 0) {
    return new CourierError('bad_request', 'body must be a non-empty string', { room, id });
  }
  if (utf8Length(body) > MAX_BODY_BYTES) {
    return new CourierError('too_large', `body over ${MAX_BODY_BYTES} bytes`, { room, id });
  }
  return null;
}

const isSeq = (n) => Number.isInteger(n) && n >= 1;

function defaultUrl() {
  const loc = globalThis.location;
  if (!loc || !loc.host) {
    throw new CourierError('bad_request', 'no url given and no page location to derive one from');
  }
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/ws`;
}

/**
 * A connection to a courier gateway that survives disconnects.
 *
 * Events (subscribe with `on(type, fn)`, which returns a function that unsubscribes):
 * `message`, `update`, `read`, `reads`, `state`, `joined`, `left`, `ack`, `member`,
 * `typing`, `error`. See docs/client.md.
 */
export class CourierClient {
  constructor(options = {}) {
    const o = { ...DEFAULTS };
    for (const [k, v] of Object.entries(options)) if (v !== undefined) o[k] = v;
    this._o = o;
    this._WS = o.WebSocket || globalThis.WebSocket;
    if (typeof this._WS !== 'function') throw new TypeError('no WebSocket implementation available');
    this._setTimeout = o.setTimeout || globalThis.setTimeout.bind(globalThis);
    this._clearTimeout = o.clearTimeout || globalThis.clearTimeout.bind(globalThis);
    this._listeners = new Map();
    this._state = 'idle';
    this._ws = null;
    this._gen = 0; // bumps on every connection attempt; stale socket callbacks compare it
    this._attempt = 0; // failed attempts since the last good connection
    this._timers = { reconnect: null, connect: null, ping: null };
    this._lastHeard = 0;
    this._closing = false;
    this._rooms = new Map(); // name -> room record
    this._pending = new Map(); // id -> pending send, in send order
    this._requests = new Map(); // ref -> {resolve, reject, kind, room}
    this._nextRef = 1;
    this._nextId = 1;
    this._typedAt = new Map(); // room -> when this client last sent `typing` there
    this._idPrefix = o.idPrefix || randomPrefix(o.random);
    this.user = null;
    this.session = null;
    this.gateway = null;
  }

  // ---- public API -------------------------------------------------------------------

  /** `idle`, `connecting`, `connected`, `reconnecting` or `closed`. */
  get state() {
    return this._state;
  }

  /** Names of the rooms this client is in (or is joining). */
  get rooms() {
    return [...this._rooms.keys()];
  }

  /** The last seq delivered in `room` (null before its first `joined`). */
  lastSeq(room) {
    const r = this._rooms.get(room);
    return r ? r.last : null;
  }

  /**
   * Commands not acked yet, oldest first: `{room, id, type, body}`, with `target`,
   * `emoji`, `remove` and `replyTo` where the command has them. `type` is `send`, `edit`,
   * `delete` or `react`; `body` is `''` for a delete or a reaction.
   */
  pending() {
    return [...this._pending.values()].map((p) => {
      const out = { room: p.room, id: p.id, type: p.type, body: p.body };
      if (p.target !== undefined) out.target = p.target;
      if (p.emoji !== undefined) out.emoji = p.emoji;
      if (p.remove !== undefined) out.remove = p.remove;
      if (p.replyTo !== undefined) out.replyTo = p.replyTo;
      return out;
    });
  }

  /**
   * The messages of `room` this client knows (delivered, replayed or paged in with
   * `history`), sorted by `seq`, each in its latest state: edits, deletes and reactions
   * applied. Only entries of kind `message`; `[]` for a room not joined. At most
   * `maxMessages` per room (the oldest go first).
   */
  messages(room) {
    const r = this._rooms.get(room);
    return r ? r.state.messages() : [];
  }

  /** The message `seq` of `room` in its latest state, or `null` when not known here. */
  message(room, seq) {
    const r = this._rooms.get(room);
    return (r && r.state.get(seq)) || null;
  }

  /**
   * This user's read cursor and unread count in `room`: `{read, unread}` (both numbers),
   * or `null` before the room's first `joined` (or from a gateway that does not send them).
   * `unread` counts the messages (kind `message`, not deleted, not this user's) after
   * `read`; it follows new messages and deletes as they arrive.
   */
  readState(room) {
    const r = this._rooms.get(room);
    if (!r || r.read === null || r.unread === null) return null;
    return { read: r.read, unread: r.unread };
  }

  /**
   * How far the room's members have read, as far as this client knows (from `reads()`
   * and the live `reads` frames): `{user: seq}`, this user included.
   */
  seenBy(room) {
    const r = this._rooms.get(room);
    return r ? Object.fromEntries(r.seen) : {};
  }

  /** A fresh message id, for an application that wants to know it before `send`. */
  newId() {
    return `${this._idPrefix}-${this._nextId++}`;
  }

  /** Subscribes `fn` to events of `type`; returns a function that unsubscribes it. */
  on(type, fn) {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    const set = this._listeners.get(type);
    if (set) set.delete(fn);
  }

  /** Starts connecting (and keeps reconnecting until `close()`). */
  connect() {
    if (this._state === 'connecting' || this._state === 'connected' || this._state === 'reconnecting') return this;
    this._closing = false;
    this._attempt = 0;
    this._open();
    return this;
  }

  /** Closes for good: rejects every pending send and join. `connect()` starts again. */
  close() {
    this._closing = true;
    this._clear('reconnect');
    const ws = this._ws;
    this._disconnected(1000, 'closed by the client');
    if (ws) {
      try {
        ws.close(1000, 'bye');
      } catch {
        // already closing
      }
    }
    const err = new CourierError('closed', 'the client was closed');
    for (const p of this._pending.values()) this._settle(p, err);
    for (const r of this._rooms.values()) this._settleJoin(r, err);
    this._rooms.clear();
  }

  /**
   * Joins `room`; resolves with `{room, head}` at its first `joined`, however many
   * reconnects that takes. With `since`, messages after that seq are replayed first.
   */
  join(room, { since } = {}) {
    if (typeof room !== 'string' || !NAME_RE.test(room)) {
      return Promise.reject(new CourierError('bad_request', `invalid room name ${JSON.stringify(room)}`, { room }));
    }
    if (since !== undefined && !(Number.isInteger(since) && since >= 0)) {
      return Promise.reject(new CourierError('bad_request', 'since must be a non-negative integer', { room }));
    }
    const existing = this._rooms.get(room);
    if (existing) return existing.promise;
    const r = {
      name: room,
      last: since === undefined ? null : since,
      joined: false, // on the current connection
      head: null,
      buffer: new Map(), // seq -> message that arrived ahead of a missing one
      highest: 0, // highest seq seen on this connection
      filling: false,
      joinAttempt: 0,
      joinTimer: null,
      settled: false,
      state: new RoomState(), // latest state of the messages seen
      orphans: new Map(), // target seq -> events whose target was not known when they came
      orphanCount: 0,
      floor: 0, // highest seq dropped from `state` to keep it within maxMessages
      seenFrom: null, // every frame after this seq (up to `last`) went through the state
      read: null, // this user's read cursor (from the gateway)
      unread: null, // exact unread count, kept current with what arrives
      counted: 0, // the seq up to which `unread` accounts for the log
      seen: new Map(), // user -> read cursor (`reads`)
    };
    r.promise = new Promise((resolve, reject) => {
      r.resolve = resolve;
      r.reject = reject;
    });
    // A join nobody awaits must not surface as an unhandled rejection.
    r.promise.catch(() => {});
    this._rooms.set(room, r);
    if (this._state === 'connected') this._sendJoin(r);
    return r.promise;
  }

  /** Leaves `room`: no more of its messages; its unacked sends are rejected. */
  leave(room) {
    const r = this._rooms.get(room);
    if (!r) return Promise.resolve({ room });
    this._rooms.delete(room);
    this._clearRoomTimer(r);
    const err = new CourierError('left', `left ${room}`, { room });
    this._settleJoin(r, err);
    for (const p of [...this._pending.values()]) if (p.room === room) this._settle(p, err);
    if (this._state !== 'connected') return Promise.resolve({ room });
    return this._request({ type: 'leave', room }, 'leave', room).then(
      () => ({ room }),
      () => ({ room }),
    );
  }

  /**
   * Sends `body` to `room`. Resolves with `{room, id}` once the gateway acked it (it is
   * then durably queued and will be delivered once). Until then the send is kept and
   * re-sent with the same `id` after any reconnect; `unavailable` and `rate_limited`
   * are retried with backoff; any other error rejects. `replyTo` (a `seq` of the same
   * room) makes it a reply: the message carries `reply_to`.
   */
  send(room, body, { id, replyTo } = {}) {
    if (!this._rooms.has(room)) return Promise.reject(new CourierError('not_joined', `join ${room} first`, { room, id }));
    const bad = bodyError(body, room, id);
    if (bad) return Promise.reject(bad);
    if (replyTo !== undefined && replyTo !== null && !isSeq(replyTo)) {
      return Promise.reject(new CourierError('bad_request', 'replyTo must be a seq (a positive integer)', { room, id }));
    }
    const cmd = { type: 'send', body };
    if (replyTo !== undefined && replyTo !== null) cmd.replyTo = replyTo;
    return this._command(room, id, cmd);
  }

  /**
   * Replaces the body of message `target` (this user's own) with `body`. Acked, kept
   * and retried like `send`, with its own `id` (`{ id }` to choose it); the gateway
   * answers `forbidden` for someone else's message and `bad_request` for a missing or
   * deleted one. Everyone in the room then gets an `edit` event, and `update`.
   */
  edit(room, target, body, { id } = {}) {
    if (!this._rooms.has(room)) return Promise.reject(new CourierError('not_joined', `join ${room} first`, { room, id }));
    if (!isSeq(target)) return Promise.reject(new CourierError('bad_request', 'target must be a seq (a positive integer)', { room, id }));
    const bad = bodyError(body, room, id);
    if (bad) return Promise.reject(bad);
    return this._command(room, id, { type: 'edit', target, body });
  }

  /**
   * Deletes message `target` (this user's own) for everyone: its body, enrichment and
   * reactions are cleared everywhere. Acked, kept and retried like `send`.
   */
  deleteMessage(room, target, { id } = {}) {
    if (!this._rooms.has(room)) return Promise.reject(new CourierError('not_joined', `join ${room} first`, { room, id }));
    if (!isSeq(target)) return Promise.reject(new CourierError('bad_request', 'target must be a seq (a positive integer)', { room, id }));
    return this._command(room, id, { type: 'delete', target, body: '' });
  }

  /**
   * Adds this user's `emoji` (1 to 32 bytes, no spaces) to message `target`, or with
   * `{ remove: true }` takes it back. Acked, kept and retried like `send`.
   */
  react(room, target, emoji, { remove = false, id } = {}) {
    if (!this._rooms.has(room)) return Promise.reject(new CourierError('not_joined', `join ${room} first`, { room, id }));
    if (!isSeq(target)) return Promise.reject(new CourierError('bad_request', 'target must be a seq (a positive integer)', { room, id }));
    if (!validEmoji(emoji)) {
      return Promise.reject(new CourierError('bad_request', `emoji must be 1 to ${MAX_EMOJI_BYTES} bytes without spaces`, { room, id }));
    }
    return this._command(room, id, { type: 'react', target, emoji, remove: !!remove, body: '' });
  }

  /**
   * Moves this user's read cursor in `room` to `seq` (the gateway keeps it per user and
   * room; it never moves back, and stops at the room's head). Resolves with
   * `{room, read, unread}`: the cursor and unread count after it. The user's other
   * connections get the same and emit `read` too. Needs the room joined on a live
   * connection (`disconnected` otherwise).
   */
  read(room, seq) {
    const r = this._rooms.get(room);
    if (!r) return Promise.reject(new CourierError('not_joined', `join ${room} first`, { room }));
    if (!(Number.isInteger(seq) && seq >= 0)) return Promise.reject(new CourierError('bad_request', 'seq must be a non-negative integer', { room }));
    if (!r.joined) return Promise.reject(new CourierError('disconnected', 'not connected; retry once joined', { room }));
    return this._request({ type: 'read', room, seq }, 'read', room, this._o.historyRetries).then(() => ({
      room,
      read: r.read,
      unread: r.unread,
    }));
  }

  /**
   * How far the room's members have read: resolves with `{room, reads}`, `reads` being
   * `{user: seq}` for the (at most 100) most advanced cursors, merged with what this
   * client knew. Ask after each `joined`; the `reads` event follows the cursors that move.
   */
  reads(room) {
    const r = this._rooms.get(room);
    if (!r) return Promise.reject(new CourierError('not_joined', `join ${room} first`, { room }));
    if (!r.joined) return Promise.reject(new CourierError('disconnected', 'not connected; retry once joined', { room }));
    return this._request({ type: 'reads', room }, 'reads', room, this._o.historyRetries).then(() => ({
      room,
      reads: this.seenBy(room),
    }));
  }

  /** Queues one acked command (send, edit, delete, react) of `room` under `id`. */
  _command(room, id, cmd) {
    if (id === undefined) id = this.newId();
    else if (!validId(id)) return Promise.reject(new CourierError('bad_request', 'invalid message id', { room, id }));
    const same = this._pending.get(id);
    if (same) return same.promise;
    if (this._pending.size >= this._o.maxPending) {
      return Promise.reject(new CourierError('overloaded', `${this._o.maxPending} sends are already waiting for an ack`, { room, id }));
    }
    const p = { ...cmd, room, id, inFlight: false, attempt: 0, timer: null };
    p.promise = new Promise((resolve, reject) => {
      p.resolve = resolve;
      p.reject = reject;
    });
    this._pending.set(id, p);
    if (this._rooms.get(room).joined) this._pump(room);
    return p.promise;
  }

  /**
   * Up to `limit` (at most 200) messages of `room` with seq < `before` (the newest when
   * absent), oldest first. For scrolling back; these are not `message` events.
   */
  history(room, { before, limit = 50 } = {}) {
    const r = this._rooms.get(room);
    if (!r) return Promise.reject(new CourierError('not_joined', `join ${room} first`, { room }));
    if (!r.joined) return Promise.reject(new CourierError('disconnected', 'not connected; retry once joined', { room }));
    const cmd = { type: 'history', room, limit: Math.max(1, Math.min(HISTORY_MAX, limit | 0)) };
    if (before !== undefined && before !== null) cmd.before = before;
    return this._request(cmd, 'history', room, this._o.historyRetries).then((f) => {
      const page = f.messages || [];
      if (this._rooms.get(room) === r) this._absorb(r, page);
      return page;
    });
  }

  /**
   * The private rooms this user is a member of and their direct rooms (`dm:A:B`) with
   * messages, sorted, at most 200: a Promise of room names. Joined or not; needs a
   * connection. Not the `rooms` getter, which names the rooms joined here.
   */
  listRooms() {
    return this._request({ type: 'rooms' }, 'rooms', undefined, this._o.historyRetries).then((f) => f.rooms || []);
  }

  /**
   * Who has a connection in `room`, on any gateway: a Promise of `{room, users,
   * truncated}` (users sorted). Joined or not; needs a connection. Keep it current with
   * the `member` events.
   */
  presence(room) {
    if (typeof room !== 'string' || !NAME_RE.test(room)) {
      return Promise.reject(new CourierError('bad_request', `invalid room name ${JSON.stringify(room)}`, { room }));
    }
    return this._request({ type: 'presence', room }, 'presence', room, this._o.historyRetries).then((f) => ({
      room: f.room,
      users: f.users || [],
      truncated: !!f.truncated,
    }));
  }

  /**
   * Tells the room's other members this user is typing. Call it on every keystroke: at
   * most one signal per room goes out every `typingEvery` ms (the gateway drops more
   * anyway). True when one went out now; false when throttled, or when the room is not
   * joined on a live connection.
   */
  typing(room) {
    const r = this._rooms.get(room);
    if (!r || !r.joined) return false;
    const now = this._o.now();
    const last = this._typedAt.get(room);
    if (last !== undefined && now - last < this._o.typingEvery) return false;
    if (!this._frameOut({ type: 'typing', room })) return false;
    this._typedAt.set(room, now);
    return true;
  }

  // ---- connection ---------------------------------------------------------------------

  _open() {
    const gen = ++this._gen;
    this._setState('connecting', { attempt: this._attempt });
    let token;
    try {
      token = typeof this._o.token === 'function' ? this._o.token() : this._o.token;
    } catch (e) {
      this._fail(gen, e);
      return;
    }
    if (token && typeof token.then === 'function') {
      token.then(
        (t) => this._dial(gen, t),
        (e) => this._fail(gen, e),
      );
    } else {
      this._dial(gen, token);
    }
  }

  _fail(gen, e) {
    if (gen !== this._gen || this._closing) return;
    this._emit('error', e instanceof CourierError ? e : new CourierError('connect_failed', String((e && e.message) || e)));
    this._attempt++;
    this._scheduleReconnect(4000, 'could not connect');
  }

  _dial(gen, token) {
    if (gen !== this._gen || this._closing) return;
    let ws;
    try {
      const base = this._o.url || defaultUrl();
      const u = new URL(base, globalThis.location ? globalThis.location.href : undefined);
      // A browser cannot set headers on a WebSocket: the token rides either in the URL or,
      // kept out of URLs and logs, as `bearer.<token>` beside the `courier` subprotocol.
      const inProtocol = token && this._o.tokenVia === 'protocol';
      if (token && !inProtocol) u.searchParams.set('token', token);
      else if (!token && this._o.user) u.searchParams.set('user', this._o.user);
      ws = inProtocol ? new this._WS(u.toString(), [SUBPROTOCOL, `bearer.${token}`]) : new this._WS(u.toString());
    } catch (e) {
      this._fail(gen, e);
      return;
    }
    this._ws = ws;
    ws.onmessage = (ev) => {
      if (this._ws === ws) this._frame(ev.data);
    };
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      this._lost(ev && ev.code, ev && ev.reason);
    };
    ws.onerror = () => {}; // a close event follows
    this._timers.connect = this._setTimeout(() => {
      this._timers.connect = null;
      if (this._ws === ws && this._state === 'connecting') this._drop(4000, 'no hello in time');
    }, this._o.connectTimeout);
  }

  /** Gives up on the current socket without waiting for its close event. */
  _drop(code, reason) {
    const ws = this._ws;
    this._lost(code, reason);
    try {
      ws.close(4000, reason);
    } catch {
      // nothing to close
    }
  }

  /** The socket is gone: forget what was per-connection, then reconnect. */
  _lost(code, reason) {
    this._disconnected(code, reason);
    if (this._closing) return;
    if (code === 1012) {
      // The gateway is restarting: try again at once (another gateway may be up).
      this._scheduleReconnect(code, reason, 0);
    } else {
      this._attempt++;
      this._scheduleReconnect(code, reason);
    }
  }

  _disconnected(code, reason) {
    this._ws = null;
    this._gen++;
    this._clear('connect');
    this._clear('ping');
    for (const r of this._rooms.values()) {
      r.joined = false;
      r.buffer.clear();
      r.highest = 0;
      this._clearRoomTimer(r);
    }
    for (const p of this._pending.values()) {
      p.inFlight = false;
      if (p.timer !== null) {
        this._clearTimeout(p.timer);
        p.timer = null;
      }
    }
    const err = new CourierError('disconnected', 'the connection was lost');
    const reqs = [...this._requests.values()];
    this._requests.clear();
    for (const q of reqs) {
      if (q.timer !== null) this._clearTimeout(q.timer);
      q.reject(err);
    }
    if (this._closing) this._setState('closed', { code, reason });
  }

  _scheduleReconnect(code, reason, delay = this._backoff(this._attempt)) {
    this._clear('reconnect');
    this._setState('reconnecting', { code, reason, delay, attempt: this._attempt });
    this._timers.reconnect = this._setTimeout(() => {
      this._timers.reconnect = null;
      if (!this._closing) this._open();
    }, delay);
  }

  /** Delay before attempt `n` (n >= 1): exponential, capped, with jitter below it. */
  _backoff(n) {
    const { minDelay, maxDelay, factor, jitter } = this._o;
    const base = Math.min(maxDelay, minDelay * Math.pow(factor, Math.max(0, n - 1)));
    return Math.round(base * (1 - jitter * this._o.random()));
  }

  _clear(name) {
    if (this._timers[name] !== null) {
      this._clearTimeout(this._timers[name]);
      this._timers[name] = null;
    }
  }

  _schedulePing() {
    this._clear('ping');
    const { pingInterval, pongTimeout } = this._o;
    if (!(pingInterval > 0)) return;
    this._timers.ping = this._setTimeout(() => {
      this._timers.ping = null;
      if (this._state !== 'connected') return;
      const silent = this._o.now() - this._lastHeard;
      if (silent >= pingInterval + pongTimeout) {
        this._drop(4000, 'the gateway stopped answering');
        return;
      }
      if (silent >= pingInterval) this._frameOut({ type: 'ping' });
      this._schedulePing();
    }, Math.min(pingInterval, pongTimeout));
  }

  _frameOut(obj) {
    const ws = this._ws;
    if (!ws || ws.readyState !== OPEN) return false;
    try {
      ws.send(JSON.stringify(obj));
      return true;
    } catch {
      return false;
    }
  }

  // ---- incoming frames ----------------------------------------------------------------

  _frame(data) {
    this._lastHeard = this._o.now();
    let f;
    try {
      f = JSON.parse(data);
    } catch {
      this._emit('error', new CourierError('bad_frame', 'the gateway sent something that is not JSON'));
      return;
    }
    if (!f || typeof f !== 'object') return;
    switch (f.type) {
      case 'hello':
        return this._hello(f);
      case 'joined':
        return this._joined(f);
      case 'message':
        return this._message(f);
      case 'ack':
        return this._ack(f);
      case 'error':
        return this._error(f);
      case 'left':
        if (f.reason === 'removed' && f.ref === undefined) return this._removed(f);
        return this._reply(f);
      case 'member':
        if (this._rooms.has(f.room)) this._emit('member', { room: f.room, user: f.user, state: f.state });
        return;
      case 'typing':
        if (this._rooms.has(f.room)) this._emit('typing', { room: f.room, user: f.user });
        return;
      case 'read':
        this._readFrame(f);
        return this._reply(f);
      case 'reads':
        this._readsFrame(f);
        return this._reply(f);
      case 'history':
      case 'rooms':
      case 'presence':
      case 'pong':
        return this._reply(f);
      default:
        return; // newer gateways may add events; ignore them
    }
  }

  _hello(f) {
    this._clear('connect');
    this._attempt = 0;
    this.user = f.user;
    this.session = f.session;
    this.gateway = f.gateway;
    this._schedulePing();
    // Rejoin first: a state listener that joins a room then sends that join only once.
    for (const r of this._rooms.values()) this._sendJoin(r);
    this._setState('connected', { user: f.user, session: f.session, gateway: f.gateway });
  }

  /**
   * The gateway took this connection out of a room it may no longer use (a private room
   * it was removed from): the room is forgotten, not rejoined after a reconnect. Sends
   * already on the wire get their own answer (`forbidden` once refused).
   */
  _removed(f) {
    const r = this._rooms.get(f.room);
    if (!r) return;
    this._rooms.delete(f.room);
    this._clearRoomTimer(r);
    this._emit('left', { room: f.room, reason: 'removed' });
  }

  _sendJoin(r) {
    this._clearRoomTimer(r);
    const cmd = { type: 'join', room: r.name };
    if (r.last !== null) cmd.since = r.last;
    this._request(cmd, 'join', r.name).catch((e) => {
      if (this._rooms.get(r.name) !== r || e.code === 'disconnected') return; // rejoined on reconnect
      if (RETRIED.has(e.code)) {
        r.joinAttempt++;
        r.joinTimer = this._setTimeout(() => {
          r.joinTimer = null;
          if (this._rooms.get(r.name) === r && this._state === 'connected' && !r.joined) this._sendJoin(r);
        }, this._backoff(r.joinAttempt));
        return;
      }
      this._rooms.delete(r.name);
      for (const p of [...this._pending.values()]) if (p.room === r.name) this._settle(p, e);
      this._settleJoin(r, e);
      this._emit('error', e);
    });
  }

  _clearRoomTimer(r) {
    if (r.joinTimer !== null) {
      this._clearTimeout(r.joinTimer);
      r.joinTimer = null;
    }
  }

  _joined(f) {
    const r = this._rooms.get(f.room);
    this._reply(f);
    if (!r) return;
    const head = Number(f.head) || 0;
    const resumed = r.last !== null;
    if (r.last === null) {
      r.last = head;
    } else if (head < r.last) {
      // The room holds fewer messages than this client saw: its store was reset.
      this._emit('error', new CourierError('room_reset', `${r.name} restarted at seq ${head}, below ${r.last}`, { room: r.name }));
      r.last = head;
      this._forgetState(r);
    }
    if (r.seenFrom === null) r.seenFrom = r.last;
    r.joined = true;
    r.joinAttempt = 0;
    r.head = head;
    r.highest = Math.max(r.highest, head);
    if (Number.isInteger(f.read) && Number.isInteger(f.unread)) {
      // Exact for the log up to `head`; what is delivered after it is counted here.
      r.read = f.read;
      r.unread = f.unread;
      r.counted = head;
    }
    this._settleJoin(r, null, { room: r.name, head });
    this._emit('joined', { room: r.name, head, resumed, truncated: !!f.truncated });
    if (r.read !== null && r.unread !== null) this._emit('read', { room: r.name, read: r.read, unread: r.unread });
    this._pump(r.name);
    // A truncated replay starts above the last delivered seq: the fill pages the rest.
    if (f.truncated && head > r.last) this._fill(r);
  }

  _message(m) {
    const r = this._rooms.get(m.room);
    if (!r || !r.joined || !Number.isInteger(m.seq)) return;
    if (m.seq <= r.last) return; // delivered already
    if (m.seq > r.highest) r.highest = m.seq;
    if (m.seq === r.last + 1 && !r.filling) {
      this._deliver(r, m);
      this._drain(r);
      return;
    }
    // Ahead of a missing one: hold it (bounded; what does not fit is paged in later).
    if (r.buffer.size < this._o.maxBuffered) r.buffer.set(m.seq, m);
    this._fill(r);
  }

  _deliver(r, m) {
    r.last = m.seq;
    // A message of ours that is stored was acked, even if the ack itself got lost.
    const p = this._pending.get(m.id);
    if (p && p.room === m.room && m.from === this.user) this._settle(p, null, { room: p.room, id: p.id });
    const counted = this._count(r, m);
    const change = this._applyFrame(r, m);
    this._emit('message', m);
    if (change) this._emit('update', { room: r.name, ...change, event: m });
    if (counted) this._emit('read', { room: r.name, read: r.read, unread: r.unread });
  }

  /**
   * Counts a frame past the unread count's position: a message from someone else after
   * the read cursor adds one; the delete of one takes it away (a delete's `from` is the
   * message's author, and the store deletes a message once). True when `unread` changed.
   */
  _count(r, m) {
    if (r.unread === null || m.seq <= r.counted) return false;
    r.counted = m.seq;
    if (m.from === this.user) return false;
    if (isMessage(m)) {
      if (m.seq <= r.read || m.deleted) return false;
      r.unread++;
      return true;
    }
    if (m.kind === 'delete' && Number.isInteger(m.target) && m.target > r.read && r.unread > 0) {
      r.unread--;
      return true;
    }
    return false;
  }

  /** Applies a delivered frame to the room's state; the change, or null. */
  _applyFrame(r, m) {
    if (isMessage(m)) {
      const change = r.state.apply(m);
      this._bound(r);
      return change;
    }
    if (!r.state.has(m.target)) {
      // Its target may come later in a history page (sent before the join's head):
      // kept to be applied to it then.
      if (Number.isInteger(m.target) && m.target > r.floor && r.orphanCount < this._o.maxOrphans) {
        let list = r.orphans.get(m.target);
        if (!list) r.orphans.set(m.target, (list = []));
        list.push(m);
        r.orphanCount++;
      }
      return null;
    }
    return r.state.apply(m);
  }

  /**
   * Takes in a history page: the messages not known yet (at or below the last delivered
   * seq) join the state, with the events that came for them before; those known are
   * kept as they are (the events delivered since keep them current), and the events in
   * the page are not applied again.
   */
  _absorb(r, page) {
    for (const m of page) {
      if (!m || !Number.isInteger(m.seq) || !isMessage(m)) continue;
      if (m.seq > r.last || m.seq <= r.floor || r.state.has(m.seq)) continue;
      r.state.apply(m);
      const list = r.orphans.get(m.seq);
      if (list) {
        // The page may already hold some of them: applying them again in order ends in
        // the same latest state (a later edit wins, a reaction's last change stands).
        r.orphans.delete(m.seq);
        r.orphanCount -= list.length;
        for (const ev of list) r.state.apply(ev);
      }
    }
    this._bound(r);
  }

  /** Keeps at most `maxMessages` messages of a room, dropping the oldest. */
  _bound(r) {
    const max = this._o.maxMessages;
    if (r.state.size <= max + Math.max(1, max >> 4)) return;
    const seqs = r.state.messages().map((m) => m.seq);
    for (const seq of seqs.slice(0, seqs.length - max)) {
      r.state.delete(seq);
      if (seq > r.floor) r.floor = seq;
    }
    for (const [target, list] of r.orphans) {
      if (target <= r.floor) {
        r.orphans.delete(target);
        r.orphanCount -= list.length;
      }
    }
  }

  _forgetState(r) {
    r.state.clear();
    r.orphans.clear();
    r.orphanCount = 0;
    r.floor = 0;
    r.seenFrom = null;
    r.seen.clear();
  }

  /**
   * A `read` frame: the reply to this client's `read`, or the same from another of the
   * user's connections; one behind the cursor known is stale and changes nothing. The unread count is recounted from the state when the state
   * holds every message after the cursor (exact, whatever was in flight); else the
   * gateway's count is taken.
   */
  _readFrame(f) {
    const r = this._rooms.get(f.room);
    if (!r || !Number.isInteger(f.seq) || r.seenFrom === null) return;
    // Frames from two devices may cross: the cursor only moves forward (a `joined`
    // says where it is after a reconnect).
    if (r.read !== null && f.seq < r.read) return;
    r.read = f.seq;
    if (f.seq >= r.seenFrom && f.seq >= r.floor) {
      let n = 0;
      for (const m of r.state.messages()) if (m.seq > f.seq && !m.deleted && m.from !== this.user) n++;
      r.unread = n;
      r.counted = r.last;
    } else if (Number.isInteger(f.unread)) {
      r.unread = f.unread;
      r.counted = Math.max(r.last, f.seq);
    } else if (r.unread === null) {
      return;
    }
    this._emit('read', { room: r.name, read: r.read, unread: r.unread });
  }

  /** A `reads` frame (the reply to `reads()`, or cursors that moved): merged, forward only. */
  _readsFrame(f) {
    const r = this._rooms.get(f.room);
    if (!r || !f.reads || typeof f.reads !== 'object') return;
    const changed = {};
    for (const [user, seq] of Object.entries(f.reads)) {
      if (!Number.isInteger(seq)) continue;
      const old = r.seen.get(user);
      if (old === undefined || seq > old) {
        r.seen.set(user, seq);
        changed[user] = seq;
      }
    }
    if (Object.keys(changed).length) this._emit('reads', { room: r.name, reads: this.seenBy(r.name), changed });
  }

  _drain(r) {
    for (const seq of r.buffer.keys()) if (seq <= r.last) r.buffer.delete(seq);
    let next;
    while ((next = r.buffer.get(r.last + 1))) {
      r.buffer.delete(next.seq);
      if (this._rooms.get(r.name) !== r || !r.joined) return;
      this._deliver(r, next);
    }
  }

  /** Pages the messages between the last delivered one and the highest seen, in order. */
  async _fill(r) {
    if (r.filling) return;
    r.filling = true;
    const gen = this._gen;
    try {
      let below = null; // paging down a window whose page was cut to fit one frame
      while (this._rooms.get(r.name) === r && r.joined && gen === this._gen) {
        this._drain(r);
        if (r.last >= r.highest) break;
        const top = Math.min(r.last + 1 + HISTORY_MAX, r.highest + 1);
        const before = below !== null && below > r.last + 1 && below <= top ? below : top;
        below = null;
        const page = await this.history(r.name, { before, limit: before - r.last - 1 });
        if (this._rooms.get(r.name) !== r || !r.joined || gen !== this._gen) break;
        if (page.length && page[0].seq > r.last + 1) {
          // The gateway cut the page to its newest messages: keep them, page on below.
          for (const m of page) if (r.buffer.size < this._o.maxBuffered) r.buffer.set(m.seq, m);
          below = page[0].seq;
          continue;
        }
        let progressed = false;
        for (const m of page) {
          if (m.seq === r.last + 1) {
            this._deliver(r, m);
            progressed = true;
          }
        }
        if (!progressed) {
          // The store does not have the next seq: never stall the room on it.
          const ahead = [...r.buffer.keys()].filter((s) => s > r.last);
          const to = ahead.length ? Math.min(...ahead) - 1 : r.highest;
          this._emit('error', new CourierError('gap', `messages ${r.last + 1}..${to} of ${r.name} are missing`, { room: r.name }));
          r.last = to;
          r.seenFrom = Math.max(r.seenFrom ?? 0, to);
        }
      }
    } catch {
      // The connection went away: the rejoin resumes from the last delivered seq.
    } finally {
      r.filling = false;
    }
  }

  _ack(f) {
    const p = this._pending.get(f.id);
    if (p && p.room === f.room) this._settle(p, null, { room: f.room, id: f.id });
  }

  _error(f) {
    const err = new CourierError(f.code, f.message, { id: f.id });
    if (f.ref !== undefined && this._requests.has(f.ref)) {
      this._reply(f, err);
      return;
    }
    const p = f.id !== undefined ? this._pending.get(f.id) : undefined;
    if (p) {
      err.room = p.room;
      p.inFlight = false;
      if (RETRIED.has(f.code)) {
        p.attempt++;
        p.timer = this._setTimeout(() => {
          p.timer = null;
          const r = this._rooms.get(p.room);
          if (this._pending.get(p.id) === p && r && r.joined) this._pump(p.room);
        }, this._backoff(p.attempt));
      } else {
        this._settle(p, err);
      }
      return;
    }
    this._emit('error', err);
  }

  /** Settles the request a reply (or error) refers to by its `ref`. */
  _reply(f, err) {
    if (f.ref === undefined) return;
    const q = this._requests.get(f.ref);
    if (!q) return;
    if (err && RETRIED.has(err.code) && q.retries > 0) {
      q.retries--;
      q.attempt++;
      q.timer = this._setTimeout(() => {
        q.timer = null;
        if (this._requests.get(f.ref) === q && !this._frameOut(q.cmd)) {
          this._requests.delete(f.ref);
          q.reject(new CourierError('disconnected', 'the connection was lost'));
        }
      }, this._backoff(q.attempt));
      return;
    }
    this._requests.delete(f.ref);
    if (err) q.reject(err);
    else q.resolve(f);
  }

  _request(cmd, kind, room, retries = 0) {
    const ref = `r${this._nextRef++}`;
    cmd.ref = ref;
    return new Promise((resolve, reject) => {
      if (!this._frameOut(cmd)) {
        reject(new CourierError('disconnected', 'not connected', { room }));
        return;
      }
      this._requests.set(ref, { resolve, reject, kind, room, cmd, retries, attempt: 0, timer: null });
    });
  }

  /**
   * Transmits `room`'s pending sends in the order they were made. One waiting out a
   * backoff holds back the later ones: the gateway stores a connection's sends in the
   * order it receives them, so the room shows them as they were typed.
   */
  _pump(room) {
    for (const p of this._pending.values()) {
      if (p.room !== room || p.inFlight) continue;
      if (p.timer !== null) return;
      this._transmit(p);
      if (!p.inFlight) return; // the socket is gone: the rejoin pumps again
    }
  }

  _transmit(p) {
    const f = { type: p.type, room: p.room, id: p.id };
    if (p.type === 'send' || p.type === 'edit') f.body = p.body;
    if (p.target !== undefined) f.target = p.target;
    if (p.type === 'react') {
      f.emoji = p.emoji;
      if (p.remove) f.remove = true;
    }
    if (p.replyTo !== undefined) f.reply_to = p.replyTo;
    if (this._frameOut(f)) p.inFlight = true;
  }

  _settle(p, err, value) {
    if (this._pending.get(p.id) !== p) return;
    this._pending.delete(p.id);
    if (p.timer !== null) {
      this._clearTimeout(p.timer);
      p.timer = null;
    }
    if (err) {
      p.reject(err);
    } else {
      p.resolve(value);
      this._emit('ack', value);
    }
  }

  _settleJoin(r, err, value) {
    if (r.settled) return;
    r.settled = true;
    if (err) r.reject(err);
    else r.resolve(value);
  }

  _setState(state, detail = {}) {
    const previous = this._state;
    this._state = state;
    this._emit('state', { ...detail, state, previous });
  }

  _emit(type, detail) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(detail);
      } catch (e) {
        // A listener's bug must not break delivery to the others.
        if (globalThis.console) globalThis.console.error(e);
      }
    }
  }
}

function randomPrefix(random) {
  let s = '';
  for (let i = 0; i < 8; i++) s += Math.floor(random() * 36).toString(36);
  return `c${Date.now().toString(36)}${s}`;
}

/**
 * Splits a message body into the pieces to display, from the message's `enriched`
 * fields: `{type: 'text'|'link'|'mention'|'hashtag', text}`, links with `href` (only
 * http and https), mentions with `name`, hashtags with `tag`. Concatenating every
 * piece's `text` gives the body back. Put each piece in the DOM as text.
 */
export function segments(body, enriched) {
  const text = typeof body === 'string' ? body : '';
  const e = enriched || {};
  const spans = []; // [start, end, segment] of links, non-overlapping
  for (const link of Array.isArray(e.links) ? e.links : []) {
    const href = safeHref(link);
    if (!href) continue;
    let from = 0;
    let at;
    while (link.length > 0 && (at = text.indexOf(link, from)) !== -1) {
      const end = at + link.length;
      if (!spans.some(([s, t]) => at < t && end > s)) spans.push([at, end, { type: 'link', text: link, href }]);
      from = end;
    }
  }
  const mentions = new Set(Array.isArray(e.mentions) ? e.mentions : []);
  const hashtags = new Set(Array.isArray(e.hashtags) ? e.hashtags : []);
  const inSpan = (i) => spans.some(([s, t]) => i >= s && i < t);
  if (mentions.size || hashtags.size) {
    const word = /[\p{Alphabetic}\p{N}_@#]/u;
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if ((c !== '@' && c !== '#') || inSpan(i)) continue;
      const prev = i === 0 ? '' : i > 1 && /[\udc00-\udfff]/.test(text[i - 1]) ? text.slice(i - 2, i) : text[i - 1];
      if (prev && word.test(prev)) continue;
      const rest = text.slice(i + 1);
      if (c === '@') {
        const m = rest.match(/^[A-Za-z0-9_.:-]+/);
        const name = m ? m[0].replace(/[.:-]+$/, '') : '';
        if (name && mentions.has(name)) {
          spans.push([i, i + 1 + name.length, { type: 'mention', text: `@${name}`, name }]);
          i += name.length;
        }
      } else {
        const m = rest.match(/^[\p{Alphabetic}\p{N}_]+/u);
        const tag = m ? m[0] : '';
        if (tag && hashtags.has(tag)) {
          spans.push([i, i + 1 + tag.length, { type: 'hashtag', text: `#${tag}`, tag }]);
          i += tag.length;
        }
      }
    }
  }
  spans.sort((a, b) => a[0] - b[0]);
  const out = [];
  let pos = 0;
  for (const [s, t, seg] of spans) {
    if (s > pos) out.push({ type: 'text', text: text.slice(pos, s) });
    out.push(seg);
    pos = t;
  }
  if (pos < text.length) out.push({ type: 'text', text: text.slice(pos) });
  return out;
}

/** The URL as an href when it is http or https, else null. */
export function safeHref(url) {
  if (typeof url !== 'string' || !/^https?:\/\//i.test(url)) return null;
  try {
    const u = new URL(url);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
  } catch {
    return null;
  }
}
