//! Prints a run's result: a table for people, then one `RESULT {json}` line for scripts.

use crate::cli::{IdleArgs, RunArgs};
use crate::procstat::ProcReport;
use crate::stats::ConnStats;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

fn percentiles(h: &Histogram<u64>) -> Value {
    let ms = |v: u64| (v as f64 / 1000.0 * 100.0).round() / 100.0;
    json!({
        "count": h.len(),
        "p50": ms(h.value_at_quantile(0.50)),
        "p90": ms(h.value_at_quantile(0.90)),
        "p99": ms(h.value_at_quantile(0.99)),
        "p999": ms(h.value_at_quantile(0.999)),
        "max": ms(h.max()),
    })
}

/// The whole machine over the measured window.
pub struct Machine {
    /// Busy share of all cores, 0 to 1.
    pub busy: f64,
    /// CPU seconds used by everything on the machine except this driver.
    pub cpu_s: f64,
    /// CPU seconds this driver used.
    pub driver_cpu_s: f64,
}

pub fn run(args: &RunArgs, s: &ConnStats, procs: &[ProcReport], machine: &Machine, drain_s: f64) {
    let result = run_json(args, s, procs, machine, drain_s);
    print_run(args, s, procs, &result);
    println!("RESULT {result}");
}

fn run_json(
    args: &RunArgs,
    s: &ConnStats,
    procs: &[ProcReport],
    machine: &Machine,
    drain_s: f64,
) -> Value {
    let t = &args.target;
    let server_cpu: f64 = procs.iter().map(|p| p.cpu_s).sum();
    let deliveries_per_sec = s.received_in_window as f64 / args.duration;
    let body_bytes_mean = s.body_bytes as f64 / s.sent.max(1) as f64;
    json!({
        "label": t.label,
        "protocol": format!("{:?}", t.protocol).to_lowercase(),
        "mode": if args.rate.is_some() { "rate" } else { "closed" },
        "conns": t.conns,
        "rooms": t.rooms,
        "rate": args.rate,
        "window": args.window,
        "duration_s": args.duration,
        "bodies": args.bodies.name(),
        "body_bytes_mean": (body_bytes_mean * 10.0).round() / 10.0,
        "sent": s.sent,
        "sent_per_sec": s.sent as f64 / (args.warmup + args.duration),
        "acked": s.acked,
        "errors": s.errors,
        "error_codes": s.error_codes,
        "expected": s.expected,
        "received": s.received,
        "undelivered": s.expected.saturating_sub(s.received),
        "duplicates": s.duplicates,
        "gaps": s.gaps,
        "disconnects": s.disconnects,
        "foreign": s.foreign,
        "drain_s": (drain_s * 100.0).round() / 100.0,
        "deliveries_per_sec": deliveries_per_sec.round(),
        "latency_ms": percentiles(&s.latency),
        "ack_latency_ms": percentiles(&s.ack_latency),
        "server_cpu_s": server_cpu,
        "server_cpu_cores": server_cpu / args.duration,
        "server_cpu_us_per_delivery": if s.received_in_window > 0 { server_cpu * 1e6 / s.received_in_window as f64 } else { 0.0 },
        "server_rss_kib": procs.iter().map(|p| p.rss_kib).sum::<u64>(),
        "server_peak_rss_kib": procs.iter().map(|p| p.peak_rss_kib).sum::<u64>(),
        "machine_busy": machine.busy,
        "machine_cpu_s": machine.cpu_s,
        "driver_cpu_s": machine.driver_cpu_s,
        "machine_cpu_us_per_delivery": if s.received_in_window > 0 { machine.cpu_s * 1e6 / s.received_in_window as f64 } else { 0.0 },
        "processes": procs,
    })
}

