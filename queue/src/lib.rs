//! The queue abstraction: an ingest work queue (gateway → workers) and a delivery fan-out
//! (workers → gateways), behind one trait per role ([`Publish`], [`Consume`],
//! [`DeliveryBus`], [`Admin`]) that every backend implements; [`Queue`] is all of them.
//!
//! The shape follows what the brokers can promise: `publish` returns only after the
//! broker confirmed; deliveries are settled explicitly (ack after the store commit,
//! retry with a delay, dead-letter after the configured attempts); fan-out is routed
//! per room so a gateway only receives rooms it has members in.
//!
//! The embedded queue (`memory`, in process, durable in SQLite or volatile) is always
//! built; RabbitMQ and SQS are the cargo features `amqp` and `sqs`. The contract every
//! backend passes is [`contract`], for other crates' tests under `test-support`.

#[cfg(feature = "amqp")]
pub mod amqp;
mod config;
mod delivery;
pub mod frames;
mod journal;
mod lanes;
pub mod memory;
mod signals;
#[cfg(feature = "sqs")]
pub mod sqs;

#[cfg(any(test, feature = "test-support"))]
pub mod contract;

pub use config::{QueueConfig, QueueSettings, QueueUrl};
pub use delivery::{Delivery, Failed, Settle, Settled, Token};
pub use frames::Frame;
pub use signals::{MemorySignals, RoomUsers, Signal, SignalKind, SignalLane};

use async_trait::async_trait;
use shared::ids::{ClientMsgId, GatewayId, RoomId, UserId};
use shared::message::{MessageKey, StoredMessage};
use shared::sync::lock;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What went wrong talking to a queue.
#[derive(Clone, Debug, thiserror::Error)]
pub enum QueueError {
    /// The broker refused, did not confirm, or is not reachable right now. Retry later.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// The process could not reach its queue at start.
    #[error("cannot connect to queue at {url}: {reason}")]
    Connect { url: String, reason: String },
    /// `QUEUE_URL` names something this build cannot use.
    #[error("unsupported QUEUE_URL {url:?}: {reason}")]
    Unsupported { url: String, reason: String },
    /// The queue was shut down.
    #[error("queue closed")]
    Closed,
}

/// Settings every backend understands.
#[derive(Clone, Debug)]
pub struct QueueOptions {
    /// Deliveries of one message before it goes to the dead-letter place.
    pub max_attempts: u32,
    /// Longest a `receive` waits for a first message before returning an empty batch.
    pub receive_wait: Duration,
    /// Bound of the in-memory queue (ready + delayed + in flight) and of its dead letters.
    pub memory_capacity: usize,
    /// Bound of each gateway's delivery channel, in messages.
    pub delivery_buffer: usize,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            receive_wait: Duration::from_secs(1),
            memory_capacity: 100_000,
            delivery_buffer: 4096,
        }
    }
}

/// Opens the queue `config` names.
pub async fn connect(config: &QueueConfig) -> Result<Arc<dyn Queue>, QueueError> {
    connect_with_signals(config).await.map(|(queue, _)| queue)
}

/// Opens the queue `config` names and the signal lane beside it (gateways): the
/// broker's own (the same connection), or an in-process one for the embedded queues.
pub async fn connect_with_signals(
    config: &QueueConfig,
) -> Result<(Arc<dyn Queue>, Arc<dyn SignalLane>), QueueError> {
    let opts = &config.options;
    let in_process = || -> Arc<dyn SignalLane> { Arc::new(MemorySignals::new()) };
    match &config.url {
        QueueUrl::Memory => Ok((
            Arc::new(memory::MemoryQueue::new(opts.clone())),
            in_process(),
        )),
        QueueUrl::Sqlite { path, sync_full } => Ok((
            Arc::new(memory::MemoryQueue::open_durable(path, *sync_full, opts.clone()).await?),
            in_process(),
        )),
        #[cfg(feature = "amqp")]
        QueueUrl::Amqp(s) => {
            let q = Arc::new(amqp::AmqpQueue::open(s, opts).await?);
            Ok((q.clone(), q))
        }
        #[cfg(feature = "sqs")]
        QueueUrl::Sqs(s) => {
            let q = Arc::new(sqs::SqsQueue::open(s, opts).await?);
            Ok((q.clone(), q))
        }
    }
}

