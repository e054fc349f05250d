//! Gateway settings: one typed struct, every field a flag and an environment variable.

use queue::QueueSettings;
use std::net::SocketAddr;
use std::time::Duration;
use store::StoreSettings;
#[cfg(feature = "embedded")]
use worker::WorkerSettings;

#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "gateway",
    version,
    about = "courier gateway: WebSocket chat and HTTP API in front of the ingest queue",
    long_about = "courier gateway: accepts WebSocket clients and HTTP calls, publishes what \
                  clients send onto the ingest queue, and delivers processed messages to every \
                  member of a room. With the embedded queues (QUEUE_URL=sqlite://…, the default, \
                  or memory) it also runs the workers in-process, so one command gives a \
                  complete chat server."
)]
pub struct GatewayConfig {
    /// Address to listen on.
    #[arg(long, env = "BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// HS256 secret, at least 32 bytes (e.g. `openssl rand -base64 48`); when set, every
    /// WebSocket client must present a valid token (`?token=`, `Authorization: Bearer`, or
    /// `bearer.<token>` in `Sec-WebSocket-Protocol` beside `courier`) whose `sub` is the
    /// user and which has `exp` (`nbf`, when present, is checked). Unset, identities are
    /// self-chosen (`?user=`), and the gateway says so in its log at start.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// With JWT_SECRET: the audience a token's `aud` must name. Unset, any `aud` (or none)
    /// is accepted, as identity providers put their own there.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// With JWT_SECRET: the issuer a token's `iss` must be. Unset, any (or none).
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Comma-separated origins (`https://chat.example.com`) a browser may open /ws from;
    /// `*` allows any. Unset, only the request's own origin (its Host). A request without
    /// Origin (not a browser) is always allowed; a refused one gets 403.
    #[arg(long, env = "ALLOWED_ORIGINS")]
    pub allowed_origins: Option<String>,

    /// Address for /metrics alone (e.g. `0.0.0.0:9090`); /metrics on the client port then
    /// answers 404. Unset, /metrics is served on BIND.
    #[arg(long, env = "METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,

    /// Bearer token for the HTTP API; unset, the HTTP API refuses every call with 401.
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    #[command(flatten)]
    pub queue: QueueSettings,

    #[command(flatten)]
    pub store: StoreSettings,

    #[command(flatten)]
    pub limits: Limits,

    #[command(flatten)]
    pub presence: PresenceSettings,

    /// Embedded workers (used only with the embedded queues, QUEUE_URL=sqlite://… or memory).
    #[cfg(feature = "embedded")]
    #[command(flatten)]
    pub worker: WorkerSettings,

    /// Async runtime threads (unset: one per usable core). Where several processes share
    /// a few cores (gateways, workers, a broker and a database on one machine), 1 each
    /// keeps messages from queueing for a core between threads.
    #[arg(long, env = "RUNTIME_THREADS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub runtime_threads: Option<u16>,

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

    /// Bytes of frames waiting to be written to one WebSocket client, replies and room
    /// messages together. Beyond it, room messages are left to a resync from the store and
    /// the client's commands wait; a client whose socket then takes nothing is closed
    /// with 1008.
    #[arg(long, env = "OUTBOUND_BUFFER_BYTES", default_value_t = 1_048_576, value_parser = clap::value_parser!(u64).range(262_144..=1_073_741_824))]
    pub outbound_buffer_bytes: u64,

    /// Sustained commands per second one connection may send (any type).
    #[arg(long, env = "RATE_PER_SEC", default_value_t = 20.0)]
    pub rate_per_sec: f64,

    /// Commands one connection may send in a burst above the sustained rate.
    #[arg(long, env = "RATE_BURST", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate_burst: u32,

    /// Open WebSocket connections this gateway accepts; beyond it, upgrades get 503.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// Open TCP connections on BIND that are not WebSockets (yet): requests being sent or
    /// answered, idle kept-alive connections. Beyond it a new connection is answered 503
    /// and closed. The gateway holds at most MAX_CONNECTIONS + this many client sockets.
    #[arg(long, env = "MAX_HTTP_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_http_connections: u32,

    /// Seconds an HTTP connection has to send a complete request head, counted from its
    /// opening and again after each answer (so it is also how long a connection may sit
    /// idle), and to send a request body; then it is closed.
    #[arg(long, env = "HTTP_HEADER_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_header_timeout_secs: u64,

    /// Rooms one connection may be joined to at once.
    #[arg(long, env = "MAX_ROOMS_PER_CONNECTION", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_rooms_per_connection: u32,

    /// Rooms whose settings (private or not, members) this gateway keeps in memory; a
    /// join, send or history of another room reads them from the store. A change through
    /// any gateway's HTTP API drops the room's entry on every gateway (announced through
    /// the queue).
    #[arg(long, env = "ROOM_CACHE_SIZE", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub room_cache_size: u32,

    /// Longest a cached room's settings are used before they are read again, in ms: how
    /// long a change may take to apply here when its announcement through the queue is
    /// missed (the broker was away), or when it was made in the store directly.
    #[arg(long, env = "ROOM_CACHE_TTL_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub room_cache_ttl_ms: u64,

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

