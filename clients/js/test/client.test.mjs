// Unit tests of the courier client's reconnect, resume, dedupe and pending-send logic,
// against a fake WebSocket and a fake clock injected into the client.
// Run: node --test clients/js/test/

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CourierClient, CourierError } from '../../../gateway/static/client.js';
import { fakeClient, flush } from '../fakes.mjs';

function msg(room, seq, extra = {}) {
  return {
    type: 'message',
    room,
    seq,
    id: `m-${seq}`,
    from: 'bob',
    body: `body ${seq}`,
    sent_at: '2026-11-25T18:00:00.123Z',
    enriched: { mentions: [], hashtags: [], links: [], lang: null, flagged: false },
    ...extra,
  };
}

/** A client over fakes, recording what it delivers; `random` fixed for exact delays. */
function setup(options = {}) {
  const { client, clock, sockets } = fakeClient(options);
  const got = [];
  const states = [];
  const errors = [];
  client.on('message', (m) => got.push(`${m.room}:${m.seq}`));
  client.on('state', (s) => states.push(s));
  client.on('error', (e) => errors.push(e));
  const last = () => sockets[sockets.length - 1];
  return { client, clock, sockets, last, got, states, errors };
}

/** Connects, joins `room` at `head`, and returns the socket. */
async function joined(t, room = 'lobby', head = 0) {
  t.client.connect();
  const ws = t.last();
  ws.accept();
  const p = t.client.join(room);
  const [join] = ws.take('join');
  assert.equal(join.room, room);
  ws.push({ type: 'joined', room, head, ref: join.ref });
  assert.deepEqual(await p, { room, head });
  return ws;
}

/** Answers a history command the way the gateway does, from a room of `head` messages. */
function answerHistory(ws, cmd, head) {
  const before = cmd.before ?? head + 1;
  const from = Math.max(1, before - cmd.limit);
  const messages = [];
  for (let s = from; s < before && s <= head; s++) messages.push(msg(cmd.room, s));
  ws.push({ type: 'history', room: cmd.room, messages, ref: cmd.ref });
}

test('connects with ?user= or with a token (also from a function, called per attempt)', async () => {
  const a = setup();
  a.client.connect();
  assert.equal(a.last().url, 'ws://gw.test/ws?user=alice');
  assert.equal(a.client.state, 'connecting');
  a.last().accept('alice');
  assert.equal(a.client.state, 'connected');
  assert.equal(a.client.user, 'alice');

  let calls = 0;
  const b = setup({ user: undefined, token: () => `tok${++calls}` });
  b.client.connect();
  assert.equal(b.last().url, 'ws://gw.test/ws?token=tok1');
  b.last().drop(1006);
  await b.clock.advance(250);
  assert.equal(b.last().url, 'ws://gw.test/ws?token=tok2');

  const c = setup({ user: undefined, token: () => Promise.resolve('async-tok') });
  c.client.connect();
  await flush();
  assert.equal(c.last().url, 'ws://gw.test/ws?token=async-tok');
});

test('with tokenVia protocol the token rides in the subprotocols, beside courier, not in the URL', async () => {
  const jwt = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ6b2VfNDIifQ.c2ln';
  const t = setup({ user: undefined, token: () => jwt, tokenVia: 'protocol' });
  t.client.connect();
  assert.equal(t.last().url, 'ws://gw.test/ws');
  assert.deepEqual(t.last().protocols, ['courier', `bearer.${jwt}`]);
  t.last().accept('zoe_42');
  assert.equal(t.client.user, 'zoe_42');

  const q = setup({ user: undefined, token: jwt });
  q.client.connect();
  assert.equal(q.last().url, `ws://gw.test/ws?token=${jwt}`, 'the query string stays the default');
  assert.equal(q.last().protocols, undefined);
  const u = setup({ tokenVia: 'protocol' });
  u.client.connect();
  assert.equal(u.last().url, 'ws://gw.test/ws?user=alice', 'no token: ?user= as before');
  assert.equal(u.last().protocols, undefined);
});

