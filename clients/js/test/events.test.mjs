// Unit and randomized tests of issue 14 in the courier client: edits, deletes, reactions
// and replies as events of the room's log (the reducer, `RoomState`, the client's
// latest state of each message), the acked commands that make them, and read state
// (read cursor, exact unread count, "seen by").
// Run: node --test clients/js/test/

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CourierClient, RoomState, applyEvent, isMessage } from '../../../gateway/static/client.js';
import { fakeClient, flush } from '../fakes.mjs';

function setup(options = {}) {
  const { client, clock, sockets } = fakeClient(options);
  const updates = [];
  const reads = [];
  const errors = [];
  client.on('update', (u) => updates.push(u));
  client.on('read', (r) => reads.push(r));
  client.on('error', (e) => errors.push(e));
  const last = () => sockets[sockets.length - 1];
  return { client, clock, sockets, last, updates, reads, errors };
}

/** Connects as alice, joins `room` with the given `joined` fields, returns the socket. */
async function joined(t, room = 'lobby', fields = { head: 0 }) {
  t.client.connect();
  const ws = t.last();
  ws.accept();
  const p = t.client.join(room);
  const [join] = ws.take('join');
  ws.push({ type: 'joined', room, ...fields, ref: join.ref });
  await p;
  return ws;
}

const ENRICHED = () => ({ mentions: [], hashtags: [], links: [], lang: null, flagged: false });

function msg(seq, from = 'bob', extra = {}) {
  return {
    type: 'message',
    room: 'lobby',
    seq,
    id: `m-${seq}`,
    from,
    body: `body ${seq}`,
    sent_at: `2026-12-03T10:00:${String(seq % 60).padStart(2, '0')}.000Z`,
    enriched: ENRICHED(),
    ...extra,
  };
}

function ev(seq, from, kind, target, extra = {}) {
  return msg(seq, from, { kind, target, body: '', ...extra });
}

const react = (seq, from, target, emoji, remove = false) => ev(seq, from, 'reaction', target, { emoji, remove });

// ---- the reducer --------------------------------------------------------------------

test('events change their target and a delete is final (the store reference rules)', () => {
  const room = new RoomState();
  room.apply(msg(1, 'alice'));
  room.apply(ev(2, 'alice', 'edit', 1, { body: 'body 2', enriched: { ...ENRICHED(), lang: 'eng' } }));
  room.apply(react(3, 'zoe', 1, '👍'));
  room.apply(react(4, 'bob', 1, '👍'));
  room.apply(react(5, 'bob', 1, '🎉'));
  room.apply(react(6, 'bob', 1, '🎉', true));
  let m = room.get(1);
  assert.equal(m.body, 'body 2');
  assert.equal(m.enriched.lang, 'eng');
  assert.equal(m.edited_at, msg(2).sent_at);
  assert.deepEqual(m.reactions, { '👍': ['bob', 'zoe'] }, 'sorted by name; an emptied emoji goes');
  room.apply(ev(7, 'alice', 'delete', 1));
  room.apply(ev(8, 'alice', 'edit', 1, { body: 'too late' }));
  room.apply(react(9, 'bob', 1, '👍'));
  m = room.get(1);
  assert.equal(m.deleted, true);
  assert.equal(m.body, '');
  assert.deepEqual(m.enriched, ENRICHED());
  assert.equal(m.reactions, undefined);
  assert.equal(m.edited_at, msg(2).sent_at, 'a delete keeps edited_at');
  assert.deepEqual(
    room.messages().map((x) => x.seq),
    [1],
    'events are not messages',
  );
});

test('reaction lists are in byte order of names (not locale order), and adding twice or removing what is not there changes nothing', () => {
  let m = msg(1);
  for (const [i, u] of ['bob', 'Zed', 'alice', '_x', 'Alice', '9lives', 'a.b'].entries()) {
    m = applyEvent(m, react(2 + i, u, 1, '👍'));
  }
  assert.deepEqual(m.reactions['👍'], ['9lives', 'Alice', 'Zed', '_x', 'a.b', 'alice', 'bob']);
  assert.equal(applyEvent(m, react(20, 'bob', 1, '👍')), null, 'already there');
  assert.equal(applyEvent(m, react(21, 'bob', 1, '🎉', true)), null, 'nothing to remove');
  const before = JSON.stringify(m);
  const next = applyEvent(m, react(22, 'bob', 1, '👍', true));
  assert.equal(JSON.stringify(m), before, 'the target is not modified');
  assert.deepEqual(next.reactions['👍'], ['9lives', 'Alice', 'Zed', '_x', 'a.b', 'alice']);
});

