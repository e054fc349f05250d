//! The AWS SQS backend of the queue abstraction: a FIFO (or standard) ingest queue with a
//! dead-letter queue behind a redrive policy, and delivery back to gateways through one
//! queue per gateway instance that every worker broadcasts to (SQS has no fan-out; the
//! gateway keeps the rooms it has members in). `docs/architecture.md` has the reasons.
//!
//! Every name starts with the prefix of `QUEUE_URL=sqs://PREFIX`: `PREFIX-ingest.fifo`,
//! `PREFIX-dead.fifo` and `PREFIX--gw-<gateway>`. Region, credentials and endpoint come
//! from aws-config's standard chain (`AWS_REGION`, `AWS_ENDPOINT_URL`, profiles, roles).
//!
//! The files name the roles, as the RabbitMQ backend's do: [`connection`] builds the
//! client and bounds every call; [`topology`] names, finds or creates, measures and
//! deletes the queues; [`publish`] batches sends; [`consume`] receives and settles;
//! [`fanout`] and [`feed`] are the two ends of the delivery role; [`dead`] reads and
//! replays dead letters; [`signals`] is the gateways' signal lane. SQS-only helpers:
//! [`batch`] deletes and changes visibility ten at a time, [`sweep`] deletes the queues
//! of gateways that died, [`codec`] turns bytes into SQS bodies and back.

mod batch;
mod codec;
mod connection;
mod consume;
mod dead;
mod fanout;
mod feed;
mod publish;
mod signals;
mod sweep;
mod topology;

use super::{
    Admin, Consume, Consumer, DeadLetter, DeadLetterFilter, DeliveryBus, Publish, QueueError,
    QueueOptions, Subscription,
};
use async_trait::async_trait;
pub use connection::AwsOverrides;
pub use consume::Ticket;
use shared::ids::{GatewayId, RoomId};
use shared::message::{MessageKey, StoredMessage};
use std::sync::Arc;
use std::time::Duration;
pub use topology::REDRIVE_MARGIN;
use topology::{Names, Topology};

/// The prefix used when `QUEUE_URL=sqs://` names none.
pub const DEFAULT_PREFIX: &str = "courier";
/// Longest prefix: the longest derived name (`PREFIX--gw-<id>`) must fit SQS's 80.
pub const MAX_PREFIX_LEN: usize = 40;
const DEFAULT_VISIBILITY_SECS: u64 = 30;
const DEFAULT_GATEWAY_TTL_SECS: u64 = 120;

/// An SQS account (one region, one prefix) serving both queue roles.
pub struct SqsQueue {
    shared: Arc<Shared>,
    publisher: publish::Publisher,
    settler: Arc<consume::Settler>,
}

/// What every part of the backend reads.
struct Shared {
    sqs: aws_sdk_sqs::Client,
    settings: Settings,
    names: Names,
    topology: Topology,
    opts: QueueOptions,
    /// The gateway queues this process knows of, its own and the listed ones.
    directory: fanout::Directory,
    /// Where this gateway's feed hands the signals it reads (`signals.rs`).
    signals: signals::Inbox,
}

/// What `QUEUE_URL=sqs://PREFIX?…` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub prefix: String,
    /// FIFO ingest and dead-letter queues (per-room order by the broker), or standard
    /// ones (more throughput; the store's `seq` is the order).
    pub fifo: bool,
    /// Create missing queues at start (`?create=false` or `CREATE_QUEUES=false`: fail).
    pub create: bool,
    /// How long a received message stays invisible before SQS hands it out again, unless
    /// the holder extends it (it does, while it holds the message).
    pub visibility: Duration,
    /// A gateway queue whose heartbeat is older than this is deleted as abandoned.
    pub gateway_ttl: Duration,
    /// The URL as given, password-free, for messages.
    pub url: String,
}

impl Settings {
    /// Parses `sqs://[PREFIX][/][?prefix=P&fifo=BOOL&create=BOOL&visibility=SECS&gateway_ttl=SECS]`.
    pub fn parse(url: &str) -> Result<Self, QueueError> {
        Self::parse_creating(url, true)
    }