test('history pages cut to fit one frame are paged on below, and nothing is lost or repeated', async () => {
  const t = setup();
  const ws = await joined(t, 'lobby', 0);
  ws.push(msg('lobby', 1));
  for (let s = 300; s <= 305; s++) ws.push(msg('lobby', s)); // 2..299 missing
  let pages = 0;
  for (let round = 0; round < 200 && t.got.length < 305; round++) {
    await flush();
    for (const cmd of ws.take('history')) {
      // Large messages: the gateway answers with only the newest 7 below `before`.
      const before = cmd.before ?? 306;
      const messages = [];
      for (let s = Math.max(1, before - Math.min(cmd.limit, 7)); s < before; s++) {
        messages.push(msg('lobby', s, { body: `€${s}.99 🚚 `.repeat(200) }));
      }
      ws.push({ type: 'history', room: cmd.room, messages, ref: cmd.ref });
      pages++;
    }
  }
  assert.ok(pages > 40, `paged in small steps: ${pages}`);
  assert.deepEqual(t.got, Array.from({ length: 305 }, (_, i) => `lobby:${i + 1}`));
  assert.deepEqual(t.errors.filter((e) => e.code === 'gap'), [], 'a cut page is not a gap');
});

test('delivers each seq once, in order, and drops repeats', async () => {
  const t = setup();
  const ws = await joined(t, 'lobby', 5);
  ws.push(msg('lobby', 6));
  ws.push(msg('lobby', 6));
  ws.push(msg('lobby', 5));
  ws.push(msg('lobby', 7));
  ws.push(msg('other', 8)); // not joined: ignored
  assert.deepEqual(t.got, ['lobby:6', 'lobby:7']);
  assert.equal(t.client.lastSeq('lobby'), 7);
});

test('reconnects with exponential backoff and jitter, capped', async () => {
  let r = 0;
  const t = setup({ random: () => r, minDelay: 100, maxDelay: 1000 });
  t.client.connect();
  const delays = [];
  t.client.on('state', (s) => s.state === 'reconnecting' && delays.push(s.delay));
  for (let i = 0; i < 6; i++) t.last().drop(1006), await t.clock.advance(5000);
  assert.deepEqual(delays, [100, 200, 400, 800, 1000, 1000]);
  // Jitter takes up to half the delay off.
  r = 0.999;
  t.last().drop(1006);
  assert.ok(delays.at(-1) >= 500 && delays.at(-1) <= 501, `jittered ${delays.at(-1)}`);
  // Nothing happens before the delay is over.
  const n = t.sockets.length;
  await t.clock.advance(499);
  assert.equal(t.sockets.length, n);
  await t.clock.advance(10);
  assert.equal(t.sockets.length, n + 1);
  // A good connection starts the backoff over.
  t.last().accept();
  t.last().drop(1006);
  assert.equal(delays.at(-1), 50);
});

test('reconnects at once on close code 1012', async () => {
  const t = setup({ minDelay: 5000 });
  const ws = await joined(t);
  ws.drop(1012, 'gateway restarting');
  assert.equal(t.client.state, 'reconnecting');
  assert.equal(t.states.at(-1).delay, 0);
  assert.equal(t.states.at(-1).code, 1012);
  await t.clock.advance(0);
  assert.equal(t.sockets.length, 2);
  assert.equal(t.client.state, 'connecting');
});

test('rejoins every room with since = the last seq delivered, without repeats', async () => {
  const t = setup();
  const ws = await joined(t, 'lobby', 3);
  t.client.join('dev');
  const [j] = ws.take('join');
  ws.push({ type: 'joined', room: 'dev', head: 0, ref: j.ref });
  ws.push(msg('lobby', 4));
  ws.push(msg('lobby', 5));
  ws.push(msg('dev', 1));
  ws.drop(1006);
  await t.clock.advance(1000);
  const ws2 = t.last();
  assert.notEqual(ws2, ws);
  ws2.accept();
  const joins = ws2.take('join');
  assert.deepEqual(
    joins.map(({ room, since }) => ({ room, since })),
    [
      { room: 'lobby', since: 5 },
      { room: 'dev', since: 1 },
    ],
  );
  ws2.push({ type: 'joined', room: 'lobby', head: 6, ref: joins[0].ref });
  ws2.push(msg('lobby', 5)); // a repeat the client must drop
  ws2.push(msg('lobby', 6));
  ws2.push({ type: 'joined', room: 'dev', head: 1, ref: joins[1].ref });
  ws2.push(msg('dev', 2));
  assert.deepEqual(t.got, ['lobby:4', 'lobby:5', 'dev:1', 'lobby:6', 'dev:2']);
});