test('events on unknown targets are ignored; a message frame replaces what was known of its seq', () => {
  const room = new RoomState();
  assert.equal(room.apply(ev(2, 'alice', 'edit', 1, { body: 'x' })), null);
  assert.equal(room.size, 0);
  room.apply(msg(1, 'alice'));
  const change = room.apply(react(3, 'bob', 1, '👍'));
  assert.deepEqual(change.seq, 1);
  assert.equal(change.cause, 'reaction');
  // The store's latest state of seq 1 comes again (a replay): it replaces.
  room.apply(msg(1, 'alice', { body: 'edited', edited_at: 'x', reactions: { '🎉': ['carol'] } }));
  assert.deepEqual(room.get(1).reactions, { '🎉': ['carol'] });
  assert.equal(isMessage(msg(1)), true);
  assert.equal(isMessage({ ...msg(1), kind: 'message' }), true);
  assert.equal(isMessage(ev(2, 'a', 'edit', 1)), false);
  assert.equal(applyEvent(msg(1), { ...ev(2, 'a', 'poll', 1) }), null, 'unknown kinds are ignored');
});

// ---- a reference model of the store -------------------------------------------------

/** A small seeded PRNG (mulberry32), so a failing run can be replayed. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const USERS = ['alice', 'bob', 'carol', 'Dan'];
const EMOJI = ['👍', '🎉', '❤️', '😂'];
const MAX_EMOJI_PER_MESSAGE = 20;
const MAX_USERS_PER_REACTION = 100;

/**
 * The store, as a model written apart from the client's reducer: it refuses what the
 * store refuses (an event on a missing, non-message or deleted target, an edit or a
 * delete by someone else unless moderated, a reaction over the caps), gives each stored
 * entry the next seq, keeps each message's latest state, and answers with the rows of
 * its log at any earlier time (`view(t)`), as history and replays would have.
 */
class StoreModel {
  constructor() {
    this.rows = []; // internal rows, index seq-1
    this.live = []; // frames as delivered live
    this.views = [[]]; // views[t]: the wire rows after t entries
  }

  get head() {
    return this.rows.length;
  }

  append(row) {
    row.seq = this.rows.length + 1;
    row.id = `${row.from}-${row.seq}`;
    row.sent_at = new Date(Date.UTC(2026, 11, 3, 10, 0, 0, row.seq)).toISOString();
    this.rows.push(row);
    this.live.push(this.wire(row));
    return row;
  }

  /** Records the rows as they are now, once an entry and its effect are in. */
  commit() {
    this.views.push(this.rows.map((r) => this.wire(r)));
    return true;
  }

  send(from, body, replyTo) {
    const row = { kind: 'message', from, body, enriched: enrich(body), reactions: new Map(), deleted: false };
    if (replyTo !== undefined) {
      if (!(replyTo >= 1 && replyTo <= this.head)) return false;
      row.reply_to = replyTo;
    }
    this.append(row);
    return this.commit();
  }

  target(seq) {
    const t = this.rows[seq - 1];
    return t && t.kind === 'message' && !t.deleted ? t : null;
  }

  edit(from, target, body) {
    const t = this.target(target);
    if (!t || t.from !== from) return false;
    const row = this.append({ kind: 'edit', from, target, body, enriched: enrich(body) });
    t.body = body;
    t.enriched = enrich(body);
    t.edited_at = row.sent_at;
    return this.commit();
  }

  delete(from, target, moderated = false) {
    const t = this.target(target);
    if (!t || (t.from !== from && !moderated)) return false;
    // The event's `from` is the author, for a moderated delete too.
    this.append({ kind: 'delete', from: t.from, target, body: '', enriched: enrich(''), moderated });
    t.deleted = true;
    t.body = '';
    t.enriched = enrich('');
    t.reactions = new Map();
    for (const r of this.rows) if (r.kind === 'edit' && r.target === target) r.body = '';
    return this.commit();
  }

