//! `QUEUE_URL` and the queue's settings, flattened into each binary's settings, and the
//! URL's parsed form.

use crate::{QueueError, QueueOptions};
use shared::url::{redact_url, split_query};
use std::path::PathBuf;
use std::time::Duration;

/// Where the queue is, and how it behaves.
#[derive(Clone, Debug, clap::Args)]
pub struct QueueSettings {
    /// Queue: `sqlite://PATH[?sync=full]` (in-process and durable: every acked message is
    /// in the file until it is stored; the gateway then runs embedded workers), `memory`
    /// (in-process and volatile: lost with the process; tests and benchmarks),
    /// `amqp://user:pass@host:port/vhost[?prefix=NAME&partitions=N]` (N ingest partitions,
    /// default 8, the same in every process), or
    /// `sqs://[PREFIX][?fifo=false&create=false&visibility=SECS&gateway_ttl=SECS]` (region,
    /// credentials and endpoint from the AWS standard chain: AWS_REGION, AWS_ENDPOINT_URL…).
    #[arg(long, env = "QUEUE_URL", default_value = "sqlite://data/queue.db")]
    pub queue_url: String,

    /// Deliveries of one message before it goes to the dead-letter place.
    #[arg(long, env = "MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,

    /// Bound of the embedded queue (`sqlite://` or `memory`), in messages (ready, delayed
    /// and in flight); when it is full, `send` answers `unavailable`.
    #[arg(long, env = "MEMORY_QUEUE_CAPACITY", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub memory_queue_capacity: u64,

    /// Bound of a gateway's delivery feed from the queue, in messages.
    #[arg(long, env = "DELIVERY_BUFFER", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub delivery_buffer: u64,

    /// SQS: create the ingest and dead-letter queues at start when they are missing. With
    /// `false` a missing queue stops the process, naming it (for queues made by
    /// infra/aws/sqs.tf). Gateway delivery queues are per instance and always created.
    #[arg(long, env = "CREATE_QUEUES", default_value_t = true, action = clap::ArgAction::Set)]
    pub create_queues: bool,
}

impl QueueSettings {
    /// `QUEUE_URL`, parsed; with `CREATE_QUEUES=false`, an SQS URL without its own
    /// `create=` gets `create=false`.
    pub fn url(&self) -> Result<QueueUrl, QueueError> {
        QueueUrl::parse(&self.queue_url).map(|url| match url {
            #[cfg(feature = "sqs")]
            QueueUrl::Sqs(u) if !self.create_queues => QueueUrl::Sqs(without_creation(&u)),
            other => other,
        })
    }

    pub fn options(&self) -> QueueOptions {
        QueueOptions {
            max_attempts: self.max_attempts,
            receive_wait: Duration::from_secs(1),
            memory_capacity: self.memory_queue_capacity as usize,
            delivery_buffer: self.delivery_buffer as usize,
        }
    }
}

/// The parsed form of `QUEUE_URL`. The broker variants exist in builds with their cargo
/// feature (`amqp`, `sqs`); without it their URLs are refused when parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueUrl {
    /// In-process queue, lost with the process; only meaningful inside one gateway with
    /// embedded workers.
    Memory,
    /// In-process queue kept in a SQLite file: the embedded topology's durable default.
    Sqlite {
        path: PathBuf,
        /// `?sync=full`: fsync every commit, so a power loss loses nothing acked either.
        sync_full: bool,
    },
    #[cfg(feature = "amqp")]
    Amqp(String),
    #[cfg(feature = "sqs")]
    Sqs(String),
}

impl QueueUrl {
    pub fn parse(s: &str) -> Result<Self, QueueError> {
        if s == "memory" {
            Ok(Self::Memory)
        } else if let Some(rest) = s.strip_prefix("sqlite://") {
            Self::parse_sqlite(s, rest)
        } else if s.starts_with("amqp://") || s.starts_with("amqps://") {
            #[cfg(feature = "amqp")]
            return Ok(Self::Amqp(s.to_owned()));
            #[cfg(not(feature = "amqp"))]
            return Err(not_built(s, "RabbitMQ", "amqp"));
        } else if s.starts_with("sqs://") {
            #[cfg(feature = "sqs")]
            return Ok(Self::Sqs(s.to_owned()));
            #[cfg(not(feature = "sqs"))]
            return Err(not_built(s, "SQS", "sqs"));
        } else {
            Err(QueueError::Unsupported {
                url: redact_url(s),
                reason:
                    "expected sqlite://PATH, memory, amqp://user:pass@host:port/vhost or sqs://"
                        .into(),
            })
        }
    }