test('a truncated replay is paged through history before the replay and live ones are shown', async () => {
  const t = setup();
  const ws = await joined(t, 'lobby', 0);
  for (let s = 1; s <= 7; s++) ws.push(msg('lobby', s));
  ws.drop(1012);
  await t.clock.advance(0);
  const ws2 = t.last();
  ws2.accept();
  const [join] = ws2.take('join');
  assert.equal(join.since, 7);
  const head = 1000;
  ws2.push({ type: 'joined', room: 'lobby', head, truncated: true, ref: join.ref });
  // The gateway replays only the newest 500, then live traffic follows.
  for (let s = head - 499; s <= head; s++) ws2.push(msg('lobby', s));
  ws2.push(msg('lobby', 1001));
  assert.equal(t.got.length, 7, 'nothing beyond the gap is shown before it is filled');
  for (let round = 0; round < 10; round++) {
    await flush();
    for (const cmd of ws2.take('history')) {
      assert.ok(cmd.limit <= 200);
      answerHistory(ws2, cmd, 1001);
    }
  }
  await flush();
  ws2.push(msg('lobby', 1002));
  const want = Array.from({ length: 1002 }, (_, i) => `lobby:${i + 1}`);
  assert.deepEqual(t.got, want);
});

test('fills a gap in live traffic from history, and keeps the hold buffer bounded', async () => {
  const t = setup({ maxBuffered: 3 });
  const ws = await joined(t, 'lobby', 0);
  ws.push(msg('lobby', 1));
  for (let s = 3; s <= 12; s++) ws.push(msg('lobby', s)); // 2 is missing
  let pages = 0;
  for (let round = 0; round < 10; round++) {
    await flush();
    for (const cmd of ws.take('history')) {
      assert.ok(cmd.before <= 13);
      answerHistory(ws, cmd, 12);
      pages++;
    }
  }
  assert.ok(pages >= 1);
  assert.deepEqual(t.got, Array.from({ length: 12 }, (_, i) => `lobby:${i + 1}`));
});

test('send resolves on ack; unacked sends are re-sent with the same id after a reconnect', async () => {
  const t = setup();
  const ws = await joined(t, 'lobby', 0);
  const acked = [];
  const p1 = t.client.send('lobby', 'one').then((v) => acked.push(v.id));
  const p2 = t.client.send('lobby', 'two').then((v) => acked.push(v.id));
  const sends = ws.take('send');
  assert.deepEqual(
    sends.map((s) => [s.id, s.body]),
    [
      ['t-1', 'one'],
      ['t-2', 'two'],
    ],
  );
  ws.push({ type: 'ack', room: 'lobby', id: 't-1' });
  await p1;
  assert.deepEqual(acked, ['t-1']);
  assert.deepEqual(t.client.pending(), [{ room: 'lobby', id: 't-2', type: 'send', body: 'two' }]);
  // The connection drops before t-2's ack; a send made while down waits too.
  ws.drop(1006);
  const p3 = t.client.send('lobby', 'three').then((v) => acked.push(v.id));
  await t.clock.advance(1000);
  const ws2 = t.last();
  ws2.accept();
  assert.deepEqual(ws2.take('send'), [], 'nothing is sent before the room is joined again');
  const [join] = ws2.take('join');
  ws2.push({ type: 'joined', room: 'lobby', head: 1, ref: join.ref });
  assert.deepEqual(
    ws2.take('send').map((s) => [s.id, s.body]),
    [
      ['t-2', 'two'],
      ['t-3', 'three'],
    ],
  );
  ws2.push({ type: 'ack', room: 'lobby', id: 't-2' });
  ws2.push({ type: 'ack', room: 'lobby', id: 't-3' });
  await Promise.all([p2, p3]);
  assert.deepEqual(acked, ['t-1', 't-2', 't-3']);
  assert.deepEqual(t.client.pending(), []);
});

test('own message delivered before its ack settles the send', async () => {
  const t = setup();
  const ws = await joined(t, 'lobby', 0);
  const p = t.client.send('lobby', 'hi', { id: 'mine-1' });
  ws.push(msg('lobby', 1, { id: 'mine-1', from: 'alice', body: 'hi' }));
  assert.deepEqual(await p, { room: 'lobby', id: 'mine-1' });
  ws.push({ type: 'ack', room: 'lobby', id: 'mine-1' }); // late ack: harmless
  assert.deepEqual(t.client.pending(), []);
});