  react(from, target, emoji, remove) {
    const t = this.target(target);
    if (!t) return false;
    const users = t.reactions.get(emoji);
    if (!remove && !(users && users.has(from))) {
      if (users && users.size >= MAX_USERS_PER_REACTION) return false;
      if (!users && t.reactions.size >= MAX_EMOJI_PER_MESSAGE) return false;
    }
    this.append({ kind: 'reaction', from, target, emoji, remove, body: '', enriched: enrich('') });
    if (remove) {
      if (users) {
        users.delete(from);
        if (users.size === 0) t.reactions.delete(emoji);
      }
    } else if (users) users.add(from);
    else t.reactions.set(emoji, new Set([from]));
    return this.commit();
  }

  /** A row as the gateway sends it (latest state for a message). */
  wire(r) {
    const w = {
      type: 'message',
      room: 'lobby',
      seq: r.seq,
      id: r.id,
      from: r.from,
      body: r.body,
      sent_at: r.sent_at,
      enriched: structuredClone(r.enriched),
    };
    if (r.kind !== 'message') {
      w.kind = r.kind;
      w.target = r.target;
      if (r.kind === 'reaction') {
        w.emoji = r.emoji;
        w.remove = r.remove;
      }
      if (r.moderated) w.moderated = true;
      return w;
    }
    if (r.reply_to !== undefined) w.reply_to = r.reply_to;
    if (r.edited_at !== undefined) w.edited_at = r.edited_at;
    if (r.deleted) w.deleted = true;
    if (r.reactions.size) {
      w.reactions = {};
      for (const [e, users] of r.reactions) w.reactions[e] = [...users].sort();
    }
    return w;
  }

  /** The rows of the log when it held `t` entries. */
  view(t) {
    return this.views[t];
  }

  /** The messages' latest state now, by seq. */
  latest() {
    return this.view(this.head).filter((r) => r.kind === undefined);
  }

  /** The unread count of `user` with cursor `read` when the log held `t` entries. */
  unread(user, read, t) {
    return this.view(t).filter((r) => r.kind === undefined && r.seq > read && !r.deleted && r.from !== user).length;
  }
}

function enrich(body) {
  const e = ENRICHED();
  for (const u of USERS) if (body.includes(`@${u}`)) e.mentions.push(u);
  if (body.includes('#tag')) e.hashtags.push('tag');
  return e;
}

/** A random history of `steps` attempts by a few users; refused ones leave no entry. */
function randomLog(rand, steps) {
  const s = new StoreModel();
  const pick = (xs) => xs[Math.floor(rand() * xs.length)];
  const anySeq = () => 1 + Math.floor(rand() * Math.max(1, s.head));
  let refused = 0;
  for (let i = 0; i < steps; i++) {
    const from = pick(USERS);
    const x = rand();
    let ok;
    if (s.head === 0 || x < 0.3) {
      const replyTo = s.head && rand() < 0.2 ? anySeq() : undefined;
      ok = s.send(from, `text ${i} @${pick(USERS)}${rand() < 0.3 ? ' #tag' : ''}`, replyTo);
    } else if (x < 0.45) ok = s.edit(from, anySeq(), `edit ${i} by ${from}`);
    else if (x < 0.55) ok = s.delete(from, anySeq(), rand() < 0.2);
    else ok = s.react(from, anySeq(), pick(EMOJI), rand() < 0.35);
    if (!ok) refused++;
  }
  return { store: s, refused };
}

