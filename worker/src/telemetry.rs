//! Metrics for every process: the one Prometheus recorder, and the worker's optional
//! `/metrics` + `/healthz` listener (`METRICS_BIND`).

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use shared::queue::Queue;
use shared::shutdown::Shutdown;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Latency buckets in seconds, for every histogram.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process's metrics recorder, installed once however many servers run in it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            let upkeep = handle.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    upkeep.run_upkeep();
                }
            });
            handle
        })
        .clone()
}

/// Sets `courier_ingest_backlog` from the queue, then renders every metric.
pub async fn render(handle: &PrometheusHandle, queue: &dyn Queue) -> impl IntoResponse + use<> {
    if let Ok(Ok(Some(depth))) = tokio::time::timeout(Duration::from_secs(2), queue.backlog()).await
    {
        metrics::gauge!("courier_ingest_backlog").set(depth as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
}

struct Telemetry {
    handle: PrometheusHandle,
    queue: Arc<dyn Queue>,
}

/// Serves `/metrics` and `/healthz` on `bind` until `shutdown`.
pub async fn serve(
    bind: SocketAddr,
    queue: Arc<dyn Queue>,
    shutdown: Shutdown,
) -> Result<(), crate::Error> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| crate::Error::Config(format!("cannot listen on METRICS_BIND {bind}: {e}")))?;
    let state = Arc::new(Telemetry {
        handle: metrics_handle(),
        queue,
    });
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(t): State<Arc<Telemetry>>| async move {
                render(&t.handle, t.queue.as_ref()).await
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state);
    tracing::info!(addr = %bind, "worker metrics listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.fired().await })
        .await
        .map_err(|e| crate::Error::Config(format!("metrics listener on {bind} failed: {e}")))
}