test('unavailable and rate_limited are retried with backoff and the same id; other errors reject', async () => {
  const t = setup({ minDelay: 100 });
  const ws = await joined(t, 'lobby', 0);
  const p = t.client.send('lobby', 'hello', { id: 'x-1' });
  ws.take('send');
  ws.push({ type: 'error', code: 'unavailable', message: 'queue down', id: 'x-1' });
  await t.clock.advance(99);
  assert.deepEqual(ws.take('send'), []);
  await t.clock.advance(1);
  assert.deepEqual(ws.take('send').map((s) => s.id), ['x-1']);
  ws.push({ type: 'error', code: 'rate_limited', message: 'slow down', id: 'x-1' });
  await t.clock.advance(200);
  assert.deepEqual(ws.take('send').map((s) => s.id), ['x-1']);
  ws.push({ type: 'ack', room: 'lobby', id: 'x-1' });
  assert.deepEqual(await p, { room: 'lobby', id: 'x-1' });

  const bad = t.client.send('lobby', 'again', { id: 'x-2' });
  ws.push({ type: 'error', code: 'bad_request', message: 'nope', id: 'x-2' });
  await assert.rejects(bad, (e) => e instanceof CourierError && e.code === 'bad_request' && e.id === 'x-2');
  assert.deepEqual(t.client.pending(), []);
});

test('a send waiting out a backoff holds back the later sends of its room, so typed order is kept', async () => {
  const t = setup({ minDelay: 100 });
  const ws = await joined(t, 'lobby', 0);
  const done = [];
  const sent = ['a-1', 'a-2'].map((id) => t.client.send('lobby', id, { id }).then(() => done.push(id)));
  assert.deepEqual(ws.take('send').map((s) => s.id), ['a-1', 'a-2']);
  // a-1 is refused for now; a-2 was already on its way and is refused too.
  ws.push({ type: 'error', code: 'rate_limited', message: 'slow down', id: 'a-1' });
  const later = t.client.send('lobby', 'a-3', { id: 'a-3' }).then(() => done.push('a-3'));
  assert.deepEqual(ws.take('send'), [], 'a-3 waits behind a-1');
  ws.push({ type: 'error', code: 'rate_limited', message: 'slow down', id: 'a-2' });
  await t.clock.advance(100);
  assert.deepEqual(ws.take('send').map((s) => s.id), ['a-1', 'a-2', 'a-3'], 'sent again in typed order');
  for (const id of ['a-1', 'a-2', 'a-3']) ws.push({ type: 'ack', room: 'lobby', id });
  await Promise.all([...sent, later]);
  assert.deepEqual(done, ['a-1', 'a-2', 'a-3']);
});

test('sends typed while offline go out in typed order, behind one still backing off', async () => {
  const t = setup({ minDelay: 100 });
  const ws = await joined(t, 'lobby', 0);
  t.client.send('lobby', 'one', { id: 'o-1' });
  ws.take('send');
  ws.push({ type: 'error', code: 'unavailable', message: 'queue down', id: 'o-1' });
  ws.drop(1012);
  for (const id of ['o-2', 'o-3', 'o-4']) t.client.send('lobby', id, { id });
  await t.clock.advance(0);
  const ws2 = t.last();
  ws2.accept();
  const [join] = ws2.take('join');
  ws2.push({ type: 'joined', room: 'lobby', head: 0, ref: join.ref });
  assert.deepEqual(ws2.take('send').map((s) => s.id), ['o-1', 'o-2', 'o-3', 'o-4']);
});

test('refuses bad sends locally, and bounds the pending sends', async () => {
  const t = setup({ maxPending: 2 });
  await assert.rejects(t.client.send('nowhere', 'x'), { code: 'not_joined' });
  t.client.join('lobby');
  await assert.rejects(t.client.send('lobby', ''), { code: 'bad_request' });
  await assert.rejects(t.client.send('lobby', 'é'.repeat(2049)), { code: 'too_large' });
  await assert.rejects(t.client.send('lobby', 'x', { id: 'a\nb' }), { code: 'bad_request' });
  await assert.rejects(t.client.join('bad room'), { code: 'bad_request' });
  t.client.send('lobby', 'a');
  t.client.send('lobby', 'b');
  await assert.rejects(t.client.send('lobby', 'c'), { code: 'overloaded' });
  assert.equal(t.client.pending().length, 2);
});

