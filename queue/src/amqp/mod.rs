//! The RabbitMQ backend of the queue abstraction: the ingest queue partitioned by room
//! into quorum queues, each consumed by one consumer at a time, with TTL'd retry queues
//! and a dead-letter queue, and a topic exchange that fans processed messages out to one
//! exclusive queue per gateway. Every name starts with `{prefix}.`.
//!
//! The files name the roles, as the SQS backend's do: [`connection`] (one connection per
//! process, supervised), [`topology`] (names, declaring, depth, deleting), [`publish`],
//! [`consume`] (ingest consumers and settlement, with [`balance`] sharing partitions
//! among them), [`fanout`] and [`feed`] (the two ends of delivery), [`dead`] (dead
//! letters), [`signals`] (the gateways' signal lane); [`subscribed`] is the channel
//! consumer both roles use.

mod balance;
mod connection;
mod consume;
mod dead;
mod fanout;
mod feed;
mod publish;
mod signals;
mod subscribed;
mod topology;

use super::{
    Admin, Consume, Consumer, DeadLetter, DeadLetterFilter, DeliveryBus, Publish, QueueError,
    QueueOptions, Subscription,
};
use async_trait::async_trait;
use connection::Link;
pub use consume::Ticket;
use lapin::types::{AMQPValue, FieldTable};
use shared::ids::{ClientMsgId, GatewayId, RoomId, UserId};
use shared::message::{MessageKey, StoredMessage};
use std::sync::Arc;
use topology::Names;

/// The prefix used when `QUEUE_URL` has no `?prefix=`.
pub const DEFAULT_PREFIX: &str = "courier";

/// Ingest partitions when `QUEUE_URL` has no `?partitions=`: room-serial processing with
/// up to this many consumer loops busy at once.
pub const DEFAULT_PARTITIONS: u16 = 8;
const MAX_PARTITIONS: u16 = 256;
/// Ingest groups per partition awaiting their confirms when `QUEUE_URL` has no
/// `?in_flight=`.
pub const DEFAULT_IN_FLIGHT: usize = 4;
const MAX_IN_FLIGHT: usize = 64;
/// How long an ingest publisher waits for company when `QUEUE_URL` has no `?linger_ms=`.
pub const DEFAULT_LINGER: std::time::Duration = std::time::Duration::from_millis(5);
const MAX_LINGER_MS: u64 = 100;

/// A RabbitMQ connection serving both queue roles.
pub struct AmqpQueue {
    link: Arc<Link>,
    opts: QueueOptions,
    publishers: publish::Publishers,
    pack: bool,
    /// The signal lane's own publishing channel (`signals.rs`).
    signals: signals::SignalPublisher,
}

