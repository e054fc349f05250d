#!/usr/bin/env python3
"""CPU of every process on the machine over a window, summed by process name.

    bench/proc_cpu.py SECONDS

Run it during a benchmark (e.g. 6 s after `bench/run.sh` starts a W1 run, for 5 s) to
see which stage the machine's CPU goes to: gateway, worker, beam.smp (RabbitMQ),
postgres, loadgen. Reads /proc/PID/stat (utime + stime, every thread of a process) at
both ends of the window; also prints PostgreSQL's commits per second when psql reaches
127.0.0.1:5432.
"""
import os
import subprocess
import sys
import time


def snap():
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read()
        except OSError:
            continue
        name = st[st.index("(") + 1 : st.rindex(")")]
        fields = st[st.rindex(")") + 2 :].split()
        out[pid] = (name, int(fields[11]) + int(fields[12]))
    return out


def commits():
    try:
        r = subprocess.run(
            ["psql", "-U", "postgres", "-h", "127.0.0.1", "-Atc",
             "select sum(xact_commit) from pg_stat_database"],
            capture_output=True, text=True, timeout=5)
        return int(r.stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def main():
    window = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    hz = os.sysconf("SC_CLK_TCK")
    c0 = commits()
    a = snap()
    time.sleep(window)
    b = snap()
    c1 = commits()
    by_name = {}
    for pid, (name, ticks) in b.items():
        if pid in a:
            by_name[name] = by_name.get(name, 0) + ticks - a[pid][1]
    for name, ticks in sorted(by_name.items(), key=lambda kv: -kv[1])[:10]:
        print(f"{name:24} {ticks / hz / window:.3f} cores")
    print(f"{'all processes':24} {sum(by_name.values()) / hz / window:.3f} cores")
    if c0 is not None and c1 is not None:
        print(f"PostgreSQL commits/s     {(c1 - c0) / window:.0f}")


if __name__ == "__main__":
    main()
