#!/usr/bin/env bash
# Runs the benchmark matrix of docs/benchmarks.md: workloads W1, W2, W3 against courier in
# each topology and against the reference servers, with one load generator.
#
#   bench/run.sh [-n RUNS] [-t TOPOLOGIES] [-w WORKLOADS] [-o DIR]
#
#   TOPOLOGIES  comma-separated, default all, in this order:
#               reference      Rust in-memory broadcast (loadgen reference-server)
#               node-ws        Node `ws` broadcast (bench/peers/ws-server.js)
#               socketio       Socket.IO, one node
#               socketio-redis Socket.IO, two nodes + Redis adapter
#               embedded       courier gateway, the defaults: durable queue (sqlite://), SQLite store
#               embedded-memory courier gateway, QUEUE_URL=memory (volatile), SQLite store
#               rabbitmq-pg    courier, 2 gateways + 2 workers, RabbitMQ, PostgreSQL
#               sqs-pg         courier, 2 gateways + 2 workers, SQS on LocalStack, PostgreSQL
#   WORKLOADS   comma-separated from w0,w1,w2,w3 (default all)
#   RUNS        repetitions of each (default 3); the report takes medians
#   RUNTIME_THREADS (environment) async threads of each gateway and worker of
#               rabbitmq-pg and sqs-pg (default 1: six processes, a broker and a
#               database share the machine's cores)
#   AMQP_OPTIONS (environment) more QUEUE_URL parameters for rabbitmq-pg (default
#               "partitions=1&linger_ms=20&prefix=courier-bench-p1": sized to this
#               2-core machine, see docs/operations.md "Scale"; set it empty for the
#               product defaults, 8 partitions and a 5 ms linger)
#
# Every run prints loadgen's table and a `RESULT {json}` line; all of them are collected
# in DIR/results.jsonl (default bench/results/<UTC time>/) and summarized by
# bench/summarize.py. Needs release binaries (`cargo build --release --workspace`),
# `npm ci` in bench/peers, RabbitMQ, PostgreSQL and Redis up (and LocalStack for sqs-pg:
# ./scripts/localstack.sh start). Numbers are only comparable within one session on one
# quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/target/release
RUNS=3
TOPOLOGIES=reference,node-ws,socketio,socketio-redis,embedded,embedded-memory,rabbitmq-pg,sqs-pg
WORKLOADS=w0,w1,w2,w3
OUT=$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)
while getopts "n:t:w:o:" opt; do
  case $opt in
    n) RUNS=$OPTARG ;;
    t) TOPOLOGIES=$OPTARG ;;
    w) WORKLOADS=$OPTARG ;;
    o) OUT=$OPTARG ;;
    *) sed -n '2,29p' "$0"; exit 2 ;;
  esac
done
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
LOGS=$OUT/logs
mkdir -p "$LOGS"

# The workloads (docs/benchmarks.md): 1,000 connections in 100 rooms of 10.
# W0 is the latency floor: two members of one room, 20 msgs/s, nothing queues.
W0=(--conns 2 --rooms 1 --rate 20 --duration 10 --warmup 1)
W1=(--conns 1000 --rooms 100 --rate 2000 --duration 10 --warmup 2)
W2=(--conns 1000 --rooms 100 --window 1 --duration 10 --warmup 2)
W3=(--conns 10000 --rooms 1000 --hold 5)
# courier's per-connection rate limit (20/s) would cap W2; the benchmark lifts it.
export RATE_PER_SEC=100000 RATE_BURST=100000 RUST_LOG=warn
COURIER_THREADS=${RUNTIME_THREADS:-1}
unset RUNTIME_THREADS # the embedded gateway has the machine to itself: its default

for b in loadgen gateway worker; do
  [ -x "$BIN/$b" ] || { echo "FAILED: $BIN/$b missing: cargo build --release --workspace" >&2; exit 1; }
done
[ -d bench/peers/node_modules ] || (cd bench/peers && npm ci --no-audit --no-fund >/dev/null)

PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$p" 2>/dev/null || true
  done
  PIDS=()
}
trap stop_all EXIT

# start NAME CMD...: runs a server in the background, logging to $LOGS/NAME.log.
start() {
  local name=$1; shift
  "$@" >"$LOGS/$name.log" 2>&1 &
  PIDS+=("$!")
  eval "PID_${name//-/_}=$!"
}

wait_port() {
  for _ in $(seq 150); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.2
  done
  echo "FAILED: nothing listens on 127.0.0.1:$1; logs in $LOGS" >&2
  exit 1
}

fresh_pg() {
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null
}

