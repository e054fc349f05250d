#!/usr/bin/env python3
"""Medians of bench/run.sh's results.jsonl as the Markdown tables of docs/benchmarks.md.

    python3 bench/summarize.py bench/results/<run>/results.jsonl
"""
import json
import statistics
import sys
from collections import defaultdict

ORDER = ["reference", "node-ws", "socketio", "socketio-redis", "embedded", "embedded-memory", "rabbitmq-pg", "sqs-pg"]
NAMES = {
    "reference": "Rust in-memory broadcast (reference)",
    "node-ws": "Node `ws` broadcast",
    "socketio": "Socket.IO, 1 node",
    "socketio-redis": "Socket.IO, 2 nodes + Redis",
    "embedded": "**courier embedded** (durable SQLite queue, SQLite store: the default)",
    "embedded-memory": "**courier embedded**, volatile queue (`QUEUE_URL=memory`, SQLite store)",
    "rabbitmq-pg": "**courier** 2 gw + 2 workers, RabbitMQ, PostgreSQL",
    "sqs-pg": "**courier** 2 gw + 2 workers, SQS (LocalStack), PostgreSQL",
}


def load(path):
    runs = defaultdict(list)
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            topo, workload, _ = r["label"].split("/")
            runs[(topo, workload)].append(r)
    return runs


def med(rs, *path):
    vals = []
    for r in rs:
        v = r
        for p in path:
            v = v[p]
        vals.append(v)
    return statistics.median(vals)


def ratio(a, b):
    return f"{a / b:.2f}×" if b else "–"


def main():
    runs = load(sys.argv[1])
    topos = [t for t in ORDER if any(k[0] == t for k in runs)]

    def rows(w):
        return [(t, runs[(t, w)]) for t in topos if runs.get((t, w))]

    ref = lambda w: runs.get(("reference", w))
    sio = lambda w: runs.get(("socketio", w))
    sior = lambda w: runs.get(("socketio-redis", w))

    if rows("w0"):
        print("### W0: latency floor, 2 connections in 1 room, 20 msgs/s\n")
        print("| system | runs | latency p50 / p99 ms | ack p50 / p99 ms |")
        print("|---|---|---|---|")
        for t, rs in rows("w0"):
            print(f"| {NAMES[t]} | {len(rs)} | {med(rs,'latency_ms','p50'):.2f} / {med(rs,'latency_ms','p99'):.2f} "
                  f"| {med(rs,'ack_latency_ms','p50'):.2f} / {med(rs,'ack_latency_ms','p99'):.2f} |")
        print()

    print("### W1: 1,000 connections, 100 rooms × 10, 2,000 msgs/s (20,000 deliveries/s)\n")
    print("| system | runs | latency p50 / p99 / p999 ms | p99 vs reference | p99 vs Socket.IO 1 node | ack p99 ms | deliveries/s | undelivered | dup / gaps | server CPU µs per delivery | CPU vs reference |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for t, rs in rows("w1"):
        p99 = med(rs, "latency_ms", "p99")
        cpu = med(rs, "server_cpu_us_per_delivery")
        rp = med(ref("w1"), "latency_ms", "p99") if ref("w1") else 0
        sp = med(sio("w1"), "latency_ms", "p99") if sio("w1") else 0
        rc = med(ref("w1"), "server_cpu_us_per_delivery") if ref("w1") else 0
        ack = med(rs, "ack_latency_ms", "p99")
        print(f"| {NAMES[t]} | {len(rs)} | {med(rs,'latency_ms','p50'):.2f} / {p99:.2f} / {med(rs,'latency_ms','p999'):.2f} "
              f"| {ratio(p99, rp)} | {ratio(p99, sp)} | {ack:.2f} | {med(rs,'deliveries_per_sec'):,.0f} "
              f"| {med(rs,'undelivered'):,.0f} | {med(rs,'duplicates'):.0f} / {med(rs,'gaps'):.0f} | {cpu:.1f} | {ratio(cpu, rc)} |")

    print("\n### W2: same rooms, closed loop (each connection sends its next message when its last one comes back)\n")
    print("| system | runs | deliveries/s | vs reference | vs Socket.IO + Redis | undelivered after 5 s drain | latency p50 / p99 ms | server CPU µs per delivery | CPU vs reference |")
    print("|---|---|---|---|---|---|---|---|---|")
    for t, rs in rows("w2"):
        d = med(rs, "deliveries_per_sec")
        cpu = med(rs, "server_cpu_us_per_delivery")
        rd = med(ref("w2"), "deliveries_per_sec") if ref("w2") else 0
        sd = med(sior("w2"), "deliveries_per_sec") if sior("w2") else 0
        rc = med(ref("w2"), "server_cpu_us_per_delivery") if ref("w2") else 0
        und = med(rs, "undelivered")
        exp = med(rs, "expected")
        print(f"| {NAMES[t]} | {len(rs)} | {d:,.0f} | {ratio(d, rd)} | {ratio(d, sd)} | {und:,.0f} ({100*und/exp if exp else 0:.1f}%) "
              f"| {med(rs,'latency_ms','p50'):.1f} / {med(rs,'latency_ms','p99'):.1f} | {cpu:.2f} | {ratio(cpu, rc)} |")

    machine_table(runs, rows, sior)

    print("\n### W3: 10,000 idle connections in 1,000 rooms\n")
    print("| system | runs | server RSS per connection KiB | vs reference |")
    print("|---|---|---|---|")
    for t, rs in rows("w3"):
        k = med(rs, "rss_per_conn_kib")
        rk = med(ref("w3"), "rss_per_conn_kib") if ref("w3") else 0
        print(f"| {NAMES[t]} | {len(rs)} | {k:.2f} | {ratio(k, rk)} |")


def machine_table(runs, rows, sior):
    """Machine CPU per delivery: everything on the machine (brokers, databases, the
    kernel's network work) but the load generator, read from /proc/stat."""
    have = [(w, t, rs) for w in ("w1", "w2") for t, rs in rows(w)
            if all("machine_cpu_us_per_delivery" in r for r in rs)]
    if not have:
        return
    print("\n### Machine CPU per delivery (everything but the load generator)\n")
    print("| workload | system | runs | machine busy | machine CPU µs per delivery | vs Socket.IO + Redis |")
    print("|---|---|---|---|---|---|")
    for w, t, rs in have:
        m = med(rs, "machine_cpu_us_per_delivery")
        base = sior(w)
        sm = med(base, "machine_cpu_us_per_delivery") if base and all("machine_cpu_us_per_delivery" in r for r in base) else 0
        print(f"| {w.upper()} | {NAMES[t]} | {len(rs)} | {100*med(rs,'machine_busy'):.0f}% | {m:.1f} | {ratio(m, sm)} |")


if __name__ == "__main__":
    main()