/// The table for people; the numbers are those of `result`.
fn print_run(args: &RunArgs, s: &ConnStats, procs: &[ProcReport], result: &Value) {
    let t = &args.target;
    let (lat, ack) = (&result["latency_ms"], &result["ack_latency_ms"]);
    let load = match args.rate {
        Some(r) => format!(
            "{r} msgs/s for {} s after {} s warm-up",
            args.duration, args.warmup
        ),
        None => format!(
            "closed loop, window {}, {} s after {} s warm-up",
            args.window, args.duration, args.warmup
        ),
    };
    println!("{:<28} {}", "run", t.label);
    println!(
        "{:<28} {} conns, {} rooms, {load}",
        "load", t.conns, t.rooms
    );
    println!(
        "{:<28} {}, mean {} bytes",
        "bodies",
        args.bodies.name(),
        result["body_bytes_mean"]
    );
    println!(
        "{:<28} {} sent, {} acked, {} errors {:?}",
        "sends", s.sent, s.acked, s.errors, s.error_codes
    );
    println!(
        "{:<28} {} of {} ({} undelivered after {:.2} s), {} duplicates, {} gaps, {} disconnects",
        "deliveries",
        s.received,
        s.expected,
        result["undelivered"],
        result["drain_s"].as_f64().unwrap_or(0.0),
        s.duplicates,
        s.gaps,
        s.disconnects
    );
    if s.foreign > 0 {
        println!(
            "{:<28} {} (an earlier run's backlog; not counted)",
            "foreign messages", s.foreign
        );
    }
    println!(
        "{:<28} {}",
        "deliveries/s (window)", result["deliveries_per_sec"]
    );
    println!(
        "{:<28} p50 {} p90 {} p99 {} p999 {} max {}",
        "latency ms (send→receipt)", lat["p50"], lat["p90"], lat["p99"], lat["p999"], lat["max"]
    );
    println!(
        "{:<28} p50 {} p90 {} p99 {} p999 {} max {}",
        "ack latency ms", ack["p50"], ack["p90"], ack["p99"], ack["p999"], ack["max"]
    );
    print_cpu(args, procs, result);
}

fn print_cpu(args: &RunArgs, procs: &[ProcReport], result: &Value) {
    let server_cpu = result["server_cpu_s"].as_f64().unwrap_or(0.0);
    println!(
        "{:<28} {:.2} s ({:.2} cores), {:.2} µs per delivery; machine {:.0}% busy",
        "server CPU",
        server_cpu,
        server_cpu / args.duration,
        result["server_cpu_us_per_delivery"].as_f64().unwrap_or(0.0),
        result["machine_busy"].as_f64().unwrap_or(0.0) * 100.0
    );
    println!(
        "{:<28} {:.2} s, {:.2} µs per delivery (everything but this driver, {:.2} s)",
        "machine CPU",
        result["machine_cpu_s"].as_f64().unwrap_or(0.0),
        result["machine_cpu_us_per_delivery"]
            .as_f64()
            .unwrap_or(0.0),
        result["driver_cpu_s"].as_f64().unwrap_or(0.0),
    );
    for p in procs {
        println!(
            "{:<28} {} pid {}: {:.2} s CPU, RSS {} KiB (peak {})",
            "", p.name, p.pid, p.cpu_s, p.rss_kib, p.peak_rss_kib
        );
    }
}

pub fn idle(args: &IdleArgs, before_kib: u64, after_kib: u64, procs: &[ProcReport]) {
    let t = &args.target;
    let per_conn = (after_kib as f64 - before_kib as f64) / t.conns as f64;
    let result = json!({
        "label": t.label,
        "protocol": format!("{:?}", t.protocol).to_lowercase(),
        "mode": "idle",
        "conns": t.conns,
        "rooms": t.rooms,
        "server_rss_before_kib": before_kib,
        "server_rss_after_kib": after_kib,
        "rss_per_conn_kib": (per_conn * 100.0).round() / 100.0,
        "processes": procs,
    });
    println!("{:<28} {}", "run", t.label);
    println!("{:<28} {} idle conns in {} rooms", "load", t.conns, t.rooms);
    println!(
        "{:<28} {} KiB before, {} KiB after: {:.2} KiB per connection",
        "server RSS", before_kib, after_kib, per_conn
    );
    println!("RESULT {result}");
}