/// Gateway side: one envelope onto the ingest queue.
#[async_trait]
pub trait Publish: Send + Sync {
    /// Puts one serialized envelope on the ingest queue; returns once the broker confirmed.
    /// `key` is the envelope's idempotency key, given so no backend parses the payload
    /// again: its room orders the message (FIFO group, routing), and the whole key
    /// deduplicates it (SQS) and names its dead letter.
    async fn publish(&self, key: &MessageKey, payload: Vec<u8>) -> Result<(), QueueError>;
}

/// Worker side: consumers of the ingest queue.
#[async_trait]
pub trait Consume: Send + Sync {
    /// Opens a consumer of the ingest queue.
    async fn consumer(&self) -> Result<Box<dyn Consumer>, QueueError>;
}

/// Workers to gateways: processed messages, routed per room.
#[async_trait]
pub trait DeliveryBus: Send + Sync {
    /// Hands processed messages to every gateway subscribed to their rooms.
    async fn fan_out(&self, messages: &[Arc<StoredMessage>]) -> Result<(), QueueError>;

    /// Opens the delivery subscription of one gateway instance.
    async fn subscribe(&self, gateway: &GatewayId) -> Result<Subscription, QueueError>;

    /// Tells the gateways that `room`'s settings changed: every subscription bound to it
    /// gets [`FeedEvent::RoomChanged`] (some backends also tell subscriptions that are
    /// not). Best effort, not durable: a gateway that misses it still picks the change up
    /// when its cached settings expire.
    async fn announce(&self, room: &RoomId) -> Result<(), QueueError>;
}

/// Probes and operators: readiness, the backlog, dead letters.
#[async_trait]
pub trait Admin: Send + Sync {
    /// Answers when the broker is reachable (readiness).
    async fn ping(&self) -> Result<(), QueueError>;

    /// Messages on the ingest queue not yet settled (the autoscaling signal).
    async fn backlog(&self) -> Result<u64, QueueError>;

    /// Up to `max` messages from the dead-letter place, oldest first, without removing them.
    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError>;

    /// Puts the matching dead letters back on the ingest queue, as fresh messages with
    /// all their attempts ahead of them; the store's idempotency makes replaying a
    /// message that was stored after all harmless. Returns how many were replayed.
    async fn replay_dead_letters(&self, filter: &DeadLetterFilter) -> Result<usize, QueueError>;

    /// Deletes every dead letter; returns how many there were.
    async fn purge_dead_letters(&self) -> Result<usize, QueueError>;
}

/// A whole backend, as [`connect`] opens it: every role. Callers keep the roles they use
/// (`let publish: Arc<dyn Publish> = queue.clone();`).
pub trait Queue: Publish + Consume + DeliveryBus + Admin + 'static {}

impl<T: Publish + Consume + DeliveryBus + Admin + 'static> Queue for T {}

/// Reads batches from the ingest queue.
#[async_trait]
pub trait Consumer: Send {
    /// Waits up to the receive wait for at least one message; returns at most `max`.
    async fn receive(&mut self, max: usize) -> Result<Vec<Delivery>, QueueError>;

    /// What is ready now, at most `max`, without waiting. A backend that cannot tell
    /// without a round trip returns nothing (SQS: its receive already batches).
    fn try_receive(&mut self, max: usize) -> Vec<Delivery>;
}

/// A gateway's delivery feed: bind rooms as members join, read what arrives.
pub struct Subscription {
    pub rooms: Box<dyn RoomBinding>,
    pub events: mpsc::Receiver<FeedEvent>,
}

/// What a delivery feed yields.
#[derive(Clone, Debug)]
pub enum FeedEvent {
    /// A processed message of a bound room, as its wire frame.
    Message(Frame),
    /// The feed was interrupted (the broker connection dropped and came back): messages
    /// may have been missed, so every member must be resynced from the store.
    Interrupted,
    /// A room's settings changed (see [`DeliveryBus::announce`]): drop what is cached of
    /// them and check the room's members again.
    RoomChanged(RoomId),
}

