//! The `gateway` binary: parse settings, set up logging, bind, run until SIGTERM or Ctrl-C.

use clap::Parser;
use gateway::GatewayConfig;

fn main() {
    let config = GatewayConfig::parse();
    let runtime = shared::runtime::build(config.runtime_threads.map(usize::from))
        .unwrap_or_else(|e| fail(&format!("cannot start the async runtime: {e}")));
    runtime.block_on(serve(config));
}

async fn serve(config: GatewayConfig) {
    telemetry::logging::init(&config.log_format);
    let listener = match tokio::net::TcpListener::bind(config.bind).await {
        Ok(l) => l,
        Err(e) => fail(&format!("cannot listen on {}: {e}", config.bind)),
    };
    let (trigger, shutdown) = shared::shutdown::channel();
    tokio::spawn(async move {
        shared::shutdown::signal().await;
        tracing::info!("shutdown signal received; closing clients with 1012 and draining");
        trigger.fire();
    });
    if let Err(e) = gateway::run(config, listener, shutdown).await {
        fail(&e.to_string());
    }
}

fn fail(message: &str) -> ! {
    tracing::error!("{message}");
    eprintln!("gateway: {message}");
    std::process::exit(1);
}