test('a join refused with unavailable is retried; a bad one rejects and drops the room', async () => {
  const t = setup({ minDelay: 100 });
  t.client.connect();
  const ws = t.last();
  ws.accept();
  const p = t.client.join('lobby');
  let [j] = ws.take('join');
  ws.push({ type: 'error', code: 'unavailable', message: 'store down', ref: j.ref });
  await t.clock.advance(100);
  [j] = ws.take('join');
  assert.equal(j.room, 'lobby');
  ws.push({ type: 'joined', room: 'lobby', head: 2, ref: j.ref });
  assert.deepEqual(await p, { room: 'lobby', head: 2 });

  const q = t.client.join('many');
  const [k] = ws.take('join');
  ws.push({ type: 'error', code: 'bad_request', message: 'too many rooms', ref: k.ref });
  await assert.rejects(q, { code: 'bad_request' });
  assert.deepEqual(t.client.rooms, ['lobby']);
});

test('leave stops delivery and rejects that room sends', async () => {
  const t = setup();
  const ws = await joined(t, 'lobby', 0);
  const s = t.client.send('lobby', 'bye');
  const left = t.client.leave('lobby');
  const [l] = ws.take('leave');
  ws.push({ type: 'left', room: 'lobby', ref: l.ref });
  assert.deepEqual(await left, { room: 'lobby' });
  await assert.rejects(s, { code: 'left' });
  ws.push(msg('lobby', 1));
  assert.deepEqual(t.got, []);
  assert.deepEqual(t.client.rooms, []);
});

test('removed from a private room: a left event, no more of its messages, no rejoin', async () => {
  const t = setup();
  const ws = await joined(t, 'secret', 0);
  const left = [];
  t.client.on('left', (e) => left.push(e));
  ws.push(msg('secret', 1));
  ws.push({ type: 'left', room: 'secret', reason: 'removed' });
  ws.push(msg('secret', 2));
  assert.deepEqual(t.got, ['secret:1']);
  assert.deepEqual(left, [{ room: 'secret', reason: 'removed' }]);
  assert.deepEqual(t.client.rooms, []);
  ws.close(1012, 'restart');
  await t.clock.advance(10_000);
  const again = t.last();
  again.accept();
  assert.deepEqual(again.take('join'), [], 'the room is not rejoined');
});

test('a silent connection is dropped and replaced; a hello that never comes too', async () => {
  const t = setup({ pingInterval: 1000, pongTimeout: 500, connectTimeout: 2000 });
  const ws = await joined(t, 'lobby', 0);
  await t.clock.advance(1000);
  assert.deepEqual(ws.take('ping').length, 1, 'a ping after a quiet interval');
  await t.clock.advance(600);
  assert.equal(ws.closedWith?.code, 4000);
  assert.equal(t.client.state, 'reconnecting');
  await t.clock.advance(1000);
  const ws2 = t.last();
  assert.notEqual(ws2, ws);
  await t.clock.advance(1300); // opened, but no hello in 2 s
  assert.equal(ws2.closedWith?.code, 4000);
  assert.equal(t.client.state, 'reconnecting');
});

test('a close frame from an old socket does not disturb the new connection', async () => {
  const t = setup();
  const ws = await joined(t, 'lobby', 0);
  ws.drop(1012);
  await t.clock.advance(0);
  const ws2 = t.last();
  ws2.accept();
  ws.drop(1006); // late event of the first socket
  ws.push(msg('lobby', 1));
  assert.equal(t.client.state, 'connected');
  assert.deepEqual(t.got, []);
});

test('close() rejects what is pending and stops reconnecting', async () => {
  const t = setup();
  const ws = await joined(t, 'lobby', 0);
  const p = t.client.send('lobby', 'x');
  t.client.close();
  await assert.rejects(p, { code: 'closed' });
  assert.equal(t.client.state, 'closed');
  assert.equal(ws.closedWith?.code, 1000);
  await t.clock.advance(60000);
  assert.equal(t.sockets.length, 1);
});

