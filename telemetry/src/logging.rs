//! Process-wide logging: human text or one JSON object per line, filtered by RUST_LOG.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `format` is `text` or `json`. Default filter: `info`.
pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
