#!/usr/bin/env node
// "Node ws broadcast" peer reference server for the courier benchmarks: a plain
// in-memory room broadcaster speaking the subset of courier's wire protocol
// (docs/protocol.md) that the load generator uses. No storage, no queue, no
// enrichment: it is the floor of what a single-process Node server costs.
//
//   node ws-server.js --port 9102 [--host 127.0.0.1]
//
// Clients connect to ws://HOST:PORT/ws?user=NAME and send JSON text frames:
//   join, leave, send, ping (replies as in docs/protocol.md; `ref` is echoed).
"use strict";

const http = require("node:http");
const { randomUUID } = require("node:crypto");
const { parseArgs } = require("node:util");
const { WebSocketServer, WebSocket } = require("ws");

const { values: args } = parseArgs({
  options: {
    port: { type: "string", default: "9102" },
    host: { type: "string", default: "127.0.0.1" },
  },
});
const port = Number(args.port);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  console.error(`bad --port: ${args.port}`);
  process.exit(2);
}

/** room name -> { seq, members: Set<WebSocket> } */
const rooms = new Map();

const httpServer = http.createServer((req, res) => {
  res.writeHead(404).end();
});
const wss = new WebSocketServer({
  server: httpServer,
  path: "/ws",
  perMessageDeflate: false, // same wire work as the other servers
  maxPayload: 64 * 1024, // courier's frame limit
});

wss.on("connection", (ws, req) => {
  const q = new URL(req.url, "http://x").searchParams.get("user");
  const user = q || "guest";
  const joined = new Set(); // this socket's rooms, for cleanup on close

  const reply = (obj) => ws.send(JSON.stringify(obj));
  const fail = (code, message, cmd = {}) =>
    reply({ type: "error", code, message, ...pick(cmd, "ref", "id") });

  reply({ type: "hello", user, session: randomUUID(), gateway: "node-ws" });

  ws.on("message", (data, isBinary) => {
    if (isBinary) return fail("bad_request", "binary frames are not accepted");
    let cmd;
    try {
      cmd = JSON.parse(data.toString());
    } catch {
      return fail("bad_request", "not JSON");
    }
    if (!cmd || typeof cmd !== "object" || Array.isArray(cmd)) {
      return fail("bad_request", "not a JSON object");
    }
    const ref = pick(cmd, "ref");
    const room = cmd.room;
    const needRoom = cmd.type === "join" || cmd.type === "leave" || cmd.type === "send";
    if (needRoom && (typeof room !== "string" || room === "")) {
      return fail("bad_request", "missing room", cmd);
    }

    switch (cmd.type) {
      case "join": {
        let r = rooms.get(room);
        if (!r) rooms.set(room, (r = { seq: 0, members: new Set() }));
        r.members.add(ws);
        joined.add(room);
        return reply({ type: "joined", room, head: r.seq, ...ref });
      }
      case "leave": {
        leave(ws, room);
        joined.delete(room);
        return reply({ type: "left", room, ...ref });
      }
      case "send": {
        if (!joined.has(room)) return fail("not_joined", `join ${room} first`, cmd);
        // Taken on receipt, as courier does ("when the gateway received it").
        const sentAt = new Date().toISOString();
        reply({ type: "ack", room, id: cmd.id, ...ref });
        const r = rooms.get(room);
        r.seq += 1;
        // Serialize once and hand the same string to every member.
        const frame = JSON.stringify({
          type: "message",
          room,
          seq: r.seq,
          id: cmd.id,
          from: user,
          body: cmd.body,
          sent_at: sentAt,
        });
        for (const m of r.members) {
          if (m.readyState === WebSocket.OPEN) m.send(frame);
        }
        return;
      }
      case "ping":
        return reply({ type: "pong", ...ref });
      default:
        return fail("bad_request", "unknown type", cmd);
    }
  });

  ws.on("close", () => {
    for (const room of joined) leave(ws, room);
  });
  ws.on("error", () => {}); // "close" follows; nothing else to do
});

function leave(ws, room) {
  const r = rooms.get(room);
  if (!r) return;
  r.members.delete(ws);
  // Keep the room (and its seq) even when empty: seq must never be reused.
}

/** The listed keys of obj that are present, for echoing `ref` / `id`. */
function pick(obj, ...keys) {
  const out = {};
  for (const k of keys) if (obj[k] !== undefined) out[k] = obj[k];
  return out;
}

httpServer.listen(port, args.host, () => console.log(`listening on ${port}`));
httpServer.on("error", (err) => {
  console.error(`cannot start: ${err.message}`);
  process.exit(1);
});

let stopping = false;
function shutdown() {
  if (stopping) return;
  stopping = true;
  setTimeout(() => process.exit(1), 3000).unref(); // never hang on a stuck socket
  // 1012 is courier's "stopping, reconnect elsewhere"; drop clients that do not
  // finish the closing handshake within a second.
  for (const ws of wss.clients) ws.close(1012, "server stopping");
  setTimeout(() => wss.clients.forEach((ws) => ws.terminate()), 1000).unref();
  wss.close();
  httpServer.close(() => process.exit(0));
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