impl FeedEvent {
    /// The message, for tests and callers that only expect messages.
    pub fn message(self) -> Option<StoredMessage> {
        match self {
            Self::Message(f) => f.decode().ok(),
            Self::Interrupted | Self::RoomChanged(_) => None,
        }
    }
}

/// Per-room routing of one gateway's subscription.
#[async_trait]
pub trait RoomBinding: Send + Sync {
    async fn bind(&self, room: &RoomId) -> Result<(), QueueError>;
    async fn unbind(&self, room: &RoomId) -> Result<(), QueueError>;
}

/// How brokers carry an announced room change, beside the messages on the same routes:
/// `{"room_changed":"ROOM"}`, which no message (nor SQS batch of them) decodes as.
#[cfg(any(feature = "amqp", feature = "sqs"))]
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Announcement {
    pub(crate) room_changed: RoomId,
}

#[cfg(any(feature = "amqp", feature = "sqs"))]
impl Announcement {
    pub(crate) fn encode(room: &RoomId) -> Result<Vec<u8>, QueueError> {
        let a = Announcement {
            room_changed: room.clone(),
        };
        serde_json::to_vec(&a)
            .map_err(|e| QueueError::Unavailable(format!("serializing a room change: {e}")))
    }

    pub(crate) fn decode(payload: &[u8]) -> Option<RoomId> {
        serde_json::from_slice::<Announcement>(payload)
            .ok()
            .map(|a| a.room_changed)
    }
}

/// Room interest kept in the process, for backends whose feed carries every room and is
/// filtered here (in-process, SQS): binding is a set insert.
pub(crate) struct RoomSet(pub(crate) Arc<std::sync::Mutex<std::collections::HashSet<RoomId>>>);

#[async_trait]
impl RoomBinding for RoomSet {
    async fn bind(&self, room: &RoomId) -> Result<(), QueueError> {
        lock(&self.0).insert(room.clone());
        Ok(())
    }

    async fn unbind(&self, room: &RoomId) -> Result<(), QueueError> {
        lock(&self.0).remove(room);
        Ok(())
    }
}

/// A message that ended in the dead-letter place.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub payload: Vec<u8>,
    /// The idempotency key, where the backend keeps it beside the payload (RabbitMQ
    /// headers, SQS attributes, the volatile queue); `None` for the durable queue's file
    /// and for dead letters from before keys were kept: readers then use the envelope.
    pub key: Option<MessageKey>,
    pub attempts: u32,
    pub reason: String,
}

impl DeadLetter {
    /// The key kept with it, or the one of the envelope in its payload.
    pub fn key(&self) -> Option<MessageKey> {
        self.key.clone().or_else(|| envelope_key(&self.payload))
    }
}

/// Which dead letters an operation applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeadLetterFilter {
    All,
    /// Those whose envelope `id` is one of these.
    Ids(Vec<String>),
}

impl DeadLetterFilter {
    /// True when the dead letter with this key (the one kept with it; without one, its
    /// payload's envelope) is selected. A payload that is not an envelope and has no key
    /// is selected only by `All`.
    pub fn matches(&self, key: Option<&MessageKey>, payload: &[u8]) -> bool {
        match self {
            Self::All => true,
            Self::Ids(ids) => {
                let selected = |k: &MessageKey| ids.iter().any(|id| id == k.id.as_str());
                match key {
                    Some(k) => selected(k),
                    None => envelope_key(payload).as_ref().is_some_and(selected),
                }
            }
        }
    }
}

/// The key of the envelope in `payload`: the fallback for dead letters whose backend
/// kept none.
pub(crate) fn envelope_key(payload: &[u8]) -> Option<MessageKey> {
    #[derive(serde::Deserialize)]
    struct Key {
        room: RoomId,
        from: UserId,
        id: ClientMsgId,
    }
    let k: Key = serde_json::from_slice(payload).ok()?;
    Some(MessageKey {
        room: k.room,
        from: k.from,
        id: k.id,
    })
}