    pub fn room_cache_ttl(&self) -> Duration {
        Duration::from_millis(self.room_cache_ttl_ms)
    }

    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_secs)
    }

    pub fn http_header_timeout(&self) -> Duration {
        Duration::from_secs(self.http_header_timeout_secs)
    }
}

/// Presence, typing and read cursors (the signal lane between gateways).
#[derive(Clone, Debug, clap::Args)]
pub struct PresenceSettings {
    /// Users per room that presence tracks, on this gateway and of each other gateway:
    /// beyond it a room's further users get no `member` events, and the `presence` reply
    /// lists the first this many (in byte order) with `"truncated":true`.
    #[arg(long, env = "PRESENCE_MAX_USERS_PER_ROOM", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub presence_max_users_per_room: u32,

    /// How often this gateway tells the others every room it has users in, in ms (the
    /// heartbeat that heals a lost signal and keeps its users online elsewhere).
    #[arg(long, env = "PRESENCE_SNAPSHOT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=300_000))]
    pub presence_snapshot_ms: u64,

    /// How long what another gateway said of a room counts without being repeated, in
    /// ms: a gateway that dies without a word has its users go offline elsewhere within
    /// this. At least twice PRESENCE_SNAPSHOT_MS.
    #[arg(long, env = "PRESENCE_TTL_MS", default_value_t = 25_000, value_parser = clap::value_parser!(u64).range(200..=3_600_000))]
    pub presence_ttl_ms: u64,

    /// Signals (presence, typing) waiting to be published, and waiting to be read from
    /// the other gateways (on RabbitMQ also the `x-max-length` of this gateway's signal
    /// queue); beyond it they are dropped, and the next snapshot heals presence.
    #[arg(long, env = "SIGNAL_BUFFER", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(16..=1_000_000))]
    pub signal_buffer: u32,

    /// How often a room's members get a `reads` frame with the read cursors that moved
    /// ("seen by"), in ms: cursors moved meanwhile are coalesced into one frame per room,
    /// so a room where many read at once costs each member at most one frame per period.
    /// A user's own other connections get their `read` frame at once, not throttled.
    #[arg(long, env = "READS_THROTTLE_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub reads_throttle_ms: u64,
}

impl PresenceSettings {
    pub fn snapshot_every(&self) -> Duration {
        Duration::from_millis(self.presence_snapshot_ms)
    }

    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.presence_ttl_ms)
    }

    pub fn reads_throttle(&self) -> Duration {
        Duration::from_millis(self.reads_throttle_ms)
    }

    fn validate(&self) -> Result<(), String> {
        if self.presence_ttl_ms < 2 * self.presence_snapshot_ms {
            return Err(format!(
                "PRESENCE_TTL_MS ({}) must be at least twice PRESENCE_SNAPSHOT_MS ({}): one lost snapshot must not take a gateway's users offline",
                self.presence_ttl_ms, self.presence_snapshot_ms
            ));
        }
        Ok(())
    }
}

/// Shortest HS256 secret accepted: a key shorter than the hash (32 bytes) is guessable.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

impl GatewayConfig {
    /// Checks what clap cannot: cross-field rules and value ranges of floats.
    pub fn validate(&self) -> Result<(), String> {
        let r = self.limits.rate_per_sec;
        if !(r.is_finite() && r > 0.0 && r <= 100_000.0) {
            return Err(format!("RATE_PER_SEC must be in (0, 100000], got {r}"));
        }
        match self.jwt_secret.as_deref() {
            Some("") => {
                return Err(
                    "JWT_SECRET is set but empty; unset it for development identities".into(),
                );
            }
            Some(s) if s.len() < MIN_JWT_SECRET_BYTES => {
                return Err(format!(
                    "JWT_SECRET is {} bytes; HS256 needs at least {MIN_JWT_SECRET_BYTES} \
                     (e.g. `openssl rand -base64 48`)",
                    s.len()
                ));
            }
            Some(_) => {}
            None if self.jwt_audience.is_some() || self.jwt_issuer.is_some() => {
                return Err("JWT_AUDIENCE and JWT_ISSUER need JWT_SECRET".into());
            }
            None => {}
        }
        crate::origin::Origins::parse(self.allowed_origins.as_deref())?;
        if self.api_token.as_deref().is_some_and(str::is_empty) {
            return Err("API_TOKEN is set but empty; unset it to refuse the HTTP API".into());
        }
        self.presence.validate()
    }

    /// The defaults, as `gateway` with no flags and no environment would run (for tests).
    pub fn defaults() -> Self {
        use clap::Parser;
        Self::parse_from(["gateway"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_ttl_must_cover_two_snapshots() {
        let mut c = GatewayConfig::defaults();
        assert!(c.validate().is_ok(), "the defaults are valid");
        c.presence.presence_snapshot_ms = 10_000;
        c.presence.presence_ttl_ms = 19_999;
        let err = c.validate().unwrap_err();
        assert!(
            err.starts_with(
                "PRESENCE_TTL_MS (19999) must be at least twice PRESENCE_SNAPSHOT_MS (10000)"
            ),
            "{err}"
        );
        c.presence.presence_ttl_ms = 20_000;
        assert!(c.validate().is_ok());
    }
}