test('randomized: any snapshot of the latest state plus the rest of the log ends in the store state', () => {
  const runs = Number(process.env.COURIER_PROPERTY_RUNS || 400);
  let refusedTotal = 0;
  let eventsTotal = 0;
  for (let run = 0; run < runs; run++) {
    const seed = 0x5eed + run;
    const rand = prng(seed);
    const { store, refused } = randomLog(rand, 5 + Math.floor(rand() * 70));
    refusedTotal += refused;
    eventsTotal += store.live.filter((f) => f.kind).length;
    const want = store.latest();
    const n = store.head;
    const where = `seed ${seed}, ${n} entries`;

    // Every frame live, in order, from an empty room.
    const all = new RoomState();
    for (const f of store.live) all.apply(f);
    assert.deepEqual(all.messages(), want, `live from the start: ${where}`);

    for (let trial = 0; trial < 4; trial++) {
      // The latest state of the messages up to k (a page of history at time k), then
      // the rest of the log as it was delivered.
      const k = Math.floor(rand() * (n + 1));
      const snap = new RoomState();
      for (const r of store.view(k)) if (isMessage(r)) snap.apply(r);
      for (const f of store.live.slice(k)) snap.apply(f);
      assert.deepEqual(snap.messages(), want, `snapshot at ${k} + live: ${where}`);

      // A replay (join with since = k) read from the store at a later time T: the
      // entries after k as the store holds them then (messages in their latest state,
      // edit bodies cleared by a delete), then live from T on.
      const tt = k + Math.floor(rand() * (n - k + 1));
      const replay = new RoomState();
      for (const r of store.view(k)) if (isMessage(r)) replay.apply(r);
      for (const r of store.view(tt).slice(k)) replay.apply(r);
      for (const f of store.live.slice(tt)) replay.apply(f);
      assert.deepEqual(replay.messages(), want, `snapshot at ${k}, replay read at ${tt}, then live: ${where}`);
    }
  }
  // The generator exercises what it should.
  assert.ok(refusedTotal > runs, `refusals generated: ${refusedTotal}`);
  assert.ok(eventsTotal > runs * 5, `events generated: ${eventsTotal}`);
});

test('randomized: the client joined mid-room, paging history late, reconnecting and reading, ends in the store state and the exact unread count', async () => {
  const runs = Number(process.env.COURIER_PROPERTY_RUNS || 400) / 4;
  for (let run = 0; run < runs; run++) {
    const seed = 0xc11e + run;
    const rand = prng(seed);
    const { store } = randomLog(rand, 10 + Math.floor(rand() * 60));
    const n = store.head;
    const where = `seed ${seed}, ${n} entries`;
    const between = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));
    const h = between(0, n); // head at the join
    const read0 = between(0, h);
    const t = setup();
    const ws = await joined(t, 'lobby', { head: h, read: read0, unread: store.unread('alice', read0, h) });
    // The page asks for the history below the head at once; the answer may come after
    // live frames, read from the store at any later time.
    const hist = h > 0 ? t.client.history('lobby', { before: h + 1, limit: 200 }) : null;
    const [histCmd] = ws.take('history');
    let j1 = between(h, n);
    let j2 = between(h, n); // the connection drops after delivering up to here
    if (j1 > j2) [j1, j2] = [j2, j1];
    let sock = ws;
    let pos = h; // last seq pushed on the current socket
    let lastRead = read0;
    const readAt = async () => {
      // Reads the newest delivered seq, the way the page does; the gateway answers with
      // its count at some time at or after it.
      const seq = t.client.lastSeq('lobby');
      const p = t.client.read('lobby', seq);
      const [cmd] = sock.take('read');
      assert.equal(cmd.seq, seq);
      lastRead = Math.max(lastRead, seq);
      sock.push({ type: 'read', room: 'lobby', seq: lastRead, unread: store.unread('alice', lastRead, pos), ref: cmd.ref });
      const got = await p;
      assert.equal(got.read, lastRead);
      assert.equal(got.unread, store.unread('alice', lastRead, pos), `unread after read at ${pos}: ${where}`);
    };
    const push = async (upTo) => {
      while (pos < upTo) {
        sock.push(store.live[pos]);
        pos++;
        if (rand() < 0.1) await readAt();
      }
    };
    await push(j1);
    if (hist) {
      const tt = between(Math.max(h, 1), n);
      const rows = store.view(tt).filter((r) => r.seq < histCmd.before).slice(-histCmd.limit);
      ws.push({ type: 'history', room: 'lobby', messages: rows, ref: histCmd.ref });
      assert.deepEqual(await hist, rows);
    }
    await push(j2);
    if (j2 < n || rand() < 0.5) {
      // Reconnect: a rejoin with since, a replay read at some later time, then live.
      sock.drop(1012);
      await t.clock.advance(0);
      sock = t.last();
      sock.accept();
      const [join] = sock.take('join');
      assert.equal(join.since, j2, where);
      const tr = between(j2, n);
      sock.push({ type: 'joined', room: 'lobby', head: tr, read: lastRead, unread: store.unread('alice', lastRead, tr), ref: join.ref });
      for (const r of store.view(tr).slice(j2)) sock.push(r);
      pos = tr;
      await push(n);
    }
    await flush();
    assert.deepEqual(t.errors, [], where);
    assert.deepEqual(t.client.messages('lobby'), store.latest(), `latest state: ${where}`);
    assert.deepEqual(
      t.client.readState('lobby'),
      { read: lastRead, unread: store.unread('alice', lastRead, n) },
      `read state: ${where}`,
    );
    // Every update handed out the state the client held then; the last one per seq is
    // the state now.
    const lastUpdate = new Map();
    for (const u of t.updates) lastUpdate.set(u.seq, u.message);
    for (const [seq, m] of lastUpdate) {
      if (seq > h) assert.deepEqual(m, t.client.message('lobby', seq), `update of ${seq}: ${where}`);
    }
    t.client.close();
  }
});

