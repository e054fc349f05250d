#!/usr/bin/env bash
# A short loadgen run against its reference server: every send acked, every expected
# delivery received, no duplicate, no gap. Needs `cargo build --workspace` first.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/debug
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN/loadgen" reference-server --bind "127.0.0.1:$port" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
out=$("$BIN/loadgen" run --url "ws://127.0.0.1:$port/ws" --conns 20 --rooms 4 --rate 200 \
  --duration 1 --warmup 0.5 --pid "reference=$server" --label smoke)
printf '%s\n' "$out"
printf '%s\n' "$out" | sed -n 's/^RESULT //p' | python3 -c '
import json, sys
r = json.load(sys.stdin)
assert r["sent"] > 100 and r["acked"] == r["sent"], r
assert r["expected"] == r["sent"] * 5 and r["received"] == r["expected"], r
assert r["duplicates"] == 0 and r["gaps"] == 0 and r["undelivered"] == 0, r
assert r["latency_ms"]["count"] > 0 and r["server_cpu_s"] >= 0, r
print("loadgen smoke: ok")
'