    /// [`Settings::parse`], with `create` as the default of `?create=` (`CREATE_QUEUES`).
    /// A `false` default shows in the URL that logs and errors name, as `create=false`.
    pub(crate) fn parse_creating(url: &str, create: bool) -> Result<Self, QueueError> {
        let url = &shown(url, create);
        let bad = |reason: String| QueueError::Unsupported {
            url: url.to_owned(),
            reason,
        };
        let rest = url
            .strip_prefix("sqs://")
            .ok_or_else(|| bad("expected sqs://[PREFIX][?options]".into()))?;
        let (path, pairs) = shared::url::split_query(rest);
        let path = path.trim_end_matches('/');
        let mut s = Self {
            prefix: if path.is_empty() {
                DEFAULT_PREFIX.to_owned()
            } else {
                path.to_owned()
            },
            fifo: true,
            create,
            visibility: Duration::from_secs(DEFAULT_VISIBILITY_SECS),
            gateway_ttl: Duration::from_secs(DEFAULT_GATEWAY_TTL_SECS),
            url: url.to_owned(),
        };
        for (key, value) in pairs {
            match key {
                "prefix" => s.prefix = value.to_owned(),
                "fifo" => s.fifo = parse_bool(key, value).map_err(bad)?,
                "create" => s.create = parse_bool(key, value).map_err(bad)?,
                "visibility" => {
                    s.visibility = parse_secs(key, value, 3, 43_200).map_err(bad)?;
                }
                "gateway_ttl" => {
                    s.gateway_ttl = parse_secs(key, value, 4, 86_400).map_err(bad)?;
                }
                other => {
                    return Err(bad(format!(
                        "unknown option {other:?}; known: prefix, fifo, create, visibility, gateway_ttl"
                    )));
                }
            }
        }
        if !is_valid_prefix(&s.prefix) {
            return Err(bad(format!(
                "the prefix {:?} must be 1 to {MAX_PREFIX_LEN} of [A-Za-z0-9_] in words joined by single hyphens",
                s.prefix
            )));
        }
        Ok(s)
    }
}

/// The URL as logs and errors show it: password hidden, and `create=false` added when
/// that is the default and the URL does not say.
fn shown(url: &str, create: bool) -> String {
    let url = shared::url::redact_url(url);
    let (_, pairs) = shared::url::split_query(&url);
    if create || pairs.iter().any(|(key, _)| *key == "create") {
        return url;
    }
    match url.split_once('?') {
        Some((_, "")) | None => format!("{}?create=false", url.trim_end_matches('?')),
        Some(_) => format!("{url}&create=false"),
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("{key} must be true or false, not {value:?}")),
    }
}

fn parse_secs(key: &str, value: &str, min: u64, max: u64) -> Result<Duration, String> {
    match value.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(format!(
            "{key} must be whole seconds from {min} to {max}, not {value:?}"
        )),
    }
}

/// Words of `[A-Za-z0-9_]` joined by single hyphens: no prefix can then produce a name
/// that starts with another prefix's gateway marker `PREFIX--gw-`.
fn is_valid_prefix(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= MAX_PREFIX_LEN
        && p.split('-')
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

impl SqsQueue {
    /// Connects to SQS with aws-config's standard chain and finds (or, when allowed,
    /// creates) the ingest and dead-letter queues. Fails with `Connect` naming the URL,
    /// the endpoint and the region when that does not work.
    pub async fn open(settings: &Settings, opts: &QueueOptions) -> Result<Self, QueueError> {
        Self::open_with(settings, opts, &AwsOverrides::default()).await
    }

    /// `open`, with endpoint, region or credentials given instead of taken from the
    /// standard chain.
    pub async fn open_with(
        settings: &Settings,
        opts: &QueueOptions,
        overrides: &AwsOverrides,
    ) -> Result<Self, QueueError> {
        let settings = settings.clone();
        let names = Names::new(&settings);
        let (sqs, whereabouts) = connection::build(overrides).await;
        let connect_error = |reason: String| QueueError::Connect {
            url: settings.url.clone(),
            reason: format!("{reason} ({whereabouts})"),
        };
        if whereabouts.region.is_none() {
            return Err(connect_error(
                "no AWS region configured: set AWS_REGION (or a profile's region)".into(),
            ));
        }
        let topology = topology::ensure_topology(&sqs, &settings, &names, opts.max_attempts)
            .await
            .map_err(connect_error)?;
        tracing::info!(
            url = %settings.url,
            ingest = %topology.ingest,
            endpoint = %whereabouts,
            "connected to SQS"
        );
        let shared = Arc::new(Shared {
            sqs,
            settings,
            names,
            topology,
            opts: opts.clone(),
            directory: fanout::Directory::default(),
            signals: signals::Inbox::default(),
        });
        let publisher = publish::Publisher::start(&shared);
        let settler = consume::Settler::start(&shared);
        tokio::spawn(sweep::run(Arc::downgrade(&shared)));
        Ok(Self {
            shared,
            publisher,
            settler,
        })
    }

    /// The namespace of every queue this instance uses.
    pub fn prefix(&self) -> &str {
        &self.shared.names.prefix
    }

    /// The parsed `QUEUE_URL`.
    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    /// URLs of this prefix's gateway queues, as SQS lists them now.
    pub async fn gateway_queues(&self) -> Result<Vec<String>, QueueError> {
        topology::list_queues(
            &self.shared.sqs,
            &self.shared.names.gateways,
            fanout::MAX_GATEWAYS,
        )
        .await
        .map_err(QueueError::from)
    }

    /// Deletes the gateway queues whose heartbeat is older than the gateway TTL now,
    /// instead of at the next periodic sweep; returns how many it deleted.
    pub async fn sweep(&self) -> Result<usize, QueueError> {
        sweep::sweep_once(&self.shared).await
    }

    /// Deletes every queue of this prefix (ingest, dead letters, every gateway queue).
    /// For tests and teardown: messages in them are lost.
    pub async fn destroy(&self) -> Result<(), QueueError> {
        topology::destroy(&self.shared.sqs, &self.shared.names, &self.shared.topology).await
    }
}

#[async_trait]
impl Publish for SqsQueue {
    async fn publish(&self, key: &MessageKey, payload: Vec<u8>) -> Result<(), QueueError> {
        self.publisher.publish(key, payload).await
    }
}

#[async_trait]
impl Consume for SqsQueue {
    async fn consumer(&self) -> Result<Box<dyn Consumer>, QueueError> {
        Ok(Box::new(consume::SqsConsumer::new(
            self.shared.clone(),
            self.settler.clone(),
        )))
    }
}

#[async_trait]
impl DeliveryBus for SqsQueue {
    async fn fan_out(&self, messages: &[Arc<StoredMessage>]) -> Result<(), QueueError> {
        fanout::fan_out(&self.shared, messages).await
    }

    async fn subscribe(&self, gateway: &GatewayId) -> Result<Subscription, QueueError> {
        feed::subscribe(self.shared.clone(), gateway).await
    }

    async fn announce(&self, room: &RoomId) -> Result<(), QueueError> {
        fanout::announce(&self.shared, room).await
    }
}

#[async_trait]
impl Admin for SqsQueue {
    async fn ping(&self) -> Result<(), QueueError> {
        topology::depth(&self.shared.sqs, &self.shared.topology.ingest, PING_TIMEOUT)
            .await
            .map(|_| ())
    }

    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        dead::list(&self.shared, max).await
    }

    async fn replay_dead_letters(&self, filter: &DeadLetterFilter) -> Result<usize, QueueError> {
        dead::replay(&self.shared, filter).await
    }

    async fn purge_dead_letters(&self) -> Result<usize, QueueError> {
        dead::purge(&self.shared).await
    }

    async fn backlog(&self) -> Result<u64, QueueError> {
        topology::depth(
            &self.shared.sqs,
            &self.shared.topology.ingest,
            connection::CALL_TIMEOUT,
        )
        .await
    }
}