# Sets URLS, SERVER_PIDS (all server processes) and FRONT_PIDS (those that hold the
# connections, for W3) for a topology; starts what it needs.
up() {
  URLS=(); SERVER_PIDS=(); FRONT_PIDS=()
  case $1 in
    reference)
      start reference "$BIN/loadgen" reference-server --bind 127.0.0.1:9100; wait_port 9100
      URLS=(--url ws://127.0.0.1:9100/ws); FRONT_PIDS=(--pid "ref=$PID_reference") ;;
    node-ws)
      start nodews node bench/peers/ws-server.js --port 9102; wait_port 9102
      URLS=(--url ws://127.0.0.1:9102/ws); FRONT_PIDS=(--pid "node=$PID_nodews") ;;
    socketio)
      start sio node bench/peers/socketio-server.js --port 9101; wait_port 9101
      URLS=(--url ws://127.0.0.1:9101/socket.io/ --protocol socketio); FRONT_PIDS=(--pid "sio=$PID_sio") ;;
    socketio-redis)
      start sio1 node bench/peers/socketio-server.js --port 9101 --redis redis://127.0.0.1:6379
      start sio2 node bench/peers/socketio-server.js --port 9103 --redis redis://127.0.0.1:6379
      wait_port 9101; wait_port 9103
      URLS=(--url ws://127.0.0.1:9101/socket.io/ --url ws://127.0.0.1:9103/socket.io/ --protocol socketio)
      FRONT_PIDS=(--pid "sio1=$PID_sio1" --pid "sio2=$PID_sio2") ;;
    embedded|embedded-memory)
      rm -rf "$OUT/embedded-db"
      local queue="sqlite://$OUT/embedded-db/queue.db"
      [ "$1" = embedded-memory ] && queue=memory
      QUEUE_URL="$queue" DATABASE_URL="sqlite://$OUT/embedded-db/chat.db" BIND=127.0.0.1:8080 \
        start gw "$BIN/gateway"
      wait_port 8080
      URLS=(--url ws://127.0.0.1:8080/ws); FRONT_PIDS=(--pid "gateway=$PID_gw") ;;
    rabbitmq-pg|sqs-pg)
      local db=courier_bench
      fresh_pg $db
      export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"
      if [ "$1" = rabbitmq-pg ]; then
        # AMQP_OPTIONS adds QUEUE_URL parameters, e.g. "ingest=classic&prefix=courier-bench-c"
        # (a partition keeps the type it was first declared with: a new prefix for another).
        local amqp_options=${AMQP_OPTIONS-partitions=1&linger_ms=20&prefix=courier-bench-p1}
        export QUEUE_URL="amqp://guest:guest@127.0.0.1:5672/%2f?prefix=courier-bench${amqp_options:+&$amqp_options}"
      else
        ./scripts/localstack.sh start >/dev/null
        export AWS_ENDPOINT_URL=http://127.0.0.1:4566 AWS_REGION=us-east-1
        export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
        # A fresh prefix per run: what SQS could not deliver in one run (LocalStack is
        # slower than the W1 rate) must not land in the next one.
        export QUEUE_URL="sqs://courier-bench-$(date +%s)"
      fi
      export RUNTIME_THREADS=$COURIER_THREADS
      METRICS_BIND=127.0.0.1:9201 start w1 "$BIN/worker"
      sleep 1 # the first process declares the topology
      METRICS_BIND=127.0.0.1:9202 start w2 "$BIN/worker"
      BIND=127.0.0.1:8081 METRICS_BIND=127.0.0.1:9203 start g1 "$BIN/gateway"
      BIND=127.0.0.1:8082 METRICS_BIND=127.0.0.1:9204 start g2 "$BIN/gateway"
      wait_port 8081; wait_port 8082
      unset QUEUE_URL DATABASE_URL RUNTIME_THREADS
      URLS=(--url ws://127.0.0.1:8081/ws --url ws://127.0.0.1:8082/ws)
      FRONT_PIDS=(--pid "gateway1=$PID_g1" --pid "gateway2=$PID_g2")
      SERVER_PIDS=(--pid "worker1=$PID_w1" --pid "worker2=$PID_w2") ;;
    *) echo "unknown topology $1" >&2; exit 2 ;;
  esac
  SERVER_PIDS=("${FRONT_PIDS[@]}" "${SERVER_PIDS[@]}")
  sleep 1
}

measure() { # topology workload run
  local label="$1/$2/$3" log="$LOGS/$1-$2-$3.txt"
  echo "== $label"
  case $2 in
    w0) "$BIN/loadgen" run "${URLS[@]}" "${SERVER_PIDS[@]}" "${W0[@]}" --label "$label" ;;
    w1) "$BIN/loadgen" run "${URLS[@]}" "${SERVER_PIDS[@]}" "${W1[@]}" --label "$label" ;;
    w2) "$BIN/loadgen" run "${URLS[@]}" "${SERVER_PIDS[@]}" "${W2[@]}" --label "$label" ;;
    w3) "$BIN/loadgen" idle "${URLS[@]}" "${FRONT_PIDS[@]}" "${W3[@]}" --label "$label" ;;
  esac >"$log" 2>&1 || { echo "   failed, see $log"; tail -3 "$log"; return 0; }
  grep -v '^RESULT' "$log" | sed 's/^/   /'
  grep '^RESULT ' "$log" | sed 's/^RESULT //' >>"$RESULTS"
  [ "$1" = sqs-pg ] && sqs_requests "$label" "$log"
  case $1 in rabbitmq-pg|sqs-pg) batching "$label" ;; esac
  return 0
}

