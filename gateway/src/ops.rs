//! Operations endpoints: liveness, readiness, Prometheus metrics.

use crate::app::App;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// 200 when both the queue and the store answer within 2 s, else 503.
pub async fn readyz(State(app): State<Arc<App>>) -> impl IntoResponse {
    let (queue, store) = tokio::join!(
        tokio::time::timeout(CHECK_TIMEOUT, app.admin.ping()),
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

/// Every metric, with `courier_rooms` and the queue's backlog (when it answers in 2 s)
/// read now.
pub async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    metrics::gauge!("courier_rooms").set(app.hub.room_count() as f64);
    let backlog = tokio::time::timeout(CHECK_TIMEOUT, app.admin.backlog()).await;
    let backlog = backlog.ok().and_then(Result::ok);
    (
        [(header::CONTENT_TYPE, telemetry::CONTENT_TYPE)],
        telemetry::render(&app.metrics, backlog),
    )
}
