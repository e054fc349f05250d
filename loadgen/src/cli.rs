//! Command-line settings of the load generator.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Load generator for courier and its peers (W1 fixed rate, W2 closed loop, W3 idle)"
)]
pub struct Cli {
    /// Threads of the generator's runtime. Keep it below the machine's cores when the
    /// server runs on the same machine, and say so in the report.
    #[arg(long, global = true, default_value_t = 1)]
    pub threads: usize,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// W1 (`--rate`: fixed aggregate send rate) or W2 (no `--rate`: closed loop).
    Run(RunArgs),
    /// W3: open idle connections and measure the server's RSS per connection.
    Idle(IdleArgs),
    /// W4: every connection sends `typing` to its room every `--every` seconds; the
    /// server's CPU and the signal lane's traffic (courier only).
    Typing(TypingArgs),
    /// The Rust in-memory broadcast reference: our protocol's join/send/message, no
    /// queue, no store.
    ReferenceServer {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9100")]
        bind: SocketAddr,
    },
}

/// Which wire protocol the clients speak.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Protocol {
    /// courier's JSON protocol (docs/protocol.md); also the reference and Node ws servers.
    Courier,
    /// Socket.IO v5 over Engine.IO v4, WebSocket transport only (bench/peers).
    Socketio,
}

/// Where to connect and what to sample.
#[derive(Args, Clone)]
pub struct Target {
    /// WebSocket URL; repeat it to spread connections round-robin over several gateways.
    /// For Socket.IO give the `/socket.io/` path.
    #[arg(long = "url", default_value = "ws://127.0.0.1:8080/ws")]
    pub urls: Vec<String>,
    /// Wire protocol of the server.
    #[arg(long, value_enum, default_value = "courier")]
    pub protocol: Protocol,
    /// Server process to sample for CPU and RSS, as NAME=PID or PID; repeatable.
    #[arg(long = "pid")]
    pub pids: Vec<String>,
    /// Client connections.
    #[arg(long, default_value_t = 1000)]
    pub conns: usize,
    /// Rooms; connection i joins room i mod rooms.
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 100)]
    pub connect_concurrency: usize,
    /// Name of this run in the report's JSON line.
    #[arg(long, default_value = "run")]
    pub label: String,
}

#[derive(Args, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: Target,
    /// Aggregate messages per second over all connections (W1); absent: closed loop (W2).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Closed loop: messages each connection keeps in flight (sent, not yet delivered back).
    #[arg(long, default_value_t = 1)]
    pub window: usize,
    /// Seconds of measured load after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Seconds to wait after the last send for outstanding deliveries; what is still
    /// missing then is reported as undelivered.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Message bodies. The corpus is compiled into the binary: no file is read at run time.
    #[arg(long, value_enum, default_value = "corpus")]
    pub bodies: BodyMode,
    /// With `--bodies fixed`: bytes of each message body (default 64).
    #[arg(long)]
    pub body_bytes: Option<usize>,
    /// With `--bodies corpus`: seed of the draw. With the same seed, connection i sends the
    /// same bodies in the same order in every run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// What the message bodies of `loadgen run` are.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum BodyMode {
    /// A realistic mix drawn from loadgen/corpus.txt: mostly short (10-80 bytes), a tail
    /// up to 400; English, German, French, Spanish, Portuguese, Russian, Chinese,
    /// Japanese, Arabic, Hindi and more; prices, times, phone and order numbers, dates,
    /// emoji (ZWJ sequences, flags), links, @mentions, #hashtags, code in backticks.
    Corpus,
    /// The same English sentence in every message, `--body-bytes` long (the bodies of
    /// the results measured before the corpus existed).
    Fixed,
}

impl BodyMode {
    pub fn name(self) -> &'static str {
        match self {
            BodyMode::Corpus => "corpus",
            BodyMode::Fixed => "fixed",
        }
    }
}

#[derive(Args, Clone)]
pub struct TypingArgs {
    #[command(flatten)]
    pub target: Target,
    /// Seconds between one connection's `typing` signals (the gateway relays at most one
    /// per user and room every 2 s).
    #[arg(long, default_value_t = 2.0)]
    pub every: f64,
    /// Seconds measured after the warm-up.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 4.0)]
    pub warmup: f64,
    /// A gateway's `/metrics` address (`host:port`), read before and after for the signal
    /// lane's traffic; repeat it for every gateway.
    #[arg(long = "metrics")]
    pub metrics: Vec<String>,
}

#[derive(Args, Clone)]
pub struct IdleArgs {
    #[command(flatten)]
    pub target: Target,
    /// Seconds to hold the connections open before measuring.
    #[arg(long, default_value_t = 5.0)]
    pub hold: f64,
}

impl Target {
    /// The URL connection `i` uses.
    pub fn url(&self, i: usize) -> &str {
        &self.urls[i % self.urls.len()]
    }

    /// Members of the room connection `i` is in.
    pub fn members(&self, i: usize) -> u64 {
        let room = i % self.rooms;
        (self.conns / self.rooms + usize::from(room < self.conns % self.rooms)) as u64
    }
}