impl AmqpQueue {
    /// Connects to the broker `settings` name and declares the topology. The first attempt
    /// is made here so a wrong URL fails the process at start; later losses are repaired
    /// in the background.
    pub async fn open(settings: &Settings, opts: &QueueOptions) -> Result<Self, QueueError> {
        let names = Names::new(settings.prefix.clone(), settings.partitions);
        let classic = settings.ingest == IngestKind::Classic;
        let link = Link::connect(
            settings.broker_url.clone(),
            settings.url.clone(),
            names,
            classic,
        )
        .await?;
        Ok(Self {
            publishers: publish::Publishers::new(
                link.clone(),
                settings.pack,
                (settings.in_flight, settings.linger),
            ),
            link,
            opts: opts.clone(),
            pack: settings.pack,
            signals: signals::SignalPublisher::default(),
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
impl Publish for AmqpQueue {
    async fn publish(&self, key: &MessageKey, payload: Vec<u8>) -> Result<(), QueueError> {
        self.publishers.publish(key, payload).await
    }
}

#[async_trait]
impl Consume for AmqpQueue {
    async fn consumer(&self) -> Result<Box<dyn Consumer>, QueueError> {
        let consumer = consume::AmqpConsumer::open(self.link.clone(), &self.opts).await?;
        Ok(Box::new(consumer))
    }
}

#[async_trait]
impl DeliveryBus for AmqpQueue {
    async fn fan_out(&self, messages: &[Arc<StoredMessage>]) -> Result<(), QueueError> {
        if self.pack {
            fanout::fan_out(&self.link, messages).await
        } else {
            fanout::fan_out_each(&self.link, messages).await
        }
    }

    async fn subscribe(&self, gateway: &GatewayId) -> Result<Subscription, QueueError> {
        feed::subscribe(self.link.clone(), gateway, self.opts.delivery_buffer).await
    }

    async fn announce(&self, room: &RoomId) -> Result<(), QueueError> {
        fanout::announce(&self.link, room).await
    }
}

#[async_trait]
impl Admin for AmqpQueue {
    async fn ping(&self) -> Result<(), QueueError> {
        topology::partition_depth(&self.link, 0).await.map(|_| ())
    }

    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        dead::dead_letters(&self.link, max).await
    }

    async fn replay_dead_letters(&self, filter: &DeadLetterFilter) -> Result<usize, QueueError> {
        dead::replay(&self.link, filter).await
    }

    async fn purge_dead_letters(&self) -> Result<usize, QueueError> {
        dead::purge(&self.link).await
    }

    async fn backlog(&self) -> Result<u64, QueueError> {
        topology::ingest_depth(&self.link).await
    }
}

/// What `QUEUE_URL=amqp://user:pass@host:port/vhost[?prefix=NAME&partitions=N]` says.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// The URL lapin connects to: ours without `prefix` and `partitions`, password kept.
    broker_url: String,
    /// The URL as given, password hidden, for logs and errors.
    pub url: String,
    /// The namespace of every queue and exchange.
    pub prefix: String,
    /// Ingest partitions, the same in every process.
    pub partitions: u16,
    /// Several messages per broker message, on the ingest queue and in fan-out (the
    /// default); `pack=off` sends one each, as versions before packing did and read.
    pub pack: bool,
    /// The kind of the ingest partitions (`ingest=quorum`, the default, or `classic`).
    pub ingest: IngestKind,
    /// Groups of one ingest partition a process awaits the confirms of at once
    /// (`in_flight=N`, 1 to 64). While they are out, new sends wait and pack together.
    pub in_flight: usize,
    /// While sends keep coming, how long an ingest publisher waits for more to pack with
    /// the first (`linger_ms=N`, 0 to 100): fewer, larger broker messages for at most that
    /// much latency. A send after a quiet spell goes out at once.
    pub linger: std::time::Duration,
}

/// The queue type of the ingest partitions. Both confirm a publish only once it is on
/// disk; a quorum queue also replicates it to a majority of a cluster's nodes, so it
/// survives losing a node. docs/benchmarks.md has what each costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngestKind {
    Quorum,
    Classic,
}

/// Without the password `broker_url` holds.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("partitions", &self.partitions)
            .field("pack", &self.pack)
            .field("ingest", &self.ingest)
            .field("in_flight", &self.in_flight)
            .field("linger", &self.linger)
            .finish()
    }
}

impl Settings {
    /// Takes our own `prefix`, `partitions` and `pack` query parameters off `url`; lapin
    /// gets the rest untouched.
    pub fn parse(url: &str) -> Result<Self, QueueError> {
        let (broker_url, ours) = split_options(url)?;
        Ok(Self {
            broker_url,
            url: shared::url::redact_url(url),
            prefix: ours.prefix,
            partitions: ours.partitions,
            pack: ours.pack,
            ingest: ours.ingest,
            in_flight: ours.in_flight,
            linger: ours.linger,
        })
    }
}

/// Our own query parameters.
#[derive(Debug)]
struct Ours {
    prefix: String,
    partitions: u16,
    pack: bool,
    ingest: IngestKind,
    in_flight: usize,
    linger: std::time::Duration,
}

