//! The `worker` binary: parse settings, set up logging, run until SIGTERM or Ctrl-C.

use clap::Parser;
use worker::WorkerConfig;

fn main() {
    let config = WorkerConfig::parse();
    let runtime = match shared::runtime::build(config.runtime_threads.map(usize::from)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("worker: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(serve(config));
}

async fn serve(config: WorkerConfig) {
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