// ---- the commands -------------------------------------------------------------------

test('edit, deleteMessage and react send their commands with their own ids and resolve on the ack', async () => {
  const t = setup();
  const ws = await joined(t, 'lobby', { head: 5, read: 5, unread: 0 });
  const e = t.client.edit('lobby', 3, 'fixed');
  const d = t.client.deleteMessage('lobby', 4, { id: 'del-4' });
  const r = t.client.react('lobby', 2, '👍');
  const u = t.client.react('lobby', 2, '🎉', { remove: true });
  const s = t.client.send('lobby', 'yes!', { replyTo: 2 });
  assert.deepEqual(
    ws.take().map(({ ref, ...f }) => f),
    [
      { type: 'edit', room: 'lobby', id: 't-1', body: 'fixed', target: 3 },
      { type: 'delete', room: 'lobby', id: 'del-4', target: 4 },
      { type: 'react', room: 'lobby', id: 't-2', target: 2, emoji: '👍' },
      { type: 'react', room: 'lobby', id: 't-3', target: 2, emoji: '🎉', remove: true },
      { type: 'send', room: 'lobby', id: 't-4', body: 'yes!', reply_to: 2 },
    ],
  );
  assert.deepEqual(
    t.client.pending().map((p) => [p.type, p.id]),
    [
      ['edit', 't-1'],
      ['delete', 'del-4'],
      ['react', 't-2'],
      ['react', 't-3'],
      ['send', 't-4'],
    ],
  );
  for (const id of ['t-1', 'del-4', 't-2', 't-3', 't-4']) ws.push({ type: 'ack', room: 'lobby', id });
  assert.deepEqual(await e, { room: 'lobby', id: 't-1' });
  assert.deepEqual(await d, { room: 'lobby', id: 'del-4' });
  assert.deepEqual(await r, { room: 'lobby', id: 't-2' });
  assert.deepEqual(await u, { room: 'lobby', id: 't-3' });
  assert.deepEqual(await s, { room: 'lobby', id: 't-4' });
  assert.deepEqual(t.client.pending(), []);
});

test('an unacked edit is sent again with its id after a reconnect; one whose event came back stored is settled; forbidden rejects', async () => {
  const t = setup();
  let ws = await joined(t, 'lobby', { head: 3, read: 3, unread: 0 });
  const e = t.client.edit('lobby', 1, 'again', { id: 'e-1' });
  const r = t.client.react('lobby', 1, '👍', { id: 'r-1' });
  ws.take();
  ws.drop(1012);
  await t.clock.advance(0);
  ws = t.last();
  ws.accept();
  const [join] = ws.take('join');
  ws.push({ type: 'joined', room: 'lobby', head: 3, read: 3, unread: 0, ref: join.ref });
  assert.deepEqual(
    ws.take().map((f) => [f.type, f.id, f.target]),
    [
      ['edit', 'e-1', 1],
      ['react', 'r-1', 1],
    ],
  );
  // The ack is lost; the stored event arrives: settled.
  ws.push(ev(4, 'alice', 'edit', 1, { id: 'e-1', body: 'again' }));
  assert.deepEqual(await e, { room: 'lobby', id: 'e-1' });
  ws.push({ type: 'error', code: 'forbidden', message: 'deleted', id: 'r-1' });
  await assert.rejects(r, (err) => err.code === 'forbidden' && err.room === 'lobby');
});

