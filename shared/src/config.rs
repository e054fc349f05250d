//! Queue settings shared by the gateway and the worker.

use crate::queue::{QueueOptions, QueueUrl};
use crate::url::split_query;
use std::time::Duration;

/// Where the queue is, and how it behaves.
#[derive(Clone, Debug, clap::Args)]
pub struct BackendConfig {
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

impl BackendConfig {
    pub fn queue_url(&self) -> Result<QueueUrl, crate::queue::QueueError> {
        QueueUrl::parse(&self.queue_url).map(|url| match url {
            QueueUrl::Sqs(u) if !self.create_queues => QueueUrl::Sqs(without_creation(&u)),
            other => other,
        })
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

/// `CREATE_QUEUES=false` as the SQS URL's `create=false`, unless the URL says otherwise.
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
        let config = |url: &str, create: bool| BackendConfig {
            queue_url: url.into(),
            max_attempts: 5,
            memory_queue_capacity: 1,
            delivery_buffer: 1,
            create_queues: create,
        };
        assert_eq!(
            config("sqs://p", false).queue_url().unwrap(),
            QueueUrl::Sqs("sqs://p?create=false".into())
        );
        assert_eq!(
            config("sqs://p", true).queue_url().unwrap(),
            QueueUrl::Sqs("sqs://p".into())
        );
        assert_eq!(
            config("memory", false).queue_url().unwrap(),
            QueueUrl::Memory
        );
        assert_eq!(
            config("sqlite://data/queue.db", false).queue_url().unwrap(),
            QueueUrl::Sqlite {
                path: "data/queue.db".into(),
                sync_full: false
            }
        );
        assert_eq!(
            config("sqlite:///var/lib/courier/q.db?sync=full", false)
                .queue_url()
                .unwrap(),
            QueueUrl::Sqlite {
                path: "/var/lib/courier/q.db".into(),
                sync_full: true
            }
        );
        assert!(config("sqlite://", false).queue_url().is_err());
        assert!(
            config("sqlite://q.db?sync=maybe", false)
                .queue_url()
                .is_err()
        );
    }
}