    fn parse_sqlite(url: &str, rest: &str) -> Result<Self, QueueError> {
        let bad = |reason: &str| QueueError::Unsupported {
            url: url.to_owned(),
            reason: reason.into(),
        };
        let (path, pairs) = split_query(rest);
        if path.is_empty() {
            return Err(bad("expected sqlite://PATH (a file, created if missing)"));
        }
        let mut sync_full = false;
        for pair in pairs {
            match pair {
                ("sync", "full") => sync_full = true,
                ("sync", "normal") => sync_full = false,
                _ => return Err(bad("the only option is sync=normal|full")),
            }
        }
        Ok(Self::Sqlite {
            path: path.into(),
            sync_full,
        })
    }

    /// The in-process queues: the gateway runs the workers itself.
    pub fn is_embedded(&self) -> bool {
        matches!(self, Self::Memory | Self::Sqlite { .. })
    }
}

/// A broker URL in a build without that broker's cargo feature.
#[cfg(not(all(feature = "amqp", feature = "sqs")))]
fn not_built(url: &str, broker: &str, feature: &str) -> QueueError {
    QueueError::Unsupported {
        url: redact_url(url),
        reason: format!("this build has no {broker} support (cargo feature {feature})"),
    }
}

/// `CREATE_QUEUES=false` as the SQS URL's `create=false`, unless the URL says otherwise.
#[cfg(feature = "sqs")]
fn without_creation(url: &str) -> String {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    if split_query(url).1.iter().any(|(key, _)| *key == "create") {
        url.to_owned()
    } else if query.is_empty() {
        format!("{}?create=false", url.trim_end_matches('?'))
    } else {
        format!("{url}&create=false")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str, create: bool) -> QueueSettings {
        QueueSettings {
            queue_url: url.into(),
            max_attempts: 5,
            memory_queue_capacity: 1,
            delivery_buffer: 1,
            create_queues: create,
        }
    }

    #[cfg(feature = "sqs")]
    #[test]
    fn create_queues_false_reaches_the_sqs_url() {
        assert_eq!(without_creation("sqs://p"), "sqs://p?create=false");
        assert_eq!(
            without_creation("sqs://p?fifo=false"),
            "sqs://p?fifo=false&create=false"
        );
        assert_eq!(
            without_creation("sqs://p?create=true"),
            "sqs://p?create=true"
        );
        assert_eq!(
            settings("sqs://p", false).url().unwrap(),
            QueueUrl::Sqs("sqs://p?create=false".into())
        );
        assert_eq!(
            settings("sqs://p", true).url().unwrap(),
            QueueUrl::Sqs("sqs://p".into())
        );
    }

    #[test]
    fn embedded_urls_parse() {
        assert_eq!(settings("memory", false).url().unwrap(), QueueUrl::Memory);
        assert_eq!(
            settings("sqlite://data/queue.db", false).url().unwrap(),
            QueueUrl::Sqlite {
                path: "data/queue.db".into(),
                sync_full: false
            }
        );
        assert_eq!(
            settings("sqlite:///var/lib/courier/q.db?sync=full", false)
                .url()
                .unwrap(),
            QueueUrl::Sqlite {
                path: "/var/lib/courier/q.db".into(),
                sync_full: true
            }
        );
        assert!(settings("sqlite://", false).url().is_err());
        assert!(settings("sqlite://q.db?sync=maybe", false).url().is_err());
    }

    #[cfg(not(feature = "amqp"))]
    #[test]
    fn a_broker_left_out_of_the_build_is_named() {
        let err = settings("amqp://u:secret@h/v", true).url().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported QUEUE_URL \"amqp://u:***@h/v\": this build has no RabbitMQ support (cargo feature amqp)"
        );
    }
}
