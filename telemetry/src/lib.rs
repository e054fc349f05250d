//! What every courier process reports: the one Prometheus recorder and its text page, and
//! the log subscriber ([`logging`]). Serving the page is the caller's: the gateway serves
//! it on its own router, the worker on its `METRICS_BIND` listener.

pub mod logging;

use metrics_exporter_prometheus::PrometheusBuilder;
pub use metrics_exporter_prometheus::PrometheusHandle as Handle;
use std::sync::OnceLock;
use std::time::Duration;

/// The `Content-Type` of [`render`]'s page (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Latency buckets in seconds, for every histogram.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05, 0.075, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process's metrics recorder, installed once however many servers run in it (a
/// gateway with embedded workers has one). Call it inside a Tokio runtime: it starts the
/// recorder's upkeep task.
pub fn metrics_handle() -> Handle {
    static HANDLE: OnceLock<Handle> = OnceLock::new();
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

/// Sets `courier_ingest_backlog` when the caller could read the queue's backlog (it is
/// left at its last value when not), then renders every metric.
pub fn render(handle: &Handle, backlog: Option<u64>) -> String {
    if let Some(depth) = backlog {
        metrics::gauge!("courier_ingest_backlog").set(depth as f64);
    }
    handle.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_page_carries_the_backlog_once_known() {
        let handle = metrics_handle();
        assert!(!render(&handle, None).contains("courier_ingest_backlog"));
        let page = render(&handle, Some(7));
        assert!(page.contains("courier_ingest_backlog 7"), "{page}");
        assert!(render(&handle, None).contains("courier_ingest_backlog 7"));
    }
}
