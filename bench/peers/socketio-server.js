#!/usr/bin/env node
// Socket.IO peer reference server for the courier benchmarks.
//
//   node socketio-server.js --port 9101 [--host 127.0.0.1] [--redis redis://127.0.0.1:6379]
//
// With --redis, rooms span every process started with the same Redis URL
// (@socket.io/redis-adapter over Redis pub/sub), so two processes on different
// ports form one cluster.
//
// Events (clients connect to /socket.io/?EIO=4&transport=websocket&user=NAME):
//   join  "room"                 -> joined {room}
//   send  {room, id, body}       -> ack {room, id} to the sender, and
//                                   message {room, id, from, body} to the whole room
"use strict";

const http = require("node:http");
const { parseArgs } = require("node:util");
const { Server } = require("socket.io");

const { values: args } = parseArgs({
  options: {
    port: { type: "string", default: "9101" },
    host: { type: "string", default: "127.0.0.1" },
    redis: { type: "string" },
  },
});
const port = Number(args.port);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  console.error(`bad --port: ${args.port}`);
  process.exit(2);
}

const httpServer = http.createServer();
const io = new Server(httpServer, {
  // The load generator speaks raw WebSocket frames: no HTTP long-polling, and no
  // compression so we measure the same wire work as the other servers.
  transports: ["websocket"],
  perMessageDeflate: false,
  serveClient: false,
});

io.on("connection", (socket) => {
  const q = socket.handshake.query.user;
  const user = typeof q === "string" && q !== "" ? q : "guest";

  socket.on("join", (room) => {
    if (typeof room !== "string" || room === "") return; // malformed: ignore
    socket.join(room);
    socket.emit("joined", { room });
  });

  socket.on("send", (msg) => {
    if (!msg || typeof msg.room !== "string") return; // malformed: ignore
    const { room, id, body } = msg;
    // io.to (not socket.to) so the sender gets its own message, like courier.
    io.to(room).emit("message", { room, id, from: user, body });
    socket.emit("ack", { room, id });
  });
});

const redisClients = [];

async function main() {
  if (args.redis) {
    // Required lazily so the single-node mode works without Redis packages loaded.
    const { createClient } = require("redis");
    const { createAdapter } = require("@socket.io/redis-adapter");
    let started = false;
    const pub = createClient({
      url: args.redis,
      // Unreachable at start: fail fast (exit 1) instead of retrying forever.
      // Once running, reconnect with node-redis's default backoff.
      socket: { reconnectStrategy: (n, err) => (started ? Math.min(n * 50, 500) : err) },
    });
    const sub = pub.duplicate();
    for (const c of [pub, sub]) {
      // node-redis throws on an unhandled "error" event; it reconnects by itself.
      c.on("error", (err) => console.error(`redis: ${err.message}`));
      redisClients.push(c);
    }
    await Promise.all([pub.connect(), sub.connect()]).catch((err) => {
      throw new Error(`redis ${redact(args.redis)}: ${err.message}`);
    });
    started = true;
    io.adapter(createAdapter(pub, sub));
  }
  if (stopping) return; // signalled while connecting to Redis
  await new Promise((resolve, reject) => {
    httpServer.once("error", reject);
    httpServer.listen(port, args.host, resolve);
  });
  console.log(`listening on ${port}`);
}

function redact(url) {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return url;
  }
}

let stopping = false;
async function shutdown() {
  if (stopping) return;
  stopping = true;
  // Never hang on a stuck socket or Redis: give up after 3 s.
  setTimeout(() => process.exit(1), 3000).unref();
  await io.close(); // disconnects clients, closes the adapter and the HTTP server
  await Promise.allSettled(redisClients.map((c) => c.quit()));
  process.exit(0);
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);

main().catch((err) => {
  console.error(`cannot start: ${err.message}`);
  process.exit(1);
});
