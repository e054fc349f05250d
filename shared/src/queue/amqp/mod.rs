//! The RabbitMQ backend of the queue abstraction: a quorum ingest queue with TTL'd retry
//! queues and a dead-letter queue, and a topic exchange that fans processed messages out
//! to one exclusive queue per gateway. Every name starts with `{prefix}.`.
//!
//! One connection per process, supervised in [`link`]; the ingest role is in [`ingest`],
//! the delivery role in [`fanout`], the consumers both use in [`consume`].

mod consume;
mod dlq;
mod fanout;
mod ingest;
mod link;

use super::{
    Consumer, DeadLetter, DeadLetterFilter, Queue, QueueError, QueueOptions, Subscription,
};
use crate::ids::{GatewayId, RoomId};
use crate::message::StoredMessage;
use async_trait::async_trait;
use lapin::types::{AMQPValue, FieldTable};
use link::Link;
use std::sync::Arc;

/// The prefix used when `QUEUE_URL` has no `?prefix=`.
pub const DEFAULT_PREFIX: &str = "courier";

/// A RabbitMQ connection serving both queue roles.
pub struct AmqpQueue {
    link: Arc<Link>,
    opts: QueueOptions,
}

impl AmqpQueue {
    /// Connects to `url` (`amqp://user:pass@host:port/vhost?prefix=NAME`) and declares the
    /// topology. The first attempt is made here so a wrong URL fails the process at start;
    /// later losses are repaired in the background.
    pub async fn connect(url: &str, opts: &QueueOptions) -> Result<Self, QueueError> {
        let (broker_url, prefix) = split_prefix(url)?;
        let link = Link::connect(
            broker_url,
            crate::config::redact_url(url),
            Names::new(prefix),
        )
        .await?;
        Ok(Self {
            link,
            opts: opts.clone(),
        })
    }

    /// The namespace of every queue and exchange this instance uses.
    pub fn prefix(&self) -> &str {
        &self.link.names.prefix
    }

    /// Deletes every queue and exchange of this prefix that this instance knows of (ingest,
    /// dead letters, the retry queues it declared, the delivery exchange). For tests and
    /// teardown: messages in them are lost.
    pub async fn destroy(&self) -> Result<(), QueueError> {
        self.link.destroy().await
    }
}

#[async_trait]
impl Queue for AmqpQueue {
    async fn publish(&self, _room: &RoomId, payload: Vec<u8>) -> Result<(), QueueError> {
        ingest::publish(&self.link, &payload).await
    }

    async fn consumer(&self) -> Result<Box<dyn Consumer>, QueueError> {
        let consumer = ingest::AmqpConsumer::open(self.link.clone(), &self.opts).await?;
        Ok(Box::new(consumer))
    }

    async fn fan_out(&self, messages: &[Arc<StoredMessage>]) -> Result<(), QueueError> {
        fanout::fan_out(&self.link, messages).await
    }

    async fn subscribe(&self, gateway: &GatewayId) -> Result<Subscription, QueueError> {
        fanout::subscribe(self.link.clone(), gateway, self.opts.delivery_buffer).await
    }

    async fn ping(&self) -> Result<(), QueueError> {
        ingest::ingest_depth(&self.link).await.map(|_| ())
    }

    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        ingest::dead_letters(&self.link, max).await
    }

    async fn replay_dead_letters(&self, filter: &DeadLetterFilter) -> Result<usize, QueueError> {
        dlq::replay(&self.link, filter).await
    }

    async fn purge_dead_letters(&self) -> Result<usize, QueueError> {
        dlq::purge(&self.link).await
    }

    async fn backlog(&self) -> Result<Option<u64>, QueueError> {
        ingest::ingest_depth(&self.link).await.map(Some)
    }
}

/// The names of everything one prefix owns.
#[derive(Clone, Debug)]
struct Names {
    prefix: String,
    ingest: String,
    dead: String,
    delivery: String,
}

impl Names {
    fn new(prefix: String) -> Self {
        Self {
            ingest: format!("{prefix}.ingest"),
            dead: format!("{prefix}.dead"),
            delivery: format!("{prefix}.delivery"),
            prefix,
        }
    }

    fn retry(&self, delay_ms: u64) -> String {
        format!("{}.retry.{delay_ms}", self.prefix)
    }

    fn gateway(&self, gateway: &GatewayId) -> String {
        format!("{}.gw.{gateway}", self.prefix)
    }
}

/// Splits our own `prefix` query parameter off the URL; lapin gets the rest untouched.
fn split_prefix(url: &str) -> Result<(String, String), QueueError> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut prefix = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.strip_prefix("prefix=") {
            Some(p) => prefix = Some(p),
            None => kept.push(pair),
        }
    }
    let prefix = prefix.unwrap_or(DEFAULT_PREFIX);
    if !crate::ids::is_valid_name(prefix) {
        return Err(QueueError::Unsupported {
            url: crate::config::redact_url(url),
            reason: "prefix must match [A-Za-z0-9_.:-]{1,64}".into(),
        });
    }
    let broker_url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((broker_url, prefix.to_owned()))
}

/// A broker failure as the callers see it: retry later.
fn unavailable(what: &str, e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(format!("{what}: {e}"))
}

/// Reads a numeric header whatever integer type the writer chose (RabbitMQ and other
/// clients do not agree on one).
fn header_u32(headers: Option<&FieldTable>, key: &str) -> Option<u32> {
    let value = headers?.inner().get(key)?;
    let n: i64 = match value {
        AMQPValue::ShortShortInt(v) => (*v).into(),
        AMQPValue::ShortShortUInt(v) => (*v).into(),
        AMQPValue::ShortInt(v) => (*v).into(),
        AMQPValue::ShortUInt(v) => (*v).into(),
        AMQPValue::LongInt(v) => (*v).into(),
        AMQPValue::LongUInt(v) => (*v).into(),
        AMQPValue::LongLongInt(v) => *v,
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok()?,
        _ => return None,
    };
    u32::try_from(n.max(0)).ok()
}

fn header_string(headers: Option<&FieldTable>, key: &str) -> Option<String> {
    match headers?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_split_off_and_other_parameters_kept() {
        let (url, prefix) = split_prefix("amqp://u:p@h:5672/%2f?heartbeat=10&prefix=ct-1").unwrap();
        assert_eq!(url, "amqp://u:p@h:5672/%2f?heartbeat=10");
        assert_eq!(prefix, "ct-1");
        let (url, prefix) = split_prefix("amqp://h/v").unwrap();
        assert_eq!(
            (url.as_str(), prefix.as_str()),
            ("amqp://h/v", DEFAULT_PREFIX)
        );
        let err = split_prefix("amqp://u:secret@h/v?prefix=a b").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn numeric_headers_of_any_width() {
        let mut t = FieldTable::default();
        t.insert("a".into(), AMQPValue::LongLongInt(3));
        t.insert("b".into(), AMQPValue::ShortShortUInt(2));
        t.insert("c".into(), AMQPValue::LongString("7".into()));
        t.insert("d".into(), AMQPValue::LongInt(-1));
        assert_eq!(header_u32(Some(&t), "a"), Some(3));
        assert_eq!(header_u32(Some(&t), "b"), Some(2));
        assert_eq!(header_u32(Some(&t), "c"), Some(7));
        assert_eq!(header_u32(Some(&t), "d"), Some(0));
        assert_eq!(header_u32(Some(&t), "missing"), None);
        assert_eq!(header_u32(None, "a"), None);
    }
}
