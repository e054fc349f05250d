//! Clients that try to exhaust one gateway, against the real `gateway` binary: WebSocket
//! clients that ask for history and never read (memory measured in /proc), half-sent
//! HTTP requests and idle TCP connections (timed out and capped), and a SIGTERM with all
//! of those attached (the process still exits within `DRAIN_SECS` + 5 s).

use crate::cluster::{Proc, wait_ready};
use crate::helpers::*;
use crate::replies::realistic_body;
use futures_util::SinkExt;
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::tungstenite::Message;

/// A gateway binary alone in a temporary folder (its default SQLite queue and store under
/// `data/`), with the HTTP API on and `env` on top.
pub async fn solo(name: &str, env: &[(&str, &str)]) -> (Proc, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec![
        ("BIND".to_owned(), "127.0.0.1:0".to_owned()),
        ("API_TOKEN".to_owned(), API_TOKEN.to_owned()),
    ];
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let p = Proc::spawn_in(name, "gateway", &all, Some(dir.path()));
    wait_ready(p.addr.unwrap()).await;
    (p, dir)
}

/// A field of `/proc/<pid>/status` in bytes (`VmRSS`, `VmHWM`).
fn proc_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kb.trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// One sample of a metric from a Prometheus text page (0 when absent).
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

async fn metrics_page(addr: SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Posts `n` messages of 4000 bytes to `room` and waits until `reader` got them all.
async fn fill_room(addr: SocketAddr, reader: &mut Client, room: &str, n: usize) {
    for i in 0..n {
        let body = json!({"id":format!("fill-{i}"),"from":"seeder","body":realistic_body(i, 4000)});
        assert_eq!(post_message(addr, room, body).await.status(), 202);
    }
    for _ in 0..n {
        reader.message(room).await;
    }
}

/// Sends `history` requests for `room` and never reads, until its socket takes no more
/// (or `max` were sent); returns how many went out, and the client, still unread.
fn flood_history(
    mut client: Client,
    room: &str,
    max: usize,
) -> tokio::task::JoinHandle<(usize, Client)> {
    let frame = json!({"type":"history","room":room,"limit":200}).to_string();
    tokio::spawn(async move {
        let mut sent = 0;
        while sent < max {
            let send = client.sink.send(Message::text(frame.clone()));
            match timeout(Duration::from_secs(2), send).await {
                Ok(Ok(())) => sent += 1,
                _ => break,
            }
        }
        (sent, client)
    })
}

/// Reads what the server sent until the connection is gone (closed, reset or silent).
async fn drain(c: &mut Client) {
    while c.rx.next_or_gone().await.is_some() {}
}

const ATTACKERS: usize = 8;
/// OUTBOUND_BUFFER_BYTES, the default.
const OUTBOUND_BYTES: u64 = 1 << 20;
/// What one connection may hold at most (docs/operations.md, "Memory per connection"):
/// its outbound bytes, the socket's write buffer (8 KiB + the largest frame, 256 KiB),
/// one reply being built (192 KiB) and the store page under it (200 × 4 KiB).
const PER_CONNECTION: u64 = OUTBOUND_BYTES + (264 << 10) + (192 << 10) + (800 << 10);
/// Allocator arenas and fragmentation, the store's caches, the test clients' own traffic.
const SLACK: u64 = 48 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads the gateway's memory in /proc"
)]
async fn clients_that_ask_for_history_without_reading_are_closed_and_the_gateway_stays_small() {
    let env = [("RATE_PER_SEC", "1000"), ("RATE_BURST", "1000")];
    let (gw, _dir) = solo("gateway-flood", &env).await;
    let (addr, pid) = (gw.addr.unwrap(), gw.pid());
    let mut watcher = Client::connect(&format!("ws://{addr}/ws?user=watcher")).await;
    watcher.recv().await;
    watcher.join("flood").await;
    // 50 messages of 4000 bytes: a 50-message page is about 210 KB, under the old 256 KiB
    // write limit, so it was queued whole for every request.
    fill_room(addr, &mut watcher, "flood", 50).await;
    for _ in 0..3 {
        watcher.send(json!({"type":"history","room":"flood"})).await;
        let page = watcher.recv_type("history").await;
        assert!(!page["messages"].as_array().unwrap().is_empty());
    }
    let baseline = proc_bytes(pid, "VmHWM");
    let bound = baseline + ATTACKERS as u64 * PER_CONNECTION + SLACK;

    let mut floods = Vec::new();
    for n in 0..ATTACKERS {
        let url = format!("ws://{addr}/ws?user=flood{n}");
        let mut c = Client::connect_small_buffer(addr, &url).await;
        c.recv().await;
        c.join("flood").await;
        floods.push(flood_history(c, "flood", 2000));
    }
    let (mut peak, mut round) = (baseline, 0u64);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        peak = peak.max(proc_bytes(pid, "VmRSS"));
        assert!(
            peak <= bound,
            "gateway RSS {} MiB over the bound {} MiB (baseline {} MiB)",
            peak >> 20,
            bound >> 20,
            baseline >> 20
        );
        let page = metrics_page(addr).await;
        if metric(&page, "courier_slow_consumer_closes_total") >= ATTACKERS as f64
            && metric(&page, "courier_connections") <= 1.0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the non-readers were not closed:\n{page}"
        );
        // Everyone else keeps chatting meanwhile.
        round += 1;
        let id = format!("w-{round}");
        let body = format!("still here, round {round} ✅ — €{round}.99");
        assert_eq!(watcher.say("flood", &id, &body).await["type"], "ack");
        assert_eq!(watcher.message("flood").await["body"], body.as_str());
        sleep(Duration::from_millis(200)).await;
    }
    for f in floods {
        let (sent, mut c) = f.await.unwrap();
        assert!(sent > 0);
        drain(&mut c).await;
    }
    let peak = peak.max(proc_bytes(pid, "VmHWM"));
    eprintln!(
        "history flood: baseline {} MiB, peak {} MiB, bound {} MiB",
        baseline >> 20,
        peak >> 20,
        bound >> 20
    );
    assert!(peak <= bound, "peak {peak} over {bound}");
    let mut late = Client::connect(&format!("ws://{addr}/ws?user=late")).await;
    late.recv().await;
    late.join("flood").await;
    late.send(json!({"type":"history","room":"flood","limit":5}))
        .await;
    assert_eq!(
        late.recv_type("history").await["messages"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
}

/// Opens a TCP connection that sends part of a request's head and stops.
async fn half_sent(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: sl")
        .await
        .unwrap();
    s
}

/// True once the server closed `s` (end of stream or reset), within `within`.
async fn closed_by_server(mut s: TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let end = Instant::now() + within;
    loop {
        match timeout(
            end.saturating_duration_since(Instant::now()),
            s.read(&mut buf),
        )
        .await
        {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Sends `request` on a new connection; the start of the answer (within 30 s).
async fn answer(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = timeout(Duration::from_secs(30), s.read(&mut buf))
        .await
        .expect("an answer in time")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_and_idle_connections_are_capped_and_timed_out() {
    const CAP: usize = 64;
    const OPENED: usize = 600;
    let metrics = format!("127.0.0.1:{}", free_port());
    let env = [
        ("HTTP_HEADER_TIMEOUT_SECS", "2"),
        ("MAX_HTTP_CONNECTIONS", "64"),
        ("METRICS_BIND", metrics.as_str()),
    ];
    let (gw, _dir) = solo("gateway-slowloris", &env).await;
    let (addr, pid) = (gw.addr.unwrap(), gw.pid());
    let metrics: SocketAddr = metrics.parse().unwrap();
    let before = proc_bytes(pid, "VmRSS");
    let mut socks = Vec::new();
    for i in 0..OPENED {
        socks.push(if i % 3 == 0 {
            TcpStream::connect(addr).await.unwrap()
        } else {
            half_sent(addr).await
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = metrics_page(metrics).await;
        let open = metric(&page, r#"courier_http_connections{listener="client"}"#);
        assert!(
            open <= CAP as f64,
            "{open} open HTTP connections, cap {CAP}"
        );
        let refused = r#"courier_http_connections_refused_total{listener="client"}"#;
        if metric(&page, refused) >= (OPENED - CAP) as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cap refused too few:\n{page}"
        );
        sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{OPENED} half-open connections: RSS {} -> {} MiB",
        before >> 20,
        proc_bytes(pid, "VmRSS") >> 20
    );
    let checks: Vec<_> = socks
        .into_iter()
        .map(|s| tokio::spawn(closed_by_server(s, Duration::from_secs(30))))
        .collect();
    for c in checks {
        assert!(c.await.unwrap(), "a half-open connection was never closed");
    }
    assert_eq!(
        reqwest::get(format!("http://{addr}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    // A body that trickles in is cut off too, and a head over 32 KiB is refused.
    let head = format!(
        "POST /api/rooms/lobby/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {API_TOKEN}\r\nContent-Type: application/json\r\n\
         Content-Length: 200\r\n\r\n{{\"id\":\"slow-1\","
    );
    assert!(
        answer(addr, head.as_bytes())
            .await
            .starts_with("HTTP/1.1 408")
    );
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: {}\r\n\r\n",
        "7".repeat(40_000)
    );
    assert!(
        answer(addr, big.as_bytes())
            .await
            .starts_with("HTTP/1.1 431")
    );
    let mut a = Client::connect(&format!("ws://{addr}/ws?user=after")).await;
    a.recv().await;
    a.join("lobby").await;
    assert_eq!(
        a.say("lobby", "a-1", "back to normal — 100 % 🎉").await["type"],
        "ack"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_within_drain_secs_plus_5_whatever_clients_do() {
    const DRAIN_SECS: u64 = 3;
    let env = [
        ("DRAIN_SECS", "3"),
        ("HTTP_HEADER_TIMEOUT_SECS", "600"),
        ("RATE_PER_SEC", "1000"),
        ("RATE_BURST", "1000"),
    ];
    let (mut gw, _dir) = solo("gateway-stop", &env).await;
    let addr = gw.addr.unwrap();
    let mut reader = Client::connect(&format!("ws://{addr}/ws?user=reader")).await;
    reader.recv().await;
    reader.join("stop").await;
    fill_room(addr, &mut reader, "stop", 20).await;
    let _half = half_sent(addr).await;
    let _idle = TcpStream::connect(addr).await.unwrap();
    let mut stuck = Client::connect_small_buffer(addr, &format!("ws://{addr}/ws?user=stuck")).await;
    stuck.recv().await;
    stuck.join("stop").await;
    let flood = flood_history(stuck, "stop", 400);
    sleep(Duration::from_millis(500)).await;

    gw.sigterm();
    let started = Instant::now();
    let limit = Duration::from_secs(DRAIN_SECS + 5);
    let status = loop {
        if let Some(s) = gw.try_wait() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "still running 60 s after SIGTERM; log:\n{}",
            gw.log_text()
        );
        sleep(Duration::from_millis(50)).await;
    };
    let took = started.elapsed();
    eprintln!("SIGTERM to exit: {took:?} (DRAIN_SECS={DRAIN_SECS})");
    assert!(took <= limit, "exited after {took:?}, over {limit:?}");
    assert!(status.success(), "{status:?}");
    // The stuck client going offline may come first (presence).
    let closed = loop {
        match reader.recv_or_close().await {
            Ok(v) if v["type"] == "member" => continue,
            other => break other,
        }
    };
    assert_eq!(closed.err(), Some(1012));
    flood.abort();
}

/// Beyond `MAX_HTTP_CONNECTIONS`, a connection is told 503 (with `Retry-After`) and
/// closed, without the server reading what it sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_beyond_the_cap_is_answered_503_and_closed() {
    let g = TestGateway::start_with(|c| {
        c.limits.max_http_connections = 2;
        c.limits.http_header_timeout_secs = 600; // the held ones stay open throughout
    })
    .await;
    // Another connection may still be open when the test starts (the start-up readiness
    // check's, until it closes) and take a held one's place, which is then refused and
    // gone: hold one more for every probe that is still served, until the cap is full.
    let mut held = vec![half_sent(g.addr).await, half_sent(g.addr).await];
    let refused = loop {
        let reply = answer(g.addr, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
        if reply.starts_with("HTTP/1.1 503 ") || held.len() >= 20 {
            break reply;
        }
        assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
        held.push(half_sent(g.addr).await);
        sleep(Duration::from_millis(50)).await;
    };
    assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
    assert!(refused.contains("retry-after: 1"), "{refused}");
    drop(held);
}
