//! Gateway settings: one typed struct, every field a flag and an environment variable.

use shared::config::BackendConfig;
use std::net::SocketAddr;
use std::time::Duration;
use worker::WorkerSettings;

#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "gateway",
    version,
    about = "courier gateway: WebSocket chat and HTTP API in front of the ingest queue",
    long_about = "courier gateway: accepts WebSocket clients and HTTP calls, publishes what \
                  clients send onto the ingest queue, and delivers processed messages to every \
                  member of a room. With QUEUE_URL=memory (the default) it also runs the workers \
                  in-process, so one command gives a complete chat server."
)]
pub struct GatewayConfig {
    /// Address to listen on.
    #[arg(long, env = "BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// HS256 secret; when set, every WebSocket client must present a valid token
    /// (`?token=` or `Authorization: Bearer`) whose `sub` is the user and which has `exp`.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Bearer token for the HTTP API; unset, the HTTP API refuses every call with 401.
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    #[command(flatten)]
    pub backend: BackendConfig,

    #[command(flatten)]
    pub limits: Limits,

    /// Embedded workers (used only with the embedded queues, QUEUE_URL=sqlite://… or memory).
    #[command(flatten)]
    pub worker: WorkerSettings,

    /// Log format: `text` or `json` (one object per line). Filter with RUST_LOG.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// Per-connection and per-process bounds.
#[derive(Clone, Debug, clap::Args)]
pub struct Limits {
    /// Frames waiting to be written to one WebSocket client. When it is full, room
    /// messages are not queued for that client and it is resynced from the store once it
    /// catches up; if its socket stays blocked meanwhile (it is not reading), it is
    /// closed with 1008 and reconnects with `since`.
    #[arg(long, env = "OUTBOUND_BUFFER", default_value_t = 256, value_parser = clap::value_parser!(u32).range(8..=65_536))]
    pub outbound_buffer: u32,

    /// Sustained commands per second one connection may send (any type).
    #[arg(long, env = "RATE_PER_SEC", default_value_t = 20.0)]
    pub rate_per_sec: f64,

    /// Commands one connection may send in a burst above the sustained rate.
    #[arg(long, env = "RATE_BURST", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate_burst: u32,

    /// Open WebSocket connections this gateway accepts; beyond it, upgrades get 503.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// Rooms one connection may be joined to at once.
    #[arg(long, env = "MAX_ROOMS_PER_CONNECTION", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_rooms_per_connection: u32,

    /// Seconds between WebSocket pings; a client silent for two intervals is disconnected.
    #[arg(long, env = "HEARTBEAT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat_secs: u64,

    /// How long a room's out-of-order deliveries wait for the missing seq before the
    /// gap is filled from the store, in milliseconds.
    #[arg(long, env = "REORDER_HOLD_MS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub reorder_hold_ms: u64,

    /// Longest wait for the queue to confirm a publish before answering `unavailable`, in ms.
    #[arg(long, env = "PUBLISH_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub publish_timeout_ms: u64,

    /// Longest a graceful stop waits for clients to be told and, with QUEUE_URL=memory,
    /// for embedded workers to drain the queue, in seconds.
    #[arg(long, env = "DRAIN_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub drain_secs: u64,
}

impl Limits {
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs)
    }

    pub fn reorder_hold(&self) -> Duration {
        Duration::from_millis(self.reorder_hold_ms)
    }

    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }

    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_secs)
    }
}

impl GatewayConfig {
    /// Checks what clap cannot: cross-field rules and value ranges of floats.
    pub fn validate(&self) -> Result<(), String> {
        let r = self.limits.rate_per_sec;
        if !(r.is_finite() && r > 0.0 && r <= 100_000.0) {
            return Err(format!("RATE_PER_SEC must be in (0, 100000], got {r}"));
        }
        if self.jwt_secret.as_deref().is_some_and(str::is_empty) {
            return Err("JWT_SECRET is set but empty; unset it for development identities".into());
        }
        if self.api_token.as_deref().is_some_and(str::is_empty) {
            return Err("API_TOKEN is set but empty; unset it to refuse the HTTP API".into());
        }
        self.backend.queue_url().map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The defaults, as `gateway` with no flags and no environment would run (for tests).
    pub fn defaults() -> Self {
        use clap::Parser;
        Self::parse_from(["gateway"])
    }
}