/// Splits our own `prefix`, `partitions` and `pack` query parameters off the URL.
fn split_options(url: &str) -> Result<(String, Ours), QueueError> {
    let (base, pairs) = shared::url::split_query(url);
    let mut prefix = None;
    let mut partitions = None;
    let mut pack = None;
    let mut ingest = None;
    let mut in_flight = None;
    let mut linger = None;
    let mut kept = Vec::new();
    for (key, value) in pairs {
        match key {
            "prefix" => prefix = Some(value),
            "partitions" => partitions = Some(value),
            "pack" => pack = Some(value),
            "ingest" => ingest = Some(value),
            "in_flight" => in_flight = Some(value),
            "linger_ms" => linger = Some(value),
            // lapin reads `key` and `key=` alike (form-urlencoded pairs).
            _ => kept.push(format!("{key}={value}")),
        }
    }
    let bad = |reason: &str| QueueError::Unsupported {
        url: shared::url::redact_url(url),
        reason: reason.into(),
    };
    let prefix = prefix.unwrap_or(DEFAULT_PREFIX);
    if !shared::ids::is_valid_name(prefix) {
        return Err(bad("prefix must match [A-Za-z0-9_.:-]{1,64}"));
    }
    let partitions = match partitions {
        None => DEFAULT_PARTITIONS,
        Some(n) => n
            .parse::<u16>()
            .ok()
            .filter(|n| (1..=MAX_PARTITIONS).contains(n))
            .ok_or_else(|| {
                bad("partitions must be a number from 1 to 256, the same in every process")
            })?,
    };
    let pack = match pack {
        None | Some("on") => true,
        Some("off") => false,
        Some(_) => return Err(bad("pack must be on or off")),
    };
    let ingest = match ingest {
        None | Some("quorum") => IngestKind::Quorum,
        Some("classic") => IngestKind::Classic,
        Some(_) => {
            return Err(bad(
                "ingest must be quorum or classic, the same in every process (a partition keeps the type it was declared with)",
            ));
        }
    };
    let in_flight = match in_flight {
        None => DEFAULT_IN_FLIGHT,
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_IN_FLIGHT).contains(n))
            .ok_or_else(|| bad("in_flight must be a number from 1 to 64"))?,
    };
    let linger = match linger {
        None => DEFAULT_LINGER,
        Some(n) => n
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= MAX_LINGER_MS)
            .map(std::time::Duration::from_millis)
            .ok_or_else(|| bad("linger_ms must be a number from 0 to 100"))?,
    };
    let broker_url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let prefix = prefix.to_owned();
    let ours = Ours {
        prefix,
        partitions,
        pack,
        ingest,
        in_flight,
        linger,
    };
    Ok((broker_url, ours))
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

/// The idempotency key, set on every ingest message and carried on to its retries and
/// its dead letter, so dead letters are selected without parsing their payload.
const KEY_ROOM: &str = "x-courier-room";
const KEY_FROM: &str = "x-courier-from";
const KEY_ID: &str = "x-courier-id";

fn key_headers(headers: &mut FieldTable, key: &MessageKey) {
    let fields = [
        (KEY_ROOM, key.room.as_str()),
        (KEY_FROM, key.from.as_str()),
        (KEY_ID, key.id.as_str()),
    ];
    for (name, value) in fields {
        headers.insert(name.into(), AMQPValue::LongString(value.into()));
    }
}