test('commands are checked before anything is sent', async () => {
  const t = setup();
  const ws = await joined(t, 'lobby', { head: 1 });
  const code = (p) => p.then(
    () => 'ok',
    (e) => e.code,
  );
  assert.equal(await code(t.client.edit('nowhere', 1, 'x')), 'not_joined');
  assert.equal(await code(t.client.edit('lobby', 0, 'x')), 'bad_request');
  assert.equal(await code(t.client.edit('lobby', 1, '')), 'bad_request');
  assert.equal(await code(t.client.edit('lobby', 1, 'x'.repeat(4097))), 'too_large');
  assert.equal(await code(t.client.deleteMessage('lobby', 1.5)), 'bad_request');
  assert.equal(await code(t.client.react('lobby', 1, '')), 'bad_request');
  assert.equal(await code(t.client.react('lobby', 1, 'a b')), 'bad_request');
  assert.equal(await code(t.client.react('lobby', 1, 'x'.repeat(33))), 'bad_request');
  assert.equal(await code(t.client.send('lobby', 'x', { replyTo: -1 })), 'bad_request');
  assert.equal(await code(t.client.read('lobby', -1)), 'bad_request');
  assert.equal(await code(t.client.read('nowhere', 1)), 'not_joined');
  assert.deepEqual(ws.take(), []);
  t.client.react('lobby', 1, '👨‍👩‍👧‍👦'); // 25 bytes
  t.client.react('lobby', 1, ':+1:');
  assert.deepEqual(
    ws.take().map((f) => f.emoji),
    ['👨‍👩‍👧‍👦', ':+1:'],
  );
});

// ---- the client's latest state ----------------------------------------------------------

test('the client keeps the latest state of each message and says what changed', async () => {
  const t = setup();
  const ws = await joined(t, 'lobby', { head: 0, read: 0, unread: 0 });
  ws.push(msg(1, 'alice', { body: 'helo' }));
  ws.push(msg(2, 'bob', { reply_to: 1 }));
  ws.push(ev(3, 'alice', 'edit', 1, { body: 'hello' }));
  ws.push(react(4, 'bob', 1, '👍'));
  ws.push(react(5, 'alice', 1, '👍'));
  ws.push(ev(6, 'bob', 'delete', 2));
  ws.push(react(7, 'alice', 2, '👍')); // on a deleted one: ignored
  assert.deepEqual(
    t.updates.map((u) => [u.seq, u.cause, u.event.seq]),
    [
      [1, 'message', 1],
      [2, 'message', 2],
      [1, 'edit', 3],
      [1, 'reaction', 4],
      [1, 'reaction', 5],
      [2, 'delete', 6],
    ],
  );
  const [one, two] = t.client.messages('lobby');
  assert.equal(one.body, 'hello');
  assert.equal(one.edited_at, msg(3).sent_at);
  assert.deepEqual(one.reactions, { '👍': ['alice', 'bob'] });
  assert.equal(two.deleted, true);
  assert.equal(two.body, '');
  assert.equal(two.reply_to, 1);
  assert.equal(t.client.message('lobby', 2), two);
  assert.equal(t.client.message('lobby', 3), null, 'events are not messages');
  assert.deepEqual(t.client.messages('nowhere'), []);
});

test('a history page fills in older messages, with the events that came for them before it', async () => {
  const t = setup();
  const ws = await joined(t, 'lobby', { head: 2, read: 2, unread: 0 });
  const page = t.client.history('lobby', { before: 3 });
  const [cmd] = ws.take('history');
  // Live events on messages this client has not seen yet.
  ws.push(ev(3, 'carol', 'edit', 1, { body: 'new body' }));
  ws.push(react(4, 'bob', 2, '🎉'));
  assert.equal(t.updates.length, 0);
  // The page was read before those events were stored.
  ws.push({ type: 'history', room: 'lobby', messages: [msg(1, 'carol'), msg(2, 'alice')], ref: cmd.ref });
  await page;
  assert.equal(t.client.message('lobby', 1).body, 'new body');
  assert.deepEqual(t.client.message('lobby', 2).reactions, { '🎉': ['bob'] });
  // A second page with the same messages does not undo what is known.
  const again = t.client.history('lobby', { before: 3 });
  const [cmd2] = ws.take('history');
  ws.push({ type: 'history', room: 'lobby', messages: [msg(1, 'carol'), msg(2, 'alice')], ref: cmd2.ref });
  await again;
  assert.equal(t.client.message('lobby', 1).body, 'new body');
});

