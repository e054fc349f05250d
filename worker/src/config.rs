//! Worker settings: how big a batch is, how failures are retried, how many run at once.

use queue::QueueSettings;
use std::time::Duration;
use store::StoreSettings;

/// Settings of the processing loop; the gateway embeds the same ones for `QUEUE_URL=memory`.
#[derive(Clone, Debug, clap::Args)]
pub struct WorkerSettings {
    /// Most messages a worker takes from the queue and stores in one transaction.
    #[arg(long, env = "BATCH_SIZE", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub batch_size: u32,

    /// After the first message of a batch, how long a worker keeps topping it up while
    /// more keep arriving, in milliseconds (0: take what is there). Fewer, larger
    /// transactions; it adds at most this much latency, about 1 ms when traffic is light.
    #[arg(long, env = "BATCH_LINGER_MS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub batch_linger_ms: u64,

    /// Concurrent consumers in this process (each with its own batch).
    #[arg(long, env = "WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,

    /// Delay before a failed message is tried again, in milliseconds; doubles with each
    /// attempt, capped at 30 s. After MAX_ATTEMPTS it goes to the dead-letter place.
    #[arg(long, env = "RETRY_DELAY_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub retry_delay_ms: u64,
}

impl WorkerSettings {
    /// The delay before attempt `attempt + 1` of a message that failed `attempt` times.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let base = Duration::from_millis(self.retry_delay_ms);
        base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(Duration::from_secs(30))
    }
}

/// Everything the `worker` binary reads from flags and the environment.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "worker",
    version,
    about = "courier worker: stores and enriches messages from the ingest queue and publishes them for delivery",
    long_about = "courier worker: stores and enriches messages from the ingest queue and publishes \
                  them for delivery. Without a command it consumes until SIGTERM; `worker dlq` \
                  inspects and recovers dead letters."
)]
pub struct WorkerConfig {
    #[command(subcommand)]
    pub command: Option<WorkerCommand>,

    /// Address for `/metrics` and `/healthz` (e.g. 0.0.0.0:9090); unset, no listener.
    #[arg(long, env = "METRICS_BIND", global = true)]
    pub metrics_bind: Option<std::net::SocketAddr>,

    #[command(flatten)]
    pub queue: QueueSettings,

    #[command(flatten)]
    pub store: StoreSettings,

    #[command(flatten)]
    pub settings: WorkerSettings,

    /// Async runtime threads (unset: one per usable core). Where several processes share
    /// a few cores (gateways, workers, a broker and a database on one machine), 1 each
    /// keeps messages from queueing for a core between threads.
    #[arg(long, env = "RUNTIME_THREADS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub runtime_threads: Option<u16>,

    /// Log format: `text` or `json` (one object per line). Filter with RUST_LOG.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// What the `worker` binary does besides consuming.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum WorkerCommand {
    /// Inspect and recover messages in the dead-letter queue.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum DlqAction {
    /// Print dead letters, oldest first, one JSON object per line (they stay where they are).
    List {
        /// Most dead letters to print.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// Put dead letters back on the ingest queue once their cause is fixed; messages that
    /// were stored after all are not stored twice.
    Replay {
        /// Replay the dead letters whose message id is this (repeat for several).
        #[arg(long = "id", required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Replay every dead letter.
        #[arg(long)]
        all: bool,
    },
    /// Delete every dead letter.
    Purge {
        /// Confirm: purging cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}
