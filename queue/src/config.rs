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
    /// Everything the settings say, parsed and checked once: `QUEUE_URL` with its
    /// options (`CREATE_QUEUES` is the default of an SQS URL's `create=`), and the
    /// options every backend reads.
    pub fn parse(&self) -> Result<QueueConfig, QueueError> {
        Ok(QueueConfig {
            url: QueueUrl::parse(&self.queue_url, self.create_queues)?,
            options: QueueOptions {
                max_attempts: self.max_attempts,
                receive_wait: Duration::from_secs(1),
                memory_capacity: self.memory_queue_capacity as usize,
                delivery_buffer: self.delivery_buffer as usize,
            },
        })
    }
}

/// The queue a process opens, as [`crate::connect`] takes it.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    pub url: QueueUrl,
    pub options: QueueOptions,
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
    Amqp(crate::amqp::Settings),
    #[cfg(feature = "sqs")]
    Sqs(crate::sqs::Settings),
}

impl QueueUrl {
    /// `create` is what an SQS URL without `create=` means (`CREATE_QUEUES`); builds
    /// without SQS have no use for it.
    #[cfg_attr(not(feature = "sqs"), allow(unused_variables))]
    fn parse(s: &str, create: bool) -> Result<Self, QueueError> {
        if s == "memory" {
            Ok(Self::Memory)
        } else if let Some(rest) = s.strip_prefix("sqlite://") {
            Self::parse_sqlite(s, rest)
        } else if s.starts_with("amqp://") || s.starts_with("amqps://") {
            #[cfg(feature = "amqp")]
            return crate::amqp::Settings::parse(s).map(Self::Amqp);
            #[cfg(not(feature = "amqp"))]
            return Err(not_built(s, "RabbitMQ", "amqp"));
        } else if s.starts_with("sqs://") {
            #[cfg(feature = "sqs")]
            return crate::sqs::Settings::parse_creating(s, create).map(Self::Sqs);
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

    /// The in-process queue without a file: what it holds is lost with the process.
    pub fn is_volatile(&self) -> bool {
        matches!(self, Self::Memory)
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
    fn create_queues_false_reaches_the_sqs_settings() {
        let sqs = |url: &str, create: bool| match settings(url, create).parse().unwrap().url {
            QueueUrl::Sqs(s) => (s.create, s.url),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            sqs("sqs://p", false),
            (false, "sqs://p?create=false".into())
        );
        assert_eq!(sqs("sqs://p", true), (true, "sqs://p".into()));
        assert_eq!(
            sqs("sqs://p?create=true", false),
            (true, "sqs://p?create=true".into())
        );
    }

    #[test]
    fn embedded_urls_parse() {
        assert_eq!(
            settings("memory", false).parse().unwrap().url,
            QueueUrl::Memory
        );
        assert_eq!(
            settings("sqlite://data/queue.db", false)
                .parse()
                .unwrap()
                .url,
            QueueUrl::Sqlite {
                path: "data/queue.db".into(),
                sync_full: false
            }
        );
        assert_eq!(
            settings("sqlite:///var/lib/courier/q.db?sync=full", false)
                .parse()
                .unwrap()
                .url,
            QueueUrl::Sqlite {
                path: "/var/lib/courier/q.db".into(),
                sync_full: true
            }
        );
        assert!(settings("sqlite://", false).parse().is_err());
        assert!(settings("sqlite://q.db?sync=maybe", false).parse().is_err());
    }

    #[cfg(not(feature = "amqp"))]
    #[test]
    fn a_broker_left_out_of_the_build_is_named() {
        let err = settings("amqp://u:secret@h/v", true).parse().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported QUEUE_URL \"amqp://u:***@h/v\": this build has no RabbitMQ support (cargo feature amqp)"
        );
    }
}