test('the state of a room is bounded, the oldest messages going first', async () => {
  const t = setup({ maxMessages: 50 });
  const ws = await joined(t, 'lobby', { head: 0 });
  for (let s = 1; s <= 200; s++) ws.push(msg(s));
  const seqs = t.client.messages('lobby').map((m) => m.seq);
  assert.ok(seqs.length <= 53 && seqs.length >= 50, `${seqs.length}`);
  assert.equal(seqs[seqs.length - 1], 200);
  ws.push(ev(201, 'bob', 'edit', 10, { body: 'x' }));
  assert.equal(t.client.message('lobby', 10), null);
});

// ---- read state ----------------------------------------------------------------------

test('unread: from joined, counting others’ new messages, uncounting their deletes, not own messages or events', async () => {
  const t = setup();
  const ws = await joined(t, 'lobby', { head: 10, read: 7, unread: 2 });
  assert.deepEqual(t.client.readState('lobby'), { read: 7, unread: 2 });
  assert.deepEqual(t.reads.at(-1), { room: 'lobby', read: 7, unread: 2 });
  ws.push(msg(11, 'bob'));
  ws.push(msg(12, 'alice'));
  ws.push(react(13, 'bob', 11, '👍'));
  ws.push(ev(14, 'bob', 'edit', 11, { body: 'x' }));
  assert.deepEqual(t.client.readState('lobby'), { read: 7, unread: 3 });
  ws.push(ev(15, 'bob', 'delete', 11));
  ws.push(ev(16, 'carol', 'delete', 9, { moderated: true })); // counted by the gateway's 2
  ws.push(ev(17, 'alice', 'delete', 12)); // own: never counted
  ws.push(ev(18, 'dora', 'delete', 5)); // before the cursor
  assert.deepEqual(t.client.readState('lobby'), { read: 7, unread: 1 });
  assert.deepEqual(
    t.reads.map((r) => r.unread),
    [2, 3, 2, 1],
  );
});

test('read moves the cursor; the count is recounted from the state, and the same frame from another device applies too', async () => {
  const t = setup();
  const ws = await joined(t, 'lobby', { head: 4, read: 4, unread: 0 });
  for (let s = 5; s <= 9; s++) ws.push(msg(s, s === 8 ? 'alice' : 'bob'));
  assert.equal(t.client.readState('lobby').unread, 4);
  const p = t.client.read('lobby', 6);
  const [cmd] = ws.take('read');
  assert.deepEqual({ ...cmd, ref: undefined }, { type: 'read', room: 'lobby', seq: 6, ref: undefined });
  // The gateway counted a message this connection has not received yet (10): the
  // client's count comes from what it holds, and 10 is counted when it arrives.
  ws.push({ type: 'read', room: 'lobby', seq: 6, unread: 3, ref: cmd.ref });
  assert.deepEqual(await p, { room: 'lobby', read: 6, unread: 2 });
  ws.push(msg(10, 'bob'));
  assert.deepEqual(t.client.readState('lobby'), { read: 6, unread: 3 });
  // Another of alice's devices read up to 9.
  ws.push({ type: 'read', room: 'lobby', seq: 9, unread: 1 });
  assert.deepEqual(t.client.readState('lobby'), { read: 9, unread: 1 });
  assert.deepEqual(t.reads.at(-1), { room: 'lobby', read: 9, unread: 1 });
  // Frames from two devices may cross: one behind the cursor changes nothing.
  ws.push({ type: 'read', room: 'lobby', seq: 7, unread: 2 });
  assert.deepEqual(t.client.readState('lobby'), { read: 9, unread: 1 });
});

