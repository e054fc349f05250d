//! The worker's optional `/metrics` + `/healthz` listener (`METRICS_BIND`).

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use queue::Admin;
use shared::shutdown::Shutdown;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long `/metrics` waits for the queue's backlog before answering without it.
const BACKLOG_TIMEOUT: Duration = Duration::from_secs(2);

struct Listen {
    handle: telemetry::Handle,
    queue: Arc<dyn Admin>,
}

/// Serves `/metrics` and `/healthz` on `bind` until `shutdown`.
pub async fn serve(
    bind: SocketAddr,
    queue: Arc<dyn Admin>,
    shutdown: Shutdown,
) -> Result<(), crate::Error> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| crate::Error::Config(format!("cannot listen on METRICS_BIND {bind}: {e}")))?;
    let state = Arc::new(Listen {
        handle: telemetry::metrics_handle(),
        queue,
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state);
    tracing::info!(addr = %bind, "worker metrics listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.fired().await })
        .await
        .map_err(|e| crate::Error::Config(format!("metrics listener on {bind} failed: {e}")))
}

async fn metrics(State(l): State<Arc<Listen>>) -> impl IntoResponse {
    let backlog = tokio::time::timeout(BACKLOG_TIMEOUT, l.queue.backlog()).await;
    let backlog = backlog.ok().and_then(Result::ok);
    (
        [(header::CONTENT_TYPE, telemetry::CONTENT_TYPE)],
        telemetry::render(&l.handle, backlog),
    )
}