test('a throwing listener does not stop delivery to the others', async () => {
  const t = setup();
  const saved = console.error;
  console.error = () => {};
  try {
    t.client.on('message', () => {
      throw new Error('app bug');
    });
    const ws = await joined(t, 'lobby', 0);
    ws.push(msg('lobby', 1));
    ws.push(msg('lobby', 2));
  } finally {
    console.error = saved;
  }
  assert.deepEqual(t.got, ['lobby:1', 'lobby:2']);
});

test('a room whose store was reset starts over at its new head', async () => {
  const t = setup();
  const ws = await joined(t, 'lobby', 10);
  ws.push(msg('lobby', 11));
  ws.drop(1012);
  await t.clock.advance(0);
  const ws2 = t.last();
  ws2.accept();
  const [j] = ws2.take('join');
  assert.equal(j.since, 11);
  ws2.push({ type: 'joined', room: 'lobby', head: 0, ref: j.ref });
  ws2.push(msg('lobby', 1));
  assert.deepEqual(t.got, ['lobby:11', 'lobby:1']);
  assert.equal(t.errors.at(-1).code, 'room_reset');
});

test('listRooms asks for the private and direct rooms, joined or not, and retries an unavailable store', async () => {
  const t = setup();
  await assert.rejects(t.client.listRooms(), { code: 'disconnected' });
  const ws = await joined(t, 'lobby', 0);
  const p = t.client.listRooms();
  const [cmd] = ws.take('rooms');
  assert.ok(cmd.ref);
  ws.push({ type: 'error', code: 'unavailable', message: 'retry shortly', ref: cmd.ref });
  await t.clock.advance(2000);
  const [again] = ws.take('rooms');
  assert.equal(again.ref, cmd.ref);
  ws.push({ type: 'rooms', rooms: ['dm:alice:bob', 'team-7:ops'], ref: cmd.ref });
  assert.deepEqual(await p, ['dm:alice:bob', 'team-7:ops']);
  assert.deepEqual(t.client.rooms, ['lobby'], 'the getter still names the joined rooms');
  const q = t.client.listRooms();
  const [third] = ws.take('rooms');
  ws.push({ type: 'error', code: 'forbidden', message: 'no', ref: third.ref });
  await assert.rejects(q, { code: 'forbidden' });
});

test('presence asks who is in a room; member and typing events of joined rooms reach listeners', async () => {
  const t = setup();
  await assert.rejects(t.client.presence('lobby'), { code: 'disconnected' });
  await assert.rejects(t.client.presence('not a room'), { code: 'bad_request' });
  const ws = await joined(t, 'lobby', 0);
  const p = t.client.presence('lobby');
  const [cmd] = ws.take('presence');
  assert.equal(cmd.room, 'lobby');
  ws.push({ type: 'presence', room: 'lobby', users: ['alice', 'bob'], ref: cmd.ref });
  assert.deepEqual(await p, { room: 'lobby', users: ['alice', 'bob'], truncated: false });
  const events = [];
  t.client.on('member', (e) => events.push(['member', e]));
  t.client.on('typing', (e) => events.push(['typing', e]));
  ws.push({ type: 'member', room: 'lobby', user: 'bob', state: 'offline' });
  ws.push({ type: 'typing', room: 'lobby', user: 'carol' });
  ws.push({ type: 'typing', room: 'elsewhere', user: 'carol' }); // not joined here: ignored
  assert.deepEqual(events, [
    ['member', { room: 'lobby', user: 'bob', state: 'offline' }],
    ['typing', { room: 'lobby', user: 'carol' }],
  ]);
  assert.deepEqual(t.errors, []);
});

test('typing goes out at most once per room every typingEvery ms, and only in a joined room', async () => {
  const t = setup({ typingEvery: 2000 });
  assert.equal(t.client.typing('lobby'), false, 'not joined');
  const ws = await joined(t, 'lobby', 0);
  assert.equal(t.client.typing('lobby'), true);
  await t.clock.advance(1999);
  assert.equal(t.client.typing('lobby'), false, 'throttled');
  await t.clock.advance(1);
  assert.equal(t.client.typing('lobby'), true);
  assert.deepEqual(ws.take('typing'), [
    { type: 'typing', room: 'lobby' },
    { type: 'typing', room: 'lobby' },
  ]);
  ws.drop(1006);
  assert.equal(t.client.typing('lobby'), false, 'not while disconnected');
  assert.equal(ws.take('typing').length, 0);
});