/// Readiness must answer within the gateway's check timeout.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        let s = Settings::parse("sqs://").unwrap();
        assert_eq!(
            (s.prefix.as_str(), s.fifo, s.create),
            (DEFAULT_PREFIX, true, true)
        );
        let s = Settings::parse("sqs://staging/?fifo=false&create=0&visibility=10").unwrap();
        assert_eq!(s.prefix, "staging");
        assert!(!s.fifo && !s.create);
        assert_eq!(s.visibility, Duration::from_secs(10));
        let s = Settings::parse("sqs://?prefix=ct-1a2b&gateway_ttl=8").unwrap();
        assert_eq!(
            (s.prefix.as_str(), s.gateway_ttl),
            ("ct-1a2b", Duration::from_secs(8))
        );
        for bad in [
            "sqs://a--b",
            "sqs://-a",
            "sqs://a-",
            "sqs://a.b",
            "sqs://x?fifo=maybe",
            "sqs://x?visibility=1",
            "sqs://x?colour=red",
            "sqs://0123456789012345678901234567890123456789x",
        ] {
            assert!(
                matches!(Settings::parse(bad), Err(QueueError::Unsupported { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn create_queues_false_is_the_default_the_url_can_override() {
        let s = Settings::parse_creating("sqs://p", false).unwrap();
        assert_eq!((s.create, s.url.as_str()), (false, "sqs://p?create=false"));
        let s = Settings::parse_creating("sqs://p?fifo=false", false).unwrap();
        assert_eq!(
            (s.create, s.url.as_str()),
            (false, "sqs://p?fifo=false&create=false")
        );
        let s = Settings::parse_creating("sqs://p?create=true", false).unwrap();
        assert_eq!((s.create, s.url.as_str()), (true, "sqs://p?create=true"));
        let s = Settings::parse_creating("sqs://p", true).unwrap();
        assert_eq!((s.create, s.url.as_str()), (true, "sqs://p"));
    }

    #[test]
    fn names_of_a_prefix() {
        let n = Names::new(&Settings::parse("sqs://courier").unwrap());
        assert_eq!(
            (n.ingest.as_str(), n.dead.as_str()),
            ("courier-ingest.fifo", "courier-dead.fifo")
        );
        assert_eq!(
            n.gateway(&GatewayId::from_string("gw-1a2b3c4d".into())),
            "courier--gw-1a2b3c4d"
        );
        assert_eq!(
            n.gateway(&GatewayId::from_string("a.b:c".into())),
            "courier--gw-a_b_c"
        );
        let long = GatewayId::from_string("x".repeat(100));
        assert_eq!(n.gateway(&long).len(), 80);
        let n = Names::new(&Settings::parse("sqs://p?fifo=false").unwrap());
        assert_eq!((n.ingest.as_str(), n.dead.as_str()), ("p-ingest", "p-dead"));
    }
}
