//! Accepting TCP connections and serving HTTP/1.1 on them, with the bounds `axum::serve`
//! does not have: a deadline for each request head (which also ends idle connections),
//! a cap on connections that are not WebSockets, and a stop that never waits past its
//! deadline, whatever a client does.
//!
//! A WebSocket upgrade hands its socket over to the WebSocket's own task: from then on
//! the connection counts against `MAX_CONNECTIONS` instead (see `ws`).

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use shared::shutdown::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Largest request head (request line and headers), as nginx's default buffers (431
/// beyond): a half-sent head costs at most about this much memory.
const MAX_HEAD_BYTES: usize = 32 * 1024;
/// Bound of a connection's read buffer (hyper's default is about 400 KB).
const MAX_BUF_BYTES: usize = 64 * 1024;

/// How one listener serves.
#[derive(Clone, Debug)]
pub struct ServeLimits {
    /// Metrics label of the listener (`client`, `metrics`).
    pub listener: &'static str,
    /// Open HTTP connections at most; more are closed as soon as they are accepted.
    pub max_open: usize,
    /// Time to send a request head, from the opening or the previous answer.
    pub header_timeout: Duration,
    /// Longest wait for open connections once stopping.
    pub drain: Duration,
}

/// Counts one open HTTP connection for as long as it is served.
struct Open {
    count: Arc<AtomicUsize>,
    gauge: metrics::Gauge,
}

impl Open {
    fn new(count: Arc<AtomicUsize>, gauge: metrics::Gauge) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        gauge.increment(1.0);
        Self { count, gauge }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        self.gauge.decrement(1.0);
    }
}

/// What a connection beyond the cap gets.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
    content-length: 48\r\nretry-after: 1\r\nconnection: close\r\n\r\n\
    too many open connections to this server; retry\n";

/// Serves `router` on `listener` until `shutdown`; then stops accepting, lets each open
/// connection finish its request, and drops what is left after `drain`. Returns when it
/// began stopping.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: Shutdown,
) -> Instant {
    let open = Arc::new(AtomicUsize::new(0));
    let labels = [("listener", limits.listener)];
    let gauge = metrics::gauge!("courier_http_connections", &labels);
    let refused = metrics::counter!("courier_http_connections_refused_total", &labels);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    loop {
        let (tcp, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            _ = shutdown.fired() => break,
        };
        if open.load(Ordering::Relaxed) >= limits.max_open {
            refused.increment(1);
            tracing::debug!(
                listener = limits.listener,
                "connection refused: too many open HTTP connections"
            );
            // Said without reading the request (that is what the cap saves), then closed.
            let _ = tcp.try_write(TOO_MANY);
            continue;
        }
        // Without TCP_NODELAY, a reply written right after another waits for the client's
        // delayed ACK (about 40 ms): every ack-then-message pair and every burst pays it.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
        }
        let guard = Open::new(open.clone(), gauge.clone());
        let conn = connection(tcp, router.clone(), limits.header_timeout, stop_rx.clone());
        conns.spawn(async move {
            conn.await;
            drop(guard);
        });
    }
    let stopping = Instant::now();
    drop(listener);
    let _ = stop_tx.send(true);
    let finished = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.drain, finished).await.is_err() {
        tracing::info!(
            left = conns.len(),
            listener = limits.listener,
            "closing HTTP connections still open after DRAIN_SECS"
        );
        conns.shutdown().await;
    }
    stopping
}

/// Serves one connection: HTTP/1.1, upgrades allowed, each request head due within
/// `header_timeout`; once `stop` turns, the request in hand is finished and no other read.
async fn connection(
    tcp: TcpStream,
    router: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_BUF_BYTES);
    let service = TowerToHyperService::new(router);
    let conn = builder
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    tokio::pin!(conn);
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stopped => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// An accept error: per-connection ones are nothing; others (out of file descriptors)
/// are waited out rather than spun on.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