test('a read cursor from another device below what this client saw since joining takes the gateway count', async () => {
  const t = setup();
  const ws = await joined(t, 'lobby', { head: 10, read: 1, unread: 8 });
  ws.push(msg(11, 'bob'));
  assert.deepEqual(t.client.readState('lobby'), { read: 1, unread: 9 });
  ws.push({ type: 'read', room: 'lobby', seq: 4, unread: 6 });
  assert.deepEqual(t.client.readState('lobby'), { read: 4, unread: 6 });
  ws.push(msg(12, 'bob'));
  assert.deepEqual(t.client.readState('lobby'), { read: 4, unread: 7 });
});

test('read and reads need a live join; reads merges cursors forward only and emits what moved', async () => {
  const t = setup();
  const seen = [];
  t.client.on('reads', (r) => seen.push(r));
  t.client.connect();
  t.last().accept();
  const joining = t.client.join('lobby');
  await assert.rejects(t.client.read('lobby', 1), (e) => e.code === 'disconnected');
  await assert.rejects(t.client.reads('lobby'), (e) => e.code === 'disconnected');
  const ws = t.last();
  const [join] = ws.take('join');
  ws.push({ type: 'joined', room: 'lobby', head: 50, read: 40, unread: 3, ref: join.ref });
  await joining;
  const p = t.client.reads('lobby');
  const [cmd] = ws.take('reads');
  assert.deepEqual({ type: cmd.type, room: cmd.room }, { type: 'reads', room: 'lobby' });
  ws.push({ type: 'reads', room: 'lobby', reads: { alice: 40, bob: 43 }, ref: cmd.ref });
  assert.deepEqual(await p, { room: 'lobby', reads: { alice: 40, bob: 43 } });
  ws.push({ type: 'reads', room: 'lobby', reads: { bob: 45, carol: 2 } });
  ws.push({ type: 'reads', room: 'lobby', reads: { bob: 44 } }); // older: nothing moves
  assert.deepEqual(t.client.seenBy('lobby'), { alice: 40, bob: 45, carol: 2 });
  assert.deepEqual(
    seen.map((s) => s.changed),
    [{ alice: 40, bob: 43 }, { bob: 45, carol: 2 }],
  );
  // A rate_limited answer is retried like history.
  const q = t.client.read('lobby', 50);
  const [r1] = ws.take('read');
  ws.push({ type: 'error', code: 'rate_limited', message: 'slow down', ref: r1.ref });
  await t.clock.advance(1000);
  const [r2] = ws.take('read');
  assert.equal(r2.ref, r1.ref);
  ws.push({ type: 'read', room: 'lobby', seq: 50, unread: 0, ref: r2.ref });
  assert.deepEqual(await q, { room: 'lobby', read: 50, unread: 0 });
});

test('a room reset or a leave forgets the room state; a no-op reaction is no update', async () => {
  const t = setup();
  let ws = await joined(t, 'lobby', { head: 0, read: 0, unread: 0 });
  ws.push(msg(1, 'bob'));
  ws.push(msg(2, 'bob'));
  ws.push(react(3, 'carol', 1, '👍'));
  ws.push(react(4, 'carol', 1, '🎉', true)); // nothing to remove
  assert.deepEqual(
    t.updates.map((u) => u.cause),
    ['message', 'message', 'reaction'],
  );
  // The store was wiped: the rejoin finds a lower head.
  ws.drop(1012);
  await t.clock.advance(0);
  ws = t.last();
  ws.accept();
  const [join] = ws.take('join');
  assert.equal(join.since, 4);
  ws.push({ type: 'joined', room: 'lobby', head: 1, read: 0, unread: 1, ref: join.ref });
  assert.equal(t.errors[0].code, 'room_reset');
  assert.deepEqual(t.client.messages('lobby'), []);
  assert.deepEqual(t.client.readState('lobby'), { read: 0, unread: 1 });
  ws.push(msg(2, 'dora'));
  assert.deepEqual(
    t.client.messages('lobby').map((m) => [m.seq, m.from]),
    [[2, 'dora']],
  );
  t.client.leave('lobby'); // the gateway's answer does not matter here
  assert.deepEqual(t.client.messages('lobby'), []);
  assert.equal(t.client.readState('lobby'), null);
  assert.deepEqual(t.client.seenBy('lobby'), {});
});
