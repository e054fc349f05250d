#!/usr/bin/env node
// Smoke test of the peer servers, speaking the same raw frames as the load generator.
// Starts its own servers on free ports, checks them, stops them; exits 0 when all passed.
//
//   node bench/peers/smoke.mjs            (REDIS_URL defaults to redis://127.0.0.1:6379)
//
// Checks: a single Socket.IO node; two Socket.IO nodes clustered through Redis (a
// message sent on one reaches a member on the other); the ws broadcast server.
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";

const here = dirname(fileURLToPath(import.meta.url));
const redisUrl = process.env.REDIS_URL || "redis://127.0.0.1:6379";
const TIMEOUT_MS = 5000;
const children = [];
let failures = 0;

function check(name, cond, detail = "") {
  if (!cond) failures++;
  console.log(`${cond ? "ok  " : "FAIL"} ${name}${detail && !cond ? `: ${detail}` : ""}`);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

/** Starts `node script args`, resolves once it prints "listening on PORT". */
function startServer(script, port, extra = []) {
  const child = spawn(process.execPath, [join(here, script), "--port", String(port), ...extra], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  const label = `${script}:${port}`;
  child.stderr.on("data", (d) => process.stderr.write(`[${label}] ${d}`));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${label} did not start`)), TIMEOUT_MS);
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
      if (out.includes(`listening on ${port}`)) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${label} exited with ${code} before listening`));
    });
  });
}

/** Sends SIGTERM and resolves with the exit code (null if it had to be killed). */
function stopServer(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), TIMEOUT_MS);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve(code);
    });
    child.kill("SIGTERM");
  });
}

/**
 * A WebSocket client with a queue of received text frames; `next(pred)` resolves
 * with the first (queued or future) frame matching pred, removing it from the queue.
 * `onFrame` may answer a frame itself (return true to keep it out of the queue).
 */
function connect(url, onFrame = () => false) {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  const queue = [];
  const waiters = [];
  ws.on("message", (data) => {
    const text = data.toString();
    if (onFrame(ws, text)) return;
    const i = waiters.findIndex((w) => w.pred(text));
    if (i >= 0) waiters.splice(i, 1)[0].resolve(text);
    else queue.push(text);
  });
  const client = {
    ws,
    send: (text) => ws.send(text),
    next(pred = () => true, what = "a frame") {
      const i = queue.findIndex(pred);
      if (i >= 0) return Promise.resolve(queue.splice(i, 1)[0]);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(new Error(`timed out waiting for ${what}`));
        }, TIMEOUT_MS);
        const w = {
          pred,
          resolve: (text) => {
            clearTimeout(timer);
            resolve(text);
          },
        };
        waiters.push(w);
      });
    },
    close: () => ws.close(),
  };
  return new Promise((resolve, reject) => {
    ws.once("open", () => resolve(client));
    ws.once("error", reject);
  });
}

