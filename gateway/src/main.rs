//! The `gateway` binary: parse settings, set up logging, bind, run until SIGTERM or Ctrl-C.

use clap::Parser;
use gateway::GatewayConfig;

#[tokio::main]
async fn main() {
    let config = GatewayConfig::parse();
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
