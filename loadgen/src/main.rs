//! `loadgen`: drives courier (or a peer) with many WebSocket clients and reports latency,
//! throughput, loss and the server's CPU and memory. See docs/benchmarks.md.

mod bodies;
mod cli;
mod client;
mod corpus;
mod idle;
mod procstat;
mod reference;
mod report;
mod rng;
mod run;
mod stats;
mod typing;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.cmd {
            cli::Cmd::Run(args) => run::run(args).await,
            cli::Cmd::Idle(args) => idle::idle(args).await,
            cli::Cmd::Typing(args) => typing::typing(args).await,
            cli::Cmd::ReferenceServer { bind } => reference::serve(bind).await,
        }
    })
}