function closedWithin(ws, ms) {
  if (ws.readyState === WebSocket.CLOSED) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    ws.once("close", () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

// ---- Socket.IO (Engine.IO v4 / Socket.IO v5 frames) ----

/** Connects and completes the Engine.IO open + Socket.IO CONNECT handshake. */
async function sioConnect(port, user) {
  const url = `ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket&user=${user}`;
  // Engine.IO heartbeat: the server pings ("2"), the client must pong ("3").
  const c = await connect(url, (ws, text) => text === "2" && (ws.send("3"), true));
  const open = await c.next((t) => t.startsWith("0{"), "engine.io open");
  const sid = JSON.parse(open.slice(1)).sid;
  c.send("40");
  const conn = await c.next((t) => t.startsWith("40"), "socket.io connect");
  return { c, sid, conn };
}

/** Waits for event `name` (a `42[name, data]` frame) and returns its data. */
async function sioEvent(c, name) {
  const prefix = `42["${name}"`;
  const text = await c.next((t) => t.startsWith(prefix), `event ${name}`);
  return JSON.parse(text.slice(2))[1];
}

const sioEmit = (c, name, data) => c.send(`42${JSON.stringify([name, data])}`);

async function smokeSocketIoSingle(port) {
  console.log(`-- socket.io single node (port ${port})`);
  const { c, sid, conn } = await sioConnect(port, "a");
  check("engine.io open packet has a sid", typeof sid === "string" && sid.length > 0);
  check("socket.io connect packet", /^40\{"sid":/.test(conn), conn);

  sioEmit(c, "join", "r1");
  const joined = await sioEvent(c, "joined");
  check("join -> joined {room}", joined?.room === "r1", JSON.stringify(joined));

  sioEmit(c, "send", { room: "r1", id: "x1", body: "hi" });
  const [ack, msg] = await Promise.all([sioEvent(c, "ack"), sioEvent(c, "message")]);
  check("send -> ack {room, id}", ack?.room === "r1" && ack?.id === "x1", JSON.stringify(ack));
  check(
    "send -> message to the sender too",
    msg?.room === "r1" && msg?.id === "x1" && msg?.from === "a" && msg?.body === "hi",
    JSON.stringify(msg),
  );
  c.close();
}

async function smokeSocketIoCluster(portA, portB) {
  console.log(`-- socket.io two nodes via Redis (ports ${portA}, ${portB}, ${redisUrl})`);
  const room = `smoke-${process.pid}`; // unique: other processes may share this Redis
  const { c: a } = await sioConnect(portA, "alice");
  const { c: b } = await sioConnect(portB, "bob");
  sioEmit(a, "join", room);
  sioEmit(b, "join", room);
  await Promise.all([sioEvent(a, "joined"), sioEvent(b, "joined")]);

  sioEmit(a, "send", { room, id: "m1", body: "across" });
  const [ackA, msgA, msgB] = await Promise.all([
    sioEvent(a, "ack"),
    sioEvent(a, "message"),
    sioEvent(b, "message"),
  ]);
  check("sender on node A gets its ack", ackA?.id === "m1", JSON.stringify(ackA));
  check("sender on node A gets the message", msgA?.id === "m1", JSON.stringify(msgA));
  check(
    "member on node B gets A's message",
    msgB?.room === room && msgB?.id === "m1" && msgB?.from === "alice" && msgB?.body === "across",
    JSON.stringify(msgB),
  );
  a.close();
  b.close();
}

// ---- ws broadcast server (courier protocol subset) ----

async function smokeWs(port) {
  console.log(`-- node ws broadcast (port ${port})`);
  const open = async (user) => {
    const q = user ? `?user=${user}` : "";
    const c = await connect(`ws://127.0.0.1:${port}/ws${q}`);
    return { c, hello: JSON.parse(await c.next(() => true, "hello")) };
  };
  const nextOf = async (c, type) =>
    JSON.parse(await c.next((t) => JSON.parse(t).type === type, `"${type}"`));
  const send = (c, obj) => c.send(JSON.stringify(obj));

  const { c: a, hello } = await open("alice");
  check(
    "hello frame",
    hello.type === "hello" && hello.user === "alice" && hello.gateway === "node-ws" && !!hello.session,
    JSON.stringify(hello),
  );
  const { c: b } = await open("bob");
  const { c: g, hello: gHello } = await open(null);
  check("no user -> guest", gHello.user === "guest", JSON.stringify(gHello));
  g.close();

  send(a, { type: "send", room: "r1", id: "early", body: "x" });
  const nj = await nextOf(a, "error");
  check("send before join -> not_joined with id", nj.code === "not_joined" && nj.id === "early", JSON.stringify(nj));

  send(a, { type: "join", room: "r1" });
  send(b, { type: "join", room: "r1" });
  const ja = await nextOf(a, "joined");
  await nextOf(b, "joined");
  check("join -> joined with head 0", ja.room === "r1" && ja.head === 0, JSON.stringify(ja));

  send(a, { type: "send", room: "r1", id: "c-1", body: "hi" });
  const ack = JSON.parse(await a.next(() => true, "ack"));
  check("ack is the first reply to send", ack.type === "ack" && ack.room === "r1" && ack.id === "c-1", JSON.stringify(ack));
  const [ma, mb] = await Promise.all([nextOf(a, "message"), nextOf(b, "message")]);
  check(
    "message to sender: seq 1, from, body, sent_at",
    ma.seq === 1 && ma.id === "c-1" && ma.from === "alice" && ma.body === "hi" &&
      /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/.test(ma.sent_at),
    JSON.stringify(ma),
  );
  check("same message to the other member", JSON.stringify(mb) === JSON.stringify(ma), JSON.stringify(mb));

  send(b, { type: "join", room: "r1" });
  const rj = await nextOf(b, "joined");
  check("re-join reports the current head", rj.head === 1, JSON.stringify(rj));

  send(a, { type: "ping", ref: "p1" });
  const pong = await nextOf(a, "pong");
  check("ping -> pong (ref echoed)", pong.ref === "p1", JSON.stringify(pong));

  a.send("{not json");
  const bad = await nextOf(a, "error");
  check("bad JSON -> bad_request", bad.code === "bad_request", JSON.stringify(bad));

  send(b, { type: "leave", room: "r1" });
  const left = await nextOf(b, "left");
  check("leave -> left", left.room === "r1", JSON.stringify(left));
  send(a, { type: "send", room: "r1", id: "c-2", body: "after leave" });
  await nextOf(a, "message");
  send(b, { type: "ping" });
  const after = JSON.parse(await b.next(() => true, "pong"));
  check("no messages after leave", after.type === "pong", JSON.stringify(after));

  a.close();
  b.close();
}

// ---- main ----

async function main() {
  const [pSingle, pA, pB, pWs] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const servers = await Promise.all([
    startServer("socketio-server.js", pSingle),
    startServer("socketio-server.js", pA, ["--redis", redisUrl]),
    startServer("socketio-server.js", pB, ["--redis", redisUrl]),
    startServer("ws-server.js", pWs),
  ]);
  await smokeSocketIoSingle(pSingle);
  await smokeSocketIoCluster(pA, pB);
  await smokeWs(pWs);

  console.log("-- shutdown");
  // Keep a client on every server so shutdown has to close live connections.
  const live = await Promise.all([
    ...[pSingle, pA, pB].map(async (p) => (await sioConnect(p, "z")).c),
    connect(`ws://127.0.0.1:${pWs}/ws`),
  ]);
  const codes = await Promise.all(servers.map(stopServer));
  check("every server exits 0 on SIGTERM with a client connected", codes.every((c) => c === 0), JSON.stringify(codes));
  const closed = await Promise.all(live.map((c) => closedWithin(c.ws, TIMEOUT_MS)));
  check("their clients were disconnected", closed.every(Boolean));
}

// Whatever happens, leave no server behind.
process.on("exit", () => children.forEach((c) => c.exitCode === null && c.kill("SIGKILL")));

try {
  await main();
} catch (err) {
  failures++;
  console.log(`FAIL ${err.message}`);
  await Promise.all(children.map(stopServer));
}
console.log(failures ? `${failures} check(s) failed` : "all checks passed");
process.exit(failures ? 1 : 0);
