//! Settings shared by the gateway and the worker, and URL helpers for error messages.

use crate::queue::{QueueOptions, QueueUrl};
use std::time::Duration;

/// Where the queue and the store are, and how the queue behaves.
#[derive(Clone, Debug, clap::Args)]
pub struct BackendConfig {
    /// Queue: `memory` (in-process; the gateway then runs embedded workers),
    /// `amqp://user:pass@host:port/vhost`, or `sqs://`.
    #[arg(long, env = "QUEUE_URL", default_value = "memory")]
    pub queue_url: String,

    /// Store: `sqlite://PATH` (created if missing) or `postgres://...`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/chat.db")]
    pub database_url: String,

    /// Deliveries of one message before it goes to the dead-letter place.
    #[arg(long, env = "MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,

    /// Bound of the in-memory queue, in messages (ready, delayed and in flight); when it
    /// is full, `send` answers `unavailable`.
    #[arg(long, env = "MEMORY_QUEUE_CAPACITY", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub memory_queue_capacity: u64,

    /// Bound of a gateway's delivery feed from the queue, in messages.
    #[arg(long, env = "DELIVERY_BUFFER", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub delivery_buffer: u64,
}

impl BackendConfig {
    pub fn queue_url(&self) -> Result<QueueUrl, crate::queue::QueueError> {
        QueueUrl::parse(&self.queue_url)
    }

    pub fn queue_options(&self) -> QueueOptions {
        QueueOptions {
            max_attempts: self.max_attempts,
            receive_wait: Duration::from_secs(1),
            memory_capacity: self.memory_queue_capacity as usize,
            delivery_buffer: self.delivery_buffer as usize,
        }
    }
}

/// The URL with any password replaced by `***`, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("amqp://guest:secret@h:5672/v"),
            "amqp://guest:***@h:5672/v"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://data/chat.db"), "sqlite://data/chat.db");
        assert_eq!(redact_url("memory"), "memory");
    }
}
