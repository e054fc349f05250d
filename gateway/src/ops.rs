//! Operations endpoints: liveness, readiness, Prometheus metrics.

use crate::app::App;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The process's metrics recorder, installed once however many gateways run in it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ])
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

pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// 200 when both the queue and the store answer within 2 s, else 503.
pub async fn readyz(State(app): State<Arc<App>>) -> impl IntoResponse {
    let (queue, store) = tokio::join!(
        tokio::time::timeout(CHECK_TIMEOUT, app.queue.ping()),
        tokio::time::timeout(CHECK_TIMEOUT, app.store.ping()),
    );
    let queue_ok = matches!(queue, Ok(Ok(())));
    let store_ok = matches!(store, Ok(Ok(())));
    if !queue_ok {
        tracing::warn!(result = ?queue.map(|r| r.map_err(|e| e.to_string())), "readiness: queue not answering");
    }
    if !store_ok {
        tracing::warn!(result = ?store.map(|r| r.map_err(|e| e.to_string())), "readiness: store not answering");
    }
    let ready = queue_ok && store_ok && !app.shutdown.is_fired();
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({ "ready": ready, "queue": word(queue_ok), "store": word(store_ok) });
    (status, Json(body))
}

pub async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    if let Ok(Ok(Some(depth))) = tokio::time::timeout(CHECK_TIMEOUT, app.queue.backlog()).await {
        metrics::gauge!("courier_ingest_backlog").set(depth as f64);
    }
    metrics::gauge!("courier_rooms").set(app.hub.room_count() as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}