/// The key a message carries; `None` for messages published before keys were sent.
fn key_of(headers: Option<&FieldTable>) -> Option<MessageKey> {
    Some(MessageKey {
        room: RoomId::parse(&header_string(headers, KEY_ROOM)?).ok()?,
        from: UserId::parse(&header_string(headers, KEY_FROM)?).ok()?,
        id: ClientMsgId::parse(&header_string(headers, KEY_ID)?).ok()?,
    })
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
    fn our_options_are_split_off_and_other_parameters_kept() {
        let (url, ours) =
            split_options("amqp://u:p@h:5672/%2f?heartbeat=10&prefix=ct-1&partitions=3&pack=off")
                .unwrap();
        assert_eq!(url, "amqp://u:p@h:5672/%2f?heartbeat=10");
        assert_eq!(
            (ours.prefix.as_str(), ours.partitions, ours.pack),
            ("ct-1", 3, false)
        );
        let (url, ours) = split_options("amqp://h/v").unwrap();
        assert_eq!(
            (
                url.as_str(),
                ours.prefix.as_str(),
                ours.partitions,
                ours.pack
            ),
            ("amqp://h/v", DEFAULT_PREFIX, DEFAULT_PARTITIONS, true)
        );
        let err = split_options("amqp://h/v?pack=yes").unwrap_err();
        assert!(err.to_string().contains("pack"), "{err}");
        let (_, ours) = split_options("amqp://h/v?ingest=classic").unwrap();
        assert_eq!(ours.ingest, IngestKind::Classic);
        assert_eq!(
            split_options("amqp://h/v").unwrap().1.ingest,
            IngestKind::Quorum
        );
        let err = split_options("amqp://h/v?ingest=lazy").unwrap_err();
        assert!(err.to_string().contains("ingest"), "{err}");
        let err = split_options("amqp://u:secret@h/v?prefix=a b").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        for bad in ["0", "257", "x", ""] {
            let err = split_options(&format!("amqp://h/v?partitions={bad}")).unwrap_err();
            assert!(err.to_string().contains("partitions"), "{err}");
        }
        let s = Settings::parse("amqp://u:pw@h/v?heartbeat=10&prefix=ct-1").unwrap();
        assert_eq!(s.url, "amqp://u:***@h/v?heartbeat=10&prefix=ct-1");
        assert_eq!(s.broker_url, "amqp://u:pw@h/v?heartbeat=10");
        assert!(!format!("{s:?}").contains("pw"), "{s:?}");
    }

    #[test]
    fn in_flight_and_linger_are_bounded_numbers() {
        assert_eq!(
            split_options("amqp://h/v").unwrap().1.in_flight,
            DEFAULT_IN_FLIGHT
        );
        let (url, ours) = split_options("amqp://h/v?in_flight=1&heartbeat=5").unwrap();
        assert_eq!(
            (url.as_str(), ours.in_flight),
            ("amqp://h/v?heartbeat=5", 1)
        );
        for bad in ["0", "65", "x", ""] {
            let err = split_options(&format!("amqp://h/v?in_flight={bad}")).unwrap_err();
            assert!(err.to_string().contains("in_flight"), "{err}");
        }
        assert_eq!(
            split_options("amqp://h/v").unwrap().1.linger,
            DEFAULT_LINGER
        );
        let (_, ours) = split_options("amqp://h/v?linger_ms=3").unwrap();
        assert_eq!(ours.linger, std::time::Duration::from_millis(3));
        for bad in ["101", "-1", "x", ""] {
            let err = split_options(&format!("amqp://h/v?linger_ms={bad}")).unwrap_err();
            assert!(err.to_string().contains("linger_ms"), "{err}");
        }
    }

    #[test]
    fn partitions_are_named_and_chosen_by_room() {
        let names = Names::new("p".into(), 4);
        assert_eq!(
            names.ingest,
            ["p.ingest.0", "p.ingest.1", "p.ingest.2", "p.ingest.3"]
        );
        assert_eq!(names.ingest_of("lobby"), names.ingest_of("lobby"));
        assert_eq!(names.retry("p.ingest.2", 500), "p.ingest.2.retry.500");
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

    #[test]
    fn keys_travel_in_headers() {
        let key = MessageKey {
            room: RoomId::parse("lobby").unwrap(),
            from: UserId::parse("ann").unwrap(),
            id: ClientMsgId::parse("m 1").unwrap(),
        };
        let mut t = FieldTable::default();
        assert_eq!(key_of(Some(&t)), None);
        key_headers(&mut t, &key);
        assert_eq!(key_of(Some(&t)), Some(key));
    }
}