# Mean messages per worker batch and per RabbitMQ ingest publish, and where a message's
# time goes (p50/p99 of each stage's histogram, from the gateway's receipt of the send),
# from the processes' /metrics since they started; appended to DIR/batching.jsonl.
batching() { # label
  for port in 9201 9202 9203 9204; do
    curl -s "http://127.0.0.1:$port/metrics" || true
  done | python3 -c '
import json, re, sys
label = sys.argv[1]
sums, buckets = {}, {}
for line in sys.stdin:
    m = re.match(r"(courier_\w+)_(sum|count)(\{[^}]*\})? (\S+)", line)
    if m:
        key = (m.group(1) + (m.group(3) or ""), m.group(2))
        sums[key] = sums.get(key, 0) + float(m.group(4))
    m = re.match(r"(courier_\w+)_bucket\{(?:(.*),)?le=\"([^\"]+)\"\} (\S+)", line)
    if m:
        name = m.group(1) + ("{" + m.group(2) + "}" if m.group(2) else "")
        le = float("inf") if m.group(3) == "+Inf" else float(m.group(3))
        b = buckets.setdefault(name, {})
        b[le] = b.get(le, 0) + float(m.group(4))

def quantile(b, q):
    # Linear within the bucket, as Prometheus histogram_quantile does.
    edges = sorted(b)
    total = b[edges[-1]]
    want, lo, below = q * total, 0.0, 0.0
    for le in edges:
        if b[le] >= want:
            if le == float("inf"):
                return lo
            return lo + (le - lo) * (want - below) / max(b[le] - below, 1e-9)
        lo, below = le, b[le]
    return lo

out = {"label": label}
for name in ("courier_worker_batch_size", "courier_publish_group_size"):
    n = sums.get((name, "count"), 0)
    if n:
        out[name] = sums[(name, "sum")] / n
        print(f"   {name:<28} mean {out[name]:.2f} over {n:,.0f}")
stages = [
    ("send to confirm", "courier_publish_seconds"),
    ("send to worker batch", "courier_worker_message_age_seconds{stage=\"received\"}"),
    ("send to fanned out", "courier_worker_message_age_seconds{stage=\"fanned_out\"}"),
    ("send to gateway feed", "courier_feed_age_seconds"),
    ("send to socket write", "courier_delivery_latency_seconds"),
]
for what, name in stages:
    b = buckets.get(name)
    if b and b[max(b)] > 0:
        p50, p99 = quantile(b, 0.5) * 1000, quantile(b, 0.99) * 1000
        out[what] = {"p50_ms": p50, "p99_ms": p99}
        print(f"   {what:<28} p50 {p50:.1f} ms, p99 {p99:.1f} ms (buckets, whole run)")
with open(sys.argv[2], "a") as f:
    f.write(json.dumps(out) + "\n")
' "$1" "$OUT/batching.jsonl"
}

# SQS requests of the four processes since they started (courier_sqs_requests_total,
# by call), per message sent: what a message costs on AWS. Long polls of idle
# consumers count too. Appended to DIR/sqs-requests.jsonl.
sqs_requests() { # label loadgen-log
  local sent
  sent=$(grep '^RESULT ' "$2" | sed 's/^RESULT //' | python3 -c 'import json,sys; print(json.load(sys.stdin)["sent"])' 2>/dev/null) || return 0
  for port in 9201 9202 9203 9204; do
    curl -s "http://127.0.0.1:$port/metrics" || true
  done | python3 -c '
import json, re, sys
label, sent = sys.argv[1], int(sys.argv[2])
calls = {}
for line in sys.stdin:
    m = re.match(r"courier_sqs_requests_total\{call=\"([^\"]*)\"\} (\S+)", line)
    if m:
        calls[m.group(1)] = calls.get(m.group(1), 0) + float(m.group(2))
total = sum(calls.values())
print(f"   SQS requests                 {total:,.0f} for {sent:,} messages sent: {total / max(sent, 1):.2f} per message")
for k, v in sorted(calls.items(), key=lambda kv: -kv[1]):
    print(f"                                {k}: {v:,.0f} ({v / max(sent, 1):.3f} per message)")
with open(sys.argv[3], "a") as f:
    f.write(json.dumps({"label": label, "sent": sent, "requests": total, "per_message": total / max(sent, 1), "by_call": calls}) + "\n")
' "$1" "$sent" "$OUT/sqs-requests.jsonl"
}

echo "machine: $(nproc) cores, $(grep MemTotal /proc/meminfo | awk '{print $2/1048576 " GiB"}'), $(uname -r)" | tee "$OUT/machine.txt"
git rev-parse --short HEAD >>"$OUT/machine.txt" 2>/dev/null || true
for topo in ${TOPOLOGIES//,/ }; do
  for w in ${WORKLOADS//,/ }; do
    for r in $(seq "$RUNS"); do
      # A fresh server per run: W3 measures memory from a clean start.
      up "$topo"
      measure "$topo" "$w" "$r"
      stop_all
    done
  done
done
python3 bench/summarize.py "$RESULTS" | tee "$OUT/summary.md"
