//! W4: presence and typing. Every connection sends `typing` to its room every `--every`
//! seconds (staggered over the period) and counts the `typing` events it gets; reported
//! with the server's CPU and, from the gateways' `/metrics`, the signal lane's traffic.

use crate::cli::{Protocol, TypingArgs};
use crate::{procstat, run};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep_until};
use tokio_tungstenite::tungstenite::Message;

/// The series of the gateways' signal lane read before and after the window.
const LANE_SERIES: [&str; 3] = [
    "courier_signals_published_total",
    "courier_signal_publishes_total",
    "courier_typing_relayed_total",
];

/// What one connection counted in the measured window.
#[derive(Default)]
struct Counts {
    sent: u64,
    received: u64,
    errors: u64,
}

pub async fn typing(args: TypingArgs) -> anyhow::Result<()> {
    if args.target.protocol != Protocol::Courier {
        anyhow::bail!("typing is courier's protocol only");
    }
    let procs = procstat::parse(&args.target.pids)?;
    let conns = run::connect_all(&args.target, 4 * 1024).await?;
    let every = Duration::from_secs_f64(args.every);
    let start = Instant::now() + Duration::from_millis(500);
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let (window_tx, window_rx) = watch::channel(false);
    let n = args.target.conns;
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            let room = format!("bench-{}", i % args.target.rooms);
            let first = start + every.mul_f64(i as f64 / n as f64);
            tokio::spawn(drive(ws, room, first, every, end, window_rx.clone()))
        })
        .collect();
    sleep_until(measure_from).await;
    let lane0 = lane(&args.metrics).await;
    let (before, m0) = (procstat::sample_all(&procs), procstat::machine());
    let _ = window_tx.send(true);
    sleep_until(end).await;
    let _ = window_tx.send(false);
    let (after, m1) = (procstat::sample_all(&procs), procstat::machine());
    let lane1 = lane(&args.metrics).await;
    let mut total = Counts::default();
    for t in tasks {
        let c = t.await?;
        total.sent += c.sent;
        total.received += c.received;
        total.errors += c.errors;
    }
    let procs = procstat::window(&procs, &before, &after);
    let secs = args.duration;
    let server_cpu: f64 = procs.iter().map(|p| p.cpu_s).sum();
    let lane_rates: serde_json::Map<String, serde_json::Value> = LANE_SERIES
        .iter()
        .zip(lane0.iter().zip(&lane1))
        .map(|(name, (a, b))| {
            (
                name.to_string(),
                json!(((b - a) / secs * 10.0).round() / 10.0),
            )
        })
        .collect();
    let result = json!({
        "label": args.target.label,
        "mode": "typing",
        "conns": n,
        "rooms": args.target.rooms,
        "every_s": args.every,
        "typing_sent_per_sec": (total.sent as f64 / secs).round(),
        "typing_received_per_sec": (total.received as f64 / secs).round(),
        "errors": total.errors,
        "server_cpu_percent": (server_cpu / secs * 1000.0).round() / 10.0,
        "machine_busy_percent": (procstat::machine_busy(&m0, &m1).1 * 1000.0).round() / 10.0,
        "lane_per_sec": lane_rates,
        "processes": procs,
    });
    println!("{:<28} {}", "run", args.target.label);
    println!(
        "{:<28} {n} conns in {} rooms, typing every {} s",
        "load", args.target.rooms, args.every
    );
    println!(
        "{:<28} {} sent/s, {} received/s, {} errors",
        "typing", result["typing_sent_per_sec"], result["typing_received_per_sec"], total.errors
    );
    println!("{:<28} {} %", "server CPU", result["server_cpu_percent"]);
    println!(
        "{:<28} {}",
        "lane (per s, all gateways)", result["lane_per_sec"]
    );
    println!("RESULT {result}");
    Ok(())
}

/// One connection: typing on schedule, counting what arrives while the window is open.
async fn drive(
    mut ws: run::WsConn,
    room: String,
    first: Instant,
    every: Duration,
    end: Instant,
    mut window: watch::Receiver<bool>,
) -> Counts {
    let mut ticker = interval_at(first, every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let frame = format!(r#"{{"type":"typing","room":"{room}"}}"#);
    let mut c = Counts::default();
    let mut measuring = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if Instant::now() >= end { break; }
                if ws.send(Message::text(frame.as_str())).await.is_err() { break; }
                c.sent += u64::from(measuring);
            }
            f = ws.next() => match f {
                Some(Ok(Message::Text(t))) if measuring => {
                    if t.contains(r#""type":"typing""#) { c.received += 1; }
                    else if t.contains(r#""type":"error""#) { c.errors += 1; }
                }
                Some(Ok(_)) => {}
                _ => break,
            },
            changed = window.changed() => {
                if changed.is_err() { break; }
                measuring = *window.borrow();
                if !measuring && Instant::now() >= end { break; }
            }
        }
    }
    let _ = ws.close(None).await;
    c
}

/// The lane series summed over every gateway's `/metrics` (`host:port`), 0 when absent.
async fn lane(gateways: &[String]) -> Vec<f64> {
    let mut sums = vec![0.0; LANE_SERIES.len()];
    for addr in gateways {
        let Ok(text) = scrape(addr).await else {
            eprintln!("could not read http://{addr}/metrics");
            continue;
        };
        for line in text.lines() {
            for (i, name) in LANE_SERIES.iter().enumerate() {
                if let Some(rest) = line.strip_prefix(name)
                    && let Some(v) = rest
                        .split_whitespace()
                        .last()
                        .and_then(|v| v.parse::<f64>().ok())
                {
                    sums[i] += v;
                }
            }
        }
    }
    sums
}

/// `GET /metrics` over plain HTTP/1.0, on a blocking thread: the body as text.
async fn scrape(addr: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let addr = addr.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let mut s = std::net::TcpStream::connect(&addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out
            .split_once("\r\n\r\n")
            .map_or(out.clone(), |(_, b)| b.to_owned()))
    })
    .await?
}
