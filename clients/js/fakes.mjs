// Fakes the client tests inject into CourierClient: a clock the test moves by hand and
// a WebSocket the test plays the gateway on. Not a test file itself (node --test would
// run any .mjs under a test/ folder).

import { CourierClient } from '../../gateway/static/client.js';

/** Lets promise callbacks and queued jobs run. */
export const flush = () => new Promise((r) => setImmediate(r));

/** Timers the test moves by hand. */
export class Clock {
  constructor() {
    this.t = 0;
    this.n = 0;
    this.timers = new Map();
    this.setTimeout = (fn, ms) => {
      const id = ++this.n;
      this.timers.set(id, { at: this.t + (ms || 0), fn, id });
      return id;
    };
    this.clearTimeout = (id) => this.timers.delete(id);
    this.now = () => this.t;
  }

  /** Runs every timer due within `ms`, in order, letting promises settle between them. */
  async advance(ms) {
    const end = this.t + ms;
    await flush();
    for (;;) {
      const due = [...this.timers.values()].filter((x) => x.at <= end).sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!due) break;
      this.timers.delete(due.id);
      this.t = due.at;
      due.fn();
      await flush();
    }
    this.t = end;
  }
}

/** A fake WebSocket class; `sockets` lists every socket the client opened. */
export function fakeSockets() {
  const sockets = [];
  class FakeSocket {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      sockets.push(this);
    }
    send(text) {
      if (this.readyState !== 1) throw new Error('send on a socket that is not open');
      this.sent.push(JSON.parse(text));
    }
    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 3;
    }
    // The server's side.
    accept(user = 'alice') {
      this.readyState = 1;
      if (this.onopen) this.onopen({});
      this.push({ type: 'hello', user, session: 'sess', gateway: 'gw-test' });
    }
    push(frame) {
      this.onmessage({ data: JSON.stringify(frame) });
    }
    drop(code = 1006, reason = '') {
      this.readyState = 3;
      this.onclose({ code, reason });
    }
    /** Removes and returns the frames the client sent, of one type or all. */
    take(type) {
      const out = this.sent.filter((f) => !type || f.type === type);
      this.sent = this.sent.filter((f) => type && f.type !== type);
      return out;
    }
  }
  return { FakeSocket, sockets };
}

/** A client for user `alice` over the fakes; `random` fixed for exact delays. */
export function fakeClient(options = {}) {
  const clock = new Clock();
  const { FakeSocket, sockets } = fakeSockets();
  const client = new CourierClient({
    url: 'ws://gw.test/ws',
    user: 'alice',
    WebSocket: FakeSocket,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    random: () => 0,
    idPrefix: 't',
    ...options,
  });
  return { client, clock, sockets };
}
