//! The `worker` binary: parse settings, set up logging, run until SIGTERM or Ctrl-C.

use clap::Parser;
use worker::WorkerConfig;

#[tokio::main]
async fn main() {
    let config = WorkerConfig::parse();
    telemetry::logging::init(&config.log_format);
    let (trigger, shutdown) = shared::shutdown::channel();
    tokio::spawn(async move {
        shared::shutdown::signal().await;
        tracing::info!("shutdown signal received; finishing the batches in hand");
        trigger.fire();
    });
    if let Err(e) = worker::run(config, shutdown).await {
        tracing::error!("{e}");
        eprintln!("worker: {e}");
        std::process::exit(1);
    }
}
